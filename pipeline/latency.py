"""The latency harness: how a model is timed, written once for the validate stage and the benchmarks.

Two timed batches: 1 row on a session with `export.session.latency`'s settings and 64 rows on
one with `export.session.throughput`'s; each kind makes its own rows (`kind.latency_input`: a
classifier's are `LATENCY_SEQUENCE` tokens, a forecaster's its lookback window). Each figure is taken over `REPEATS[batch]` calls after a
warm-up; PyTorch eager is timed the same way, in the same process, for the speed-ups.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np
import torch

LATENCY_BATCHES = (1, 64)
# Which `export.session` settings time each batch. Parity and the test metric run on the
# throughput session (bulk work; onnxruntime's results do not depend on the thread count).
WORKLOAD_OF_BATCH = {1: "latency", 64: "throughput"}
LATENCY_SEQUENCE = 256  # tokens per IMDB row when timing
REPEATS = {1: 100, 64: 20}  # timed calls per batch (the validate stage's; the benchmarks can ask for fewer)
WARMUP = 3


def timings(run: Callable[[], object], repeats: int, warmup: int = WARMUP) -> np.ndarray:
    """Milliseconds of each of `repeats` calls of `run`, after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    seconds = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        run()
        seconds[i] = time.perf_counter() - start
    return seconds * 1000.0


def synced(run: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """`run`, then a wait for the GPU's queued work, so that a timing covers the work itself."""
    def timed():
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return timed


def onnx_latency(sessions: dict, kind, args: dict, meta: dict,
                 repeats: Mapping[int, int] = REPEATS) -> dict:
    """p50/p95 latency and throughput per timed batch, each on its workload's session."""
    report = {}
    for batch in LATENCY_BATCHES:
        session = sessions[WORKLOAD_OF_BATCH[batch]]
        feed = {session.get_inputs()[0].name: kind.latency_input(args, meta, batch)}
        ms = timings(lambda: session.run(None, feed), repeats[batch])
        report.update({f"latency_ms_b{batch}_p50": float(np.median(ms)),
                       f"latency_ms_b{batch}_p95": float(np.percentile(ms, 95)),
                       f"throughput_b{batch}": batch * 1000.0 / float(np.median(ms))})
    return report


def torch_latency(model, kind, args: dict, meta: dict, device: torch.device,
                  repeats: Mapping[int, int] = REPEATS) -> dict:
    report = {}
    for batch in LATENCY_BATCHES:
        x = torch.from_numpy(kind.latency_input(args, meta, batch)).to(device)

        def eager():
            with torch.inference_mode():
                model(x)

        ms = timings(synced(eager, device), repeats[batch])
        report.update({f"torch_latency_ms_b{batch}_p50": float(np.median(ms)),
                       f"torch_latency_ms_b{batch}_p95": float(np.percentile(ms, 95))})
    return report


def latency_report(sessions: dict, model, kind, args: dict, meta: dict, device: torch.device,
                   repeats: Mapping[int, int] = REPEATS) -> dict:
    """ONNX (`sessions`: workload -> session) and PyTorch eager timed the same way, and the speed-ups."""
    ours = onnx_latency(sessions, kind, args, meta, repeats)
    theirs = torch_latency(model, kind, args, meta, device, repeats)
    return {**ours, **theirs, **{f"speedup_vs_torch_b{b}": theirs[f"torch_latency_ms_b{b}_p50"]
                                 / ours[f"latency_ms_b{b}_p50"] for b in LATENCY_BATCHES}}
