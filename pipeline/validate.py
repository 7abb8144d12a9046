"""Stage `validate@<task>-<model>`: the ONNX model under onnxruntime, on CUDA and on the CPU.

    python -m pipeline.validate <task> <model>

Each execution provider is tried alone. Which one really ran is read back from
`session.get_providers()`: onnxruntime-gpu silently falls back to the CPU when the CUDA
libraries are missing, and such a run is reported as CUDA "unavailable" with the reason
onnxruntime printed, never as a CUDA result. For each provider that runs:

(a) numeric parity with PyTorch on several input shapes (batch 1, an odd batch, short and
    long sequences, rows with padding), none of them the export example;
(b) the test metric over the whole test set, against PyTorch's from training;
(c) latency p50/p95 at batch 1 and 64 and throughput, with PyTorch eager timed the same way
    in the same process.

The stage fails when a required provider (`export.required_providers`) is unavailable or
a parity gate fails; the report is written either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pipeline.checkpoints import TrainedRun, load_trained
from pipeline.config import ConfigError, load_task, stage_args
from pipeline.datasets import load_task_data
from pipeline.files import read_json, write_json_atomic
from pipeline.tracking import open_tracker

log = logging.getLogger(__name__)

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
MAX_ABS_DIFF = {"cuda": 1e-3, "cpu": 1e-4}
METRIC_TOLERANCE = 1e-3
LATENCY_BATCHES = (1, 64)
LATENCY_SEQUENCE = 256  # tokens per IMDB row when timing
REPEATS = {1: 100, 64: 20}


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (onnxruntime's logger)."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def without_machine_paths(text: str) -> str:
    """`/work/main/.venv/.../libonnxruntime_providers_cuda.so` -> `libonnxruntime_providers_cuda.so`:
    the library and the error stay, the machine's folders go (the reports are committed)."""
    return re.sub(r"(?<![\w.])/(?:[^\s/:'\"]+/)+([^\s/:'\"]+)", r"\1", text)


def explain(log_lines: list[str], provider: str) -> str:
    """The most telling line onnxruntime logged when it dropped a provider."""
    for needle in ("Failed to load library", "Failed to create", "error"):
        for line in log_lines:
            if needle in line:
                return without_machine_paths(line[line.index(needle):].replace("\x1b[m", "").strip())
    return f"{provider} is not available in this onnxruntime build"


def open_session(path: str | Path, provider: str):
    """(session, None) when `provider` really runs the model, else (None, reason)."""
    import onnxruntime as ort

    with captured_stderr() as log_lines:
        try:
            session = ort.InferenceSession(str(path), providers=[provider])
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
            session, failure = None, without_machine_paths(f"{provider} failed to start: {exc}")
    if session is None:
        return None, failure
    running = session.get_providers()
    if not running or running[0] != provider:
        return None, f"requested {provider}, but the session runs on {running}: {explain(log_lines, provider)}"
    return session, None


# ---- (a) parity -----------------------------------------------------------------------------


def parity_inputs(head: str, args: dict, meta: dict, seed: int = 0) -> list[np.ndarray]:
    """Shapes unlike the export example (2 x 16 or 2 x L): batch 1, odd batches, short and long."""
    rng = np.random.default_rng(seed)
    if head == "classifier":
        cases = []
        for batch, length in ((1, 7), (3, 61), (17, meta["max_len"])):
            ids = rng.integers(2, args["vocab_size"], (batch, length))
            for row in range(1, batch, 2):  # every other row right-padded to a random length
                ids[row, rng.integers(1, length):] = meta["pad_id"]
            cases.append(ids.astype(np.int64))
        return cases
    lookback, channels = meta["lookback"], args["n_channels"]
    unit = args["segment_len"] or 1
    short = max(unit, (lookback // 2) // unit * unit)
    return [rng.standard_normal((batch, length, channels)).astype(np.float32)
            for batch, length in ((1, lookback), (5, short), (33, lookback * 2))]


def torch_outputs(model, head: str, x: np.ndarray, device: torch.device) -> list[np.ndarray]:
    with torch.inference_mode():
        out = model(torch.from_numpy(x).to(device)).float().cpu()
    return [out.numpy(), torch.softmax(out, -1).numpy()] if head == "classifier" else [out.numpy()]


def max_abs_diff(session, model, head: str, inputs: list[np.ndarray], device: torch.device) -> float:
    name = session.get_inputs()[0].name
    worst = 0.0
    for x in inputs:
        for ours, theirs in zip(session.run(None, {name: x}), torch_outputs(model, head, x, device)):
            worst = max(worst, float(np.abs(ours - theirs).max()))
    return worst


# ---- (b) the test metric ------------------------------------------------------------------


def onnx_test_metric(session, head: str, loader) -> float:
    """Accuracy (classifier) or MSE (forecaster) of the ONNX model over the whole test set."""
    name = session.get_inputs()[0].name
    hits = squared = count = 0.0
    for inputs, target in loader:
        out = session.run(None, {name: inputs.numpy()})[0]
        if head == "classifier":
            hits += float((out.argmax(1) == target.numpy()).sum())
            count += len(target)
        else:
            squared += float(((out - target.numpy()) ** 2).sum())
            count += target.numel()
    return (hits if head == "classifier" else squared) / count


# ---- (c) latency ----------------------------------------------------------------------------


def timings(run: Callable[[], object], repeats: int, warmup: int = 3) -> np.ndarray:
    for _ in range(warmup):
        run()
    seconds = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        run()
        seconds[i] = time.perf_counter() - start
    return seconds * 1000.0


def latency_input(head: str, args: dict, meta: dict, batch: int) -> np.ndarray:
    rng = np.random.default_rng(batch)
    if head == "classifier":
        return rng.integers(2, args["vocab_size"], (batch, LATENCY_SEQUENCE)).astype(np.int64)
    return rng.standard_normal((batch, meta["lookback"], args["n_channels"])).astype(np.float32)


def latency_report(session, model, head: str, args: dict, meta: dict, device: torch.device) -> dict:
    name = session.get_inputs()[0].name
    report = {}
    for batch in LATENCY_BATCHES:
        x = latency_input(head, args, meta, batch)
        x_torch = torch.from_numpy(x).to(device)

        def eager():
            with torch.inference_mode():
                model(x_torch)
            if device.type == "cuda":
                torch.cuda.synchronize()

        ort_ms = timings(lambda: session.run(None, {name: x}), REPEATS[batch])
        torch_ms = timings(eager, REPEATS[batch])
        report.update({
            f"latency_ms_b{batch}_p50": float(np.median(ort_ms)),
            f"latency_ms_b{batch}_p95": float(np.percentile(ort_ms, 95)),
            f"throughput_b{batch}": batch * 1000.0 / float(np.median(ort_ms)),
            f"torch_latency_ms_b{batch}_p50": float(np.median(torch_ms)),
            f"torch_latency_ms_b{batch}_p95": float(np.percentile(torch_ms, 95)),
            f"speedup_vs_torch_b{batch}": float(np.median(torch_ms) / np.median(ort_ms)),
        })
    return report


# ---- the stage -------------------------------------------------------------------------------


def validate_provider(key: str, onnx_path: Path, model, head: str, args: dict, meta: dict, loader,
                      torch_metric: float) -> dict:
    provider = PROVIDERS[key]
    session, reason = open_session(onnx_path, provider)
    if session is None:
        log.warning("%s unavailable: %s", provider, reason)
        return {"status": "unavailable", "reason": reason}
    device = torch.device("cuda" if key == "cuda" and torch.cuda.is_available() else "cpu")
    model = model.to(device)
    diff = max_abs_diff(session, model, head, parity_inputs(head, args, meta), device)
    onnx_metric = onnx_test_metric(session, head, loader)
    delta = abs(onnx_metric - torch_metric)
    result = {"status": "ok", "provider": provider, "torch_device": device.type, "max_abs_diff": diff,
              "max_abs_diff_limit": MAX_ABS_DIFF[key], "onnx_metric": onnx_metric, "torch_metric": torch_metric,
              "metric_delta": delta, **latency_report(session, model, head, args, meta, device)}
    result["gates_passed"] = bool(diff <= MAX_ABS_DIFF[key] and delta <= METRIC_TOLERANCE)
    return result


def failed_gates(report: dict, required: list[str]) -> list[str]:
    problems = []
    for key, provider in PROVIDERS.items():
        result = report[key]
        if result["status"] != "ok":
            if provider in required:
                problems.append(f"required provider {provider} is unavailable: {result['reason']}")
            continue
        if result["max_abs_diff"] > result["max_abs_diff_limit"]:
            problems.append(f"{provider}: max |ONNX - PyTorch| = {result['max_abs_diff']:.3g} "
                            f"> {result['max_abs_diff_limit']:g}")
        if result["metric_delta"] > METRIC_TOLERANCE:
            problems.append(f"{provider}: {report['metric']} differs from PyTorch's by "
                            f"{result['metric_delta']:.3g} > {METRIC_TOLERANCE:g}")
    return problems


def headline(report: dict) -> dict:
    """What DVC compares between experiments: the gates, parity and the speed-ups per provider
    (percentiles, throughput and error texts stay in the full report)."""
    scores: dict = {"passed": report["passed"]}
    for key in PROVIDERS:
        result = report[key]
        if result["status"] == "ok":
            scores[key] = {"max_abs_diff": result["max_abs_diff"],
                           "speedup_b1": result["speedup_vs_torch_b1"], "speedup_b64": result["speedup_vs_torch_b64"]}
    return scores


def main(argv: list[str] | None = None) -> int:
    task_name, model_name = stage_args("pipeline.validate", ["task", "model"], argv)
    name = f"{task_name}-{model_name}"
    try:
        config, task = load_task(task_name)
        trained = load_trained(config, task_name, model_name)
        metric = f"test/{task.metric}"
        data = load_task_data(task.kind, task.paths.prepared, task.train.batch_size,
                              task.train.eval_batch_size, config.seed)
        export_info = read_json(trained.paths.export_info)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"validate@{name}: {exc}", file=sys.stderr)
        return 1

    report = {"metric": metric, "export/seconds": export_info["export/seconds"],
              "required_providers": list(config.export.required_providers)}
    for key in PROVIDERS:
        report[key] = validate_provider(key, trained.paths.onnx_model, trained.model, trained.head,
                                        trained.spec["args"], trained.meta, data.test, trained.metrics[metric])
    problems = failed_gates(report, report["required_providers"])
    report["passed"] = not problems
    write_json_atomic(trained.paths.onnx_metrics, report)
    write_json_atomic(trained.paths.onnx_scores, headline(report))
    log_to_training_run(config, task_name, model_name, trained, report)
    for key in PROVIDERS:
        result = report[key]
        log.info("validate@%s %s: %s", name, key, result["status"] if result["status"] != "ok" else
                 f"max|d| {result['max_abs_diff']:.2g}, {metric} delta {result['metric_delta']:.2g}, "
                 f"b1 {result['latency_ms_b1_p50']:.2f} ms ({result['speedup_vs_torch_b1']:.2f}x torch), "
                 f"b64 {result['latency_ms_b64_p50']:.2f} ms ({result['speedup_vs_torch_b64']:.2f}x torch)")
    if problems:
        print(f"validate@{name}: gates failed:\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 1
    return 0


def log_to_training_run(config, task_name: str, model_name: str, trained: TrainedRun, report: dict) -> None:
    """Add the validation and the ONNX model to the training run (its id is in models/<run>/mlflow.json)."""
    handoff = read_json(trained.paths.handoff)
    if not handoff.get("run_id") or not config.tracking.enabled:
        return
    tracker = open_tracker(config.tracking, task_name, model_name, run_id=handoff["run_id"])
    numbers = {f"onnx/{key}/{k}": v for key in PROVIDERS for k, v in report[key].items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tracker.log_metrics({**numbers, "onnx/export_seconds": report["export/seconds"]})
    tracker.set_tags({f"onnx.{key}.status": report[key]["status"] for key in PROVIDERS})
    tracker.log_artifact(trained.paths.onnx_metrics, "onnx")
    # Only a model that passed every gate becomes a registered version.
    tracker.log_onnx_model(trained.paths.onnx_model, trained.paths.name if report["passed"] else None)
    tracker.end()


if __name__ == "__main__":
    sys.exit(main())
