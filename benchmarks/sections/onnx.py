"""(c) onnx: onnxruntime (CPU and CUDA providers), fp32 and INT8, against PyTorch eager: p50/p95
latency and throughput at batch 1 and 64, and the speed-up targets."""

from __future__ import annotations

import re

from benchmarks.common import spread, summarise, table, verdict
from pipeline.config import Config
from pipeline.training.distributed import pick_device
from pipeline.kinds.registry import kind_of
from pipeline.latency import LATENCY_BATCHES

# Issue 14's targets, as speed-ups of onnxruntime's median over PyTorch eager's at batch 1 and
# 64: every fp32 model >= 1.2x (none slower than PyTorch), and the INT8 LSTM models >= 2x
# (onnxruntime has no quantised GRU kernel, so an INT8 GRU keeps fp32 recurrences).
ONNX_TARGETS = {"fp32": 1.2, "int8": 2.0}


def onnx_target(variant: str, cell: str) -> float | None:
    return ONNX_TARGETS[variant] if variant == "fp32" or cell != "gru" else None


def with_targets(result: dict, target: float | None) -> dict:
    """`result` plus its target and, per timed batch, whether the median speed-up meets it."""
    met = {f"target_met_b{b}": target is None or verdict(result[f"speedup_vs_torch_b{b}"]["values"], target)["met"]
           for b in LATENCY_BATCHES}
    return {**result, "target": target, **met}


def measure(config: Config, task_name: str, model_name: str, repeats: int, timing_runs: dict[int, int]) -> dict:
    """Per provider: the fp32 model and (where export wrote it) the INT8 model beside it, each
    timed against the same PyTorch eager runs; their speed-ups and the targets."""
    from pipeline.training.checkpoints import load_trained
    from pipeline.latency import latency_report, onnx_latency
    from pipeline.layout import int8_model
    from pipeline.deploy.sessions import PROVIDERS, open_workloads

    trained = load_trained(config, task_name, model_name)
    model, kind, args, meta = trained.model, kind_of(trained.head), trained.model_args["args"], trained.meta
    int8_path = int8_model(trained.paths.onnx_model)
    result = {}
    for key, provider in PROVIDERS.items():
        # the sessions validate times: batch 1 with export.session.latency, 64 with .throughput
        sessions, reason = open_workloads(trained.paths.onnx_model, provider, config.export.session)
        if sessions is None:
            result[key] = {"status": "unavailable", "reason": reason}
            continue
        int8_sessions = open_workloads(int8_path, provider, config.export.session)[0] if int8_path.is_file() else None
        device = pick_device("auto" if key == "cuda" else "cpu")   # PyTorch on the provider's kind of device
        fp32_runs, int8_runs = [], []
        for _ in range(repeats):  # INT8 right after fp32, against the same PyTorch timings
            fp32 = latency_report(sessions, model.to(device), kind, args, meta, device, timing_runs)
            fp32_runs.append(fp32)
            if int8_sessions is not None:
                int8 = onnx_latency(int8_sessions, kind, args, meta, timing_runs)
                int8_runs.append({**int8, **{f"speedup_vs_torch_b{b}": fp32[f"torch_latency_ms_b{b}_p50"]
                                             / int8[f"latency_ms_b{b}_p50"] for b in LATENCY_BATCHES}})
        result[key] = {"status": "ok", "torch_device": device.type,
                       **with_targets(summarise(fp32_runs), onnx_target("fp32", args["cell"]))}
        if int8_runs:
            result[key]["int8"] = {"bytes": int8_path.stat().st_size,
                                   **with_targets(summarise(int8_runs), onnx_target("int8", args["cell"]))}
    return result


def onnx_row(name: str, label: str, r: dict, fp32: dict) -> str:
    """One row of table (c): `r`'s onnxruntime timings beside the PyTorch timings in `fp32`."""
    speedups = " / ".join(f"{r[f'speedup_vs_torch_b{b}']['median']:.2f}×"
                          + ("" if r[f"target_met_b{b}"] else " **missed**") for b in LATENCY_BATCHES)
    target = "no target" if r["target"] is None else f"≥ {r['target']:g}×"
    return (f"| {name} | {label} | {spread(r['latency_ms_b1_p50'], digits=2)} | "
            f"{spread(r['latency_ms_b1_p95'], digits=2)} | {spread(fp32['torch_latency_ms_b1_p50'], digits=2)} | "
            f"{spread(r['latency_ms_b64_p50'], digits=2)} | {spread(r['latency_ms_b64_p95'], digits=2)} | "
            f"{spread(fp32['torch_latency_ms_b64_p50'], digits=2)} | {spread(r['throughput_b64'], digits=0)} | "
            f"{speedups} ({target}) |")


def unavailable_row(name: str, key: str, reason: str) -> str:
    """onnxruntime's own reason, e.g. the CUDA library it could not load, without paths or pipes."""
    reason = re.sub(r"/\S+/", "", reason.split("]: ", 1)[-1]).replace("|", "/")
    return f"| {name} | {key} | unavailable: {reason} |" + " |" * 7


def render(results: dict) -> list[str]:
    # The rows are written out: an unavailable provider's row leaves its cells bare ("| |"),
    # which the committed tables show and table() would pad.
    lines = table("## (c) onnxruntime against PyTorch eager (ms; throughput in samples/s)",
                  ["model", "provider", "b1 p50", "b1 p95", "torch b1 p50", "b64 p50", "b64 p95", "torch b64 p50",
                   "b64 samples/s", "speed-up b1 / b64 (target)"], [],
                  intro="Targets: fp32 ≥ 1.2× PyTorch eager at batch 1 and 64 for every model; INT8 ≥ 2× for the "
                        "LSTM models (an INT8 GRU has no target: onnxruntime has no quantised GRU kernel). "
                        "INT8 is timed right after fp32, against the same PyTorch runs.")
    for name, providers in results["onnx"].items():
        for key, r in providers.items():
            if r["status"] != "ok":
                lines.append(unavailable_row(name, key, r["reason"]))
                continue
            lines.append(onnx_row(name, key, r, r))
            if "int8" in r:
                lines.append(onnx_row(name, f"{key} INT8 ({r['int8']['bytes'] / 1e6:.2f} MB)", r["int8"], r))
    return lines
