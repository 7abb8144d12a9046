"""What several benchmark sections share: the figures' statistics (median, min, max of the
runs) and targets, the host a run measured, and the markdown that shows them."""

from __future__ import annotations

import os
import platform

import numpy as np
import torch

from pipeline import markdown
from pipeline.hosts import cpu_field


def stats(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
            "n": len(values), "values": [float(v) for v in values]}


def summarise(runs: list[dict]) -> dict:
    """The stats of each metric over runs that each report every metric once."""
    return {metric: stats([run[metric] for run in runs]) for metric in runs[0]}


def verdict(values: list[float], target: float, higher_is_better: bool = True) -> dict:
    """The figures' stats, the target, and whether their median meets it."""
    median = float(np.median(values))
    return {"stats": stats(values), "target": target,
            "met": bool(median >= target if higher_is_better else median <= target)}


def ratio_fields(name: str, ratios: list[float], target: float) -> dict:
    """A ratio's figures as a section records them: `ratio_<name>` (its stats), the target, and
    whether the median met it."""
    found = verdict(ratios, target)
    return {f"ratio_{name}": found["stats"], "ratio_target": found["target"], "ratio_met": found["met"]}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer stops after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_info(device: torch.device) -> dict:
    import onnxruntime

    info = {"cpu": cpu_field("model name", platform.processor()), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


# ---- markdown ------------------------------------------------------------------------------------


def spread(stat: dict, scale: float = 1.0, digits: int = 1) -> str:
    """A stats figure as median (min–max), each times `scale`."""
    median, low, high = (markdown.number(stat[key] * scale, digits) for key in ("median", "min", "max"))
    return f"{median} ({low}–{high})"


def ratio(result: dict, key: str) -> str:
    """A ratio against its target, marked where the target is missed."""
    return spread(result[key], digits=3) + ("" if result["ratio_met"] else " **missed**")


def table(title: str, header: list[str], rows: list[list[str]], intro: str | None = None) -> list[str]:
    """A section's lines: a blank line, its title, the `intro` paragraph if any, and its table."""
    return ["", title, "", *([intro, ""] if intro else []), *markdown.table(header, rows).split("\n")]
