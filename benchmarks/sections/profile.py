"""(c2) profile: the op types that take the time, on the CPU at the two timed batches, from
onnxruntime's profiler (fp32 and INT8 models) and torch.profiler (PyTorch eager)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import table
from pipeline.config import Config
from pipeline.kinds.registry import kind_of

PROFILE_TOP = 3  # op types per row


def onnx_profile(path: Path, settings: dict, x: np.ndarray, runs: int, warmup: int = 3) -> dict[str, float]:
    """ms per run spent in each op type, from onnxruntime's own profiler (SessionOptions.
    enable_profiling): the kernel time of every node, over `runs` runs after `warmup`."""
    import onnxruntime as ort

    from pipeline.deploy.sessions import session_options

    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(settings)
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    timed_from = run_starts[warmup]
    per_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= timed_from:
            op = event["args"]["op_name"]
            per_op[op] = per_op.get(op, 0.0) + event["dur"] / 1000.0 / runs
    return per_op


def torch_profile(model: nn.Module, x: torch.Tensor, runs: int, warmup: int = 3) -> dict[str, float]:
    """ms per run of self CPU time per aten op, from torch.profiler, in eager inference."""
    from torch.profiler import ProfilerActivity, profile

    model.eval()
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    return {event.key: event.self_cpu_time_total / 1000.0 / runs for event in prof.key_averages()
            if event.self_cpu_time_total > 0}


def top_ops(per_op: dict[str, float]) -> list[dict]:
    total = sum(per_op.values())
    ranked = sorted(per_op.items(), key=lambda item: -item[1])[:PROFILE_TOP]
    return [{"op": op, "ms": ms, "share": ms / total} for op, ms in ranked]


def measure(config: Config, task_name: str, model_name: str, timing_runs: dict[int, int]) -> dict:
    """On the CPU, at the two timed batches: the op types that take the time in the fp32 and
    INT8 onnxruntime models and in PyTorch eager (the evidence behind a missed target)."""
    from pipeline.training.checkpoints import load_trained
    from pipeline.latency import LATENCY_BATCHES, WORKLOAD_OF_BATCH
    from pipeline.layout import int8_model

    trained = load_trained(config, task_name, model_name)
    model, kind, args, meta = trained.model.cpu(), kind_of(trained.head), trained.model_args["args"], trained.meta
    variants = {"fp32": trained.paths.onnx_model, "int8": int8_model(trained.paths.onnx_model)}
    result = {}
    for batch in LATENCY_BATCHES:
        x = kind.latency_input(args, meta, batch)
        settings = getattr(config.export.session, WORKLOAD_OF_BATCH[batch]).model_dump()
        row = {"torch": torch_profile(model, torch.from_numpy(x), timing_runs[batch])}
        for variant, path in variants.items():
            if path.is_file():
                row[variant] = onnx_profile(path, settings, x, timing_runs[batch])
        result[f"b{batch}"] = {name: {"ms_total": sum(per_op.values()), "top": top_ops(per_op), "ops": per_op}
                               for name, per_op in row.items()}
    return result


def profiled_runs(results: dict) -> str:
    from pipeline.latency import REPEATS

    # Results from before --timing-runs carry no count: they were taken with validate's.
    timing_runs = {int(b): n for b, n in (results.get("timing_runs") or REPEATS).items()}
    counts = ", ".join(f"{runs} at batch {batch}" for batch, runs in timing_runs.items())
    return counts + (" (validate's)" if timing_runs == REPEATS else " (--timing-runs)")


def profile_cell(profile: dict) -> str:
    top = ", ".join(f"{t['op']} {t['ms']:.2f} ({t['share']:.0%})" for t in profile["top"])
    return f"{profile['ms_total']:.2f} ms: {top}"


def render(results: dict) -> list[str]:
    return table("## (c2) Where the time goes (CPU; ms per run by op type, share of the op total)",
                 ["model", "batch", "PyTorch eager", "onnxruntime fp32", "onnxruntime INT8"],
                 [[name, batch, *(profile_cell(row[k]) if k in row else "" for k in ("torch", "fp32", "int8"))]
                  for name, batches in results["profile"].items() for batch, row in batches.items()],
                 intro="onnxruntime's profiler (`SessionOptions.enable_profiling`: the kernel time of each node, "
                       "summed by op type) and torch.profiler (self CPU time per aten op), over the timed "
                       f"runs: {profiled_runs(results)}. The evidence behind each missed target above.")
