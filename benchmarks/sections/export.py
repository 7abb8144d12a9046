"""(d) export: seconds of torch.onnx.export per model, the check and save included, as the
export stage runs it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import spread, stats, table
from pipeline.config import Config
from pipeline.kinds.registry import kind_of


def measure(config: Config, task_name: str, model_name: str, repeats: int) -> dict:
    from pipeline.training.checkpoints import load_trained
    from pipeline.onnx_files import export_onnx

    trained = load_trained(config, task_name, model_name)
    kind = kind_of(trained.head)
    interface = kind.graph_interface(trained.model_args["args"], trained.meta)
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            start = time.perf_counter()
            export_onnx(kind.export_module(trained.model), interface, Path(tmp) / "model.onnx", config.export.opset,
                        config.export.dynamo, {})
            seconds.append(time.perf_counter() - start)  # export plus check and save, as the stage does
    return {"seconds": stats(seconds)}


def render(results: dict) -> list[str]:
    return table("## (d) ONNX export (s)", ["model", "seconds"],
                 [[name, spread(r["seconds"], digits=3)] for name, r in results["export"].items()])
