"""Which onnxruntime SessionOptions suit which workload: a grid over the settings that
`export.session` exposes, on the exported models, at batch 1, 8 and 64.

    python -m benchmarks.session_settings [onnx/<run>/model.onnx ...] [--out FILE.json]

Every setting opens its own session; the timings are interleaved (round after round over
all settings) so that load from other processes spreads over the settings instead of
landing on one. The median of all runs is reported, with its ratio to onnxruntime's
defaults (< 1 = faster). With no model given, every onnx/*/model.onnx and
onnx/*/model.int8.onnx is measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import numpy as np

from pipeline.latency import LATENCY_SEQUENCE
from pipeline.layout import METADATA_PREFIX
from pipeline.deploy.sessions import PROVIDERS, open_session

GRID = {"intra_op_num_threads": (0, 1, 2), "execution_mode": ("sequential", "parallel"),
        "graph_optimization_level": ("all", "extended", "basic")}  # first: the defaults
BATCHES = {1: (10, 10), 8: (5, 6), 64: (5, 4)}  # batch: (rounds, runs per setting per round)
SEQUENCE = LATENCY_SEQUENCE  # tokens per row for a token-id input, as validate times it


def settings_grid() -> list[dict]:
    return [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]


def model_input(session, batch: int) -> dict[str, np.ndarray]:
    first = session.get_inputs()[0]
    rng = np.random.default_rng(batch)
    if first.type == "tensor(int64)":
        return {first.name: rng.integers(2, 100, (batch, SEQUENCE)).astype(np.int64)}
    meta = session.get_modelmeta().custom_metadata_map
    lookback, channels = int(meta[METADATA_PREFIX + "lookback"]), first.shape[-1]
    return {first.name: rng.standard_normal((batch, lookback, channels)).astype(np.float32)}


def measure(path: Path) -> list[dict]:
    grid = settings_grid()
    sessions = [open_session(path, PROVIDERS["cpu"], settings)[0] for settings in grid]
    rows = []
    for batch, (rounds, runs) in BATCHES.items():
        feed = model_input(sessions[0], batch)
        for session in sessions:  # warm-up
            session.run(None, feed)
        times: list[list[float]] = [[] for _ in grid]
        for _ in range(rounds):
            for i, session in enumerate(sessions):
                for _ in range(runs):
                    start = time.perf_counter()
                    session.run(None, feed)
                    times[i].append((time.perf_counter() - start) * 1000.0)
        default = float(np.median(times[0]))  # grid[0] = onnxruntime's defaults
        rows += [{"model": str(path), "batch": batch, **settings, "ms_p50": float(np.median(t)),
                  "ratio_to_default": float(np.median(t)) / default, "n": len(t)}
                 for settings, t in zip(grid, times)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    models = args.models or sorted(Path("onnx").glob("*/model*.onnx"))
    rows = []
    for path in models:
        rows += measure(path)
        for row in rows[-len(settings_grid()) * len(BATCHES):]:
            print(f"{row['model']:34} b{row['batch']:<3} intra={row['intra_op_num_threads']} "
                  f"{row['execution_mode']:10} {row['graph_optimization_level']:8} "
                  f"{row['ms_p50']:9.3f} ms  x{row['ratio_to_default']:.2f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                        "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
