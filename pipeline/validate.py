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
    in the same process: batch 1 on a session with `export.session.latency`'s settings,
    batch 64 (and parity and the test metric) on one with `export.session.throughput`'s;
(d) with `export.int8`, the INT8 model beside it (model.int8.onnx): its size, latency and
    speed-ups over PyTorch eager and over the fp32 ONNX model, and its test metric, gated
    against the fp32 ONNX model's (`INT8_GATES`), not on parity with PyTorch. Its figures are
    flat `int8_*` keys of each provider's report, so MLflow gets them as metrics.

The stage fails when a required provider (`export.required_providers`) is unavailable or
a gate (parity, test metric, INT8 test metric) fails; the report is written either way.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import torch

from pipeline.checkpoints import TrainedRun, load_trained
from pipeline.config import ConfigError, load_task, stage_args
from pipeline.datasets import load_task_data
from pipeline.files import read_json, write_json_atomic
from pipeline.generation import encode, generate, session_step, session_zero_state, stream_loss
from pipeline.latency import LATENCY_BATCHES, REPEATS, latency_report, onnx_latency, synced, timings
from pipeline.layout import int8_model
from pipeline.models import STATES
from pipeline.scoring import torch_step, zero_state
from pipeline.sessions import PROVIDERS, open_workloads
from pipeline.tracking import open_tracker

log = logging.getLogger(__name__)

MAX_ABS_DIFF = {"cuda": 1e-3, "cpu": 1e-4}
METRIC_TOLERANCE = 1e-3


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


# ---- (c) latency: pipeline/latency.py -----------------------------------------------------------


# ---- a generator: the stateful graph ---------------------------------------------------------

GREEDY_CHARS = 300
PROMPT_CHARS = 256  # the prompt whose reading throughput is timed
DECODE_REPEATS = 200


def generator_parity_cases(args: dict, seed: int = 0) -> list[tuple[np.ndarray, tuple]]:
    """(ids, state): batch 1 x time 1, batch 3 x time 17 from a non-zero state, batch 64 x time 256."""
    rng = np.random.default_rng(seed)
    count = len(STATES[args["cell"]])
    cases = []
    for batch, time_steps, scale in ((1, 1, 0.0), (3, 17, 0.5), (64, 256, 0.0)):
        ids = rng.integers(0, args["vocab_size"], (batch, time_steps)).astype(np.int64)
        state = tuple((scale * rng.standard_normal((args["num_layers"], batch, args["hidden_size"])))
                      .astype(np.float32) for _ in range(count))
        cases.append((ids, state))
    return cases


def step_diff(ours, theirs, cases) -> float:
    """max |a - b| over the logits and every returned state, across the cases."""
    worst = 0.0
    for ids, state in cases:
        (logits_a, state_a), (logits_b, state_b) = ours(ids, state), theirs(ids, state)
        for a, b in zip((logits_a, *state_a), (logits_b, *state_b)):
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def decode_latency(step, zero, device: torch.device) -> dict:
    """ms per generated character (one step of batch 1 from a carried state) and the
    prompt-reading rate (characters per second, batch 1)."""
    _, state = step(np.zeros((1, 8), dtype=np.int64), zero(1))
    one = np.zeros((1, 1), dtype=np.int64)
    prompt = np.zeros((1, PROMPT_CHARS), dtype=np.int64)
    per_char = timings(synced(lambda: step(one, state), device), DECODE_REPEATS)
    reading = timings(synced(lambda: step(prompt, zero(1)), device), REPEATS[64])
    return {"ms_per_char": float(np.median(per_char)),
            "prompt_chars_per_s": PROMPT_CHARS * 1000.0 / float(np.median(reading))}


def generator_checks(sessions: dict, model, trained: TrainedRun, task, test_ids: np.ndarray,
                     device: torch.device) -> dict:
    """Parity on logits and state, the test loss, greedy generation and latency, ONNX against
    PyTorch: decoding (batch 1) on the latency session, parity and the test loss on the throughput one."""
    model.eval()
    ours, theirs, bulk = session_step(sessions["latency"]), torch_step(model, device), session_step(sessions["throughput"])
    ours_zero, theirs_zero = session_zero_state(sessions["latency"]), zero_state(model)
    prompt = encode(task.train.sample_prompt, trained.meta["vocab"])
    greedy = [generate(step, zero(1), prompt, GREEDY_CHARS, 0.0, 0)
              for step, zero in ((ours, ours_zero), (theirs, theirs_zero))]
    onnx_speed, torch_speed = decode_latency(ours, ours_zero, device), decode_latency(theirs, theirs_zero, device)
    return {"max_abs_diff": step_diff(bulk, theirs, generator_parity_cases(trained.spec["args"])),
            "onnx_metric": stream_loss(bulk, ours_zero, test_ids, task.train.eval_streams, task.train.block_size),
            "greedy_chars": GREEDY_CHARS, "greedy_identical": greedy[0] == greedy[1],
            "ms_per_char": onnx_speed["ms_per_char"], "torch_ms_per_char": torch_speed["ms_per_char"],
            "speedup_vs_torch_per_char": torch_speed["ms_per_char"] / onnx_speed["ms_per_char"],
            "prompt_chars_per_s": onnx_speed["prompt_chars_per_s"],
            "torch_prompt_chars_per_s": torch_speed["prompt_chars_per_s"],
            "speedup_vs_torch_prompt": onnx_speed["prompt_chars_per_s"] / torch_speed["prompt_chars_per_s"]}


# ---- INT8: model.int8.onnx beside the fp32 model (export.int8) --------------------------------

# INT8 is not held to parity with PyTorch (quantised weights move every output a little). Its
# gate is the test metric against the fp32 ONNX model's, per task metric: (kind, limit), the
# difference taken both ways ("within"). Accuracy: 0.3 points absolute; forecast MSE and the
# generator's test loss (nats per character): 1% relative.
INT8_GATES = {"acc": ("absolute", 0.003), "mse": ("relative", 0.01), "loss": ("relative", 0.01)}


def int8_gate(int8_metric: float, fp32_metric: float, metric: str) -> dict:
    kind, limit = INT8_GATES[metric]
    change = abs(int8_metric - fp32_metric) / (abs(fp32_metric) if kind == "relative" else 1.0)
    return {"int8_metric": int8_metric, "int8_metric_change": change, "int8_metric_change_limit": limit,
            "int8_gate": kind}


def int8_checks(sessions: dict, head: str, args: dict, meta: dict, loader, metric: str, fp32: dict) -> dict:
    """Classifier or forecaster: the INT8 model's latency (as fp32's), its speed-ups over
    PyTorch eager (timed once, for fp32) and over fp32 ONNX, and its test-metric gate."""
    ours = onnx_latency(sessions, head, args, meta)
    speedups = {}
    for b in LATENCY_BATCHES:
        ms = ours[f"latency_ms_b{b}_p50"]
        speedups.update({f"speedup_vs_torch_b{b}": fp32[f"torch_latency_ms_b{b}_p50"] / ms,
                         f"speedup_vs_fp32_b{b}": fp32[f"latency_ms_b{b}_p50"] / ms})
    return ({f"int8_{k}": v for k, v in {**ours, **speedups}.items()}
            | int8_gate(onnx_test_metric(sessions["throughput"], head, loader), fp32["onnx_metric"], metric))


def generator_int8_checks(sessions: dict, task, test_ids: np.ndarray, fp32: dict) -> dict:
    """Generator: ms per character and prompt reading, speed-ups, and the test-loss gate."""
    step, zero = session_step(sessions["latency"]), session_zero_state(sessions["latency"])
    speed = decode_latency(step, zero, torch.device("cpu"))
    loss = stream_loss(session_step(sessions["throughput"]), zero, test_ids, task.train.eval_streams,
                       task.train.block_size)
    return {"int8_ms_per_char": speed["ms_per_char"], "int8_prompt_chars_per_s": speed["prompt_chars_per_s"],
            "int8_speedup_vs_torch_per_char": fp32["torch_ms_per_char"] / speed["ms_per_char"],
            "int8_speedup_vs_fp32_per_char": fp32["ms_per_char"] / speed["ms_per_char"],
            **int8_gate(loss, fp32["onnx_metric"], task.metric)}


# ---- the stage -------------------------------------------------------------------------------


def validate_provider(key: str, trained: TrainedRun, task, loader, torch_metric: float, export) -> dict:
    """Every check of one provider: the fp32 model, then (export.int8) the INT8 model beside it."""
    provider = PROVIDERS[key]
    sessions, reason = open_workloads(trained.paths.onnx_model, provider, export.session)
    if sessions is None:
        log.warning("%s unavailable: %s", provider, reason)
        return {"status": "unavailable", "reason": reason}
    device = torch.device("cuda" if key == "cuda" and torch.cuda.is_available() else "cpu")
    model, head, args, meta = trained.model.to(device), trained.head, trained.spec["args"], trained.meta
    test_ids = loader.dataset.ids.numpy() if head == "generator" else None
    if head == "generator":
        checks = generator_checks(sessions, model, trained, task, test_ids, device)
    else:
        bulk = sessions["throughput"]
        checks = {"max_abs_diff": max_abs_diff(bulk, model, head, parity_inputs(head, args, meta), device),
                  "onnx_metric": onnx_test_metric(bulk, head, loader),
                  **latency_report(sessions, model, head, args, meta, device)}
    if export.int8:
        int8_path = int8_model(trained.paths.onnx_model)  # main checked that it exists
        int8_sessions, reason = open_workloads(int8_path, provider, export.session)
        if int8_sessions is None:
            checks["int8_status"] = f"unavailable: {reason}"
        else:
            checks["int8_bytes"] = int8_path.stat().st_size
            checks.update(generator_int8_checks(int8_sessions, task, test_ids, checks) if head == "generator" else
                          int8_checks(int8_sessions, head, args, meta, loader, task.metric, checks))
    result = {"status": "ok", "provider": provider, "torch_device": device.type,
              "max_abs_diff_limit": MAX_ABS_DIFF[key], "torch_metric": torch_metric,
              "metric_delta": abs(checks["onnx_metric"] - torch_metric), **checks}
    result["gates_passed"] = not gate_problems(provider, result)
    return result


def gate_problems(provider: str, result: dict) -> list[str]:
    problems = []
    if result["max_abs_diff"] > result["max_abs_diff_limit"]:
        problems.append(f"{provider}: max |ONNX - PyTorch| = {result['max_abs_diff']:.3g} "
                        f"> {result['max_abs_diff_limit']:g}")
    if result["metric_delta"] > METRIC_TOLERANCE:
        problems.append(f"{provider}: the test metric differs from PyTorch's by "
                        f"{result['metric_delta']:.3g} > {METRIC_TOLERANCE:g}")
    if result.get("greedy_identical") is False:
        problems.append(f"{provider}: greedy generation of {result['greedy_chars']} characters differs from PyTorch's")
    if result.get("int8_metric_change", 0.0) > result.get("int8_metric_change_limit", np.inf):
        problems.append(f"{provider} INT8: the test metric {result['int8_metric']:.6g} differs from the fp32 ONNX "
                        f"model's {result['onnx_metric']:.6g} by {result['int8_metric_change']:.3g} "
                        f"({result['int8_gate']}) > {result['int8_metric_change_limit']:g}")
    if str(result.get("int8_status", "")).startswith("unavailable"):
        problems.append(f"{provider} INT8: {result['int8_status']}")
    return problems


def failed_gates(report: dict, required: list[str]) -> list[str]:
    problems = []
    for key, provider in PROVIDERS.items():
        result = report[key]
        if result["status"] != "ok":
            if provider in required:
                problems.append(f"required provider {provider} is unavailable: {result['reason']}")
            continue
        problems += [p.replace("the test metric", report["metric"]) for p in gate_problems(provider, result)]
    return problems


# Per provider, the latency that a deployer quotes and its speed-up over PyTorch eager: batch 1
# for the classifier and forecaster, one generated character for the generator.
KEY_LATENCY = {"classifier": ("latency_ms_b1_p50", "speedup_vs_torch_b1"),
               "forecaster": ("latency_ms_b1_p50", "speedup_vs_torch_b1"),
               "generator": ("ms_per_char", "speedup_vs_torch_per_char")}
# ... and the INT8 model's speed-up over the fp32 ONNX model at that same latency (the log line).
KEY_INT8_SPEEDUP = {"classifier": "int8_speedup_vs_fp32_b1", "forecaster": "int8_speedup_vs_fp32_b1",
                    "generator": "int8_speedup_vs_fp32_per_char"}


def headline(report: dict, head: str) -> dict:
    """What DVC compares between experiments: per provider that ran, its parity, key latency
    and speed-up, under the same names for every head so that `dvc metrics show` stays a few
    columns wide. Parity is the largest difference from PyTorch as a fraction of its gate
    (<= 1 passes), readable at DVC's default precision where 1e-6 would print as 0. Whether
    the gates passed needs no column: a failed gate fails the stage. Percentiles, throughput
    and error texts stay in the full report (metrics/onnx/), and so do the INT8 figures: one
    more column took the table past 100 characters."""
    latency, speedup = KEY_LATENCY[head]
    scores: dict = {}
    for key in PROVIDERS:
        result = report[key]
        if result["status"] == "ok":
            scores.update({f"{key}_parity": float(f"{result['max_abs_diff'] / MAX_ABS_DIFF[key]:.3g}"),
                           f"{key}_ms": round(result[latency], 3), f"{key}_speedup": round(result[speedup], 2)})
    return scores


def main(argv: list[str] | None = None) -> int:
    task_name, model_name = stage_args("pipeline.validate", ["task", "model"], argv)
    name = f"{task_name}-{model_name}"
    try:
        config, task = load_task(task_name)
        trained = load_trained(config, task_name, model_name)
        metric = f"test/{task.metric}"
        data = load_task_data(task.kind, task.paths.prepared, task.train, config.seed)
        export_info = read_json(trained.paths.export_info)
        if config.export.int8 and not int8_model(trained.paths.onnx_model).is_file():
            raise FileNotFoundError(f"{int8_model(trained.paths.onnx_model)}: not found, but export.int8 is true; "
                                    f"export it with `python -m pipeline.export {task_name} {model_name}`")
    except (ConfigError, FileNotFoundError) as exc:
        print(f"validate@{name}: {exc}", file=sys.stderr)
        return 1

    report = {"metric": metric, "export/seconds": export_info["export/seconds"],
              "required_providers": list(config.export.required_providers)}
    for key in PROVIDERS:
        report[key] = validate_provider(key, trained, task, data.test, trained.metrics[metric], config.export)
    problems = failed_gates(report, report["required_providers"])
    report["passed"] = not problems
    write_json_atomic(trained.paths.onnx_metrics, report)
    write_json_atomic(trained.paths.onnx_scores, headline(report, task.head))
    log_to_training_run(config, task_name, model_name, trained, report)
    for key in PROVIDERS:
        result = report[key]
        speed = ", ".join(f"{k[len('speedup_vs_torch_'):]} {v:.2f}x torch" for k, v in result.items()
                          if k.startswith("speedup_vs_torch_"))
        int8 = (f"; INT8 {metric} {result['int8_metric']:.4g} ({result['int8_gate']} change "
                f"{result['int8_metric_change']:.2g}, limit {result['int8_metric_change_limit']:g}), "
                f"{result[KEY_INT8_SPEEDUP[task.head]]:.2f}x fp32" if "int8_metric" in result else "")
        log.info("validate@%s %s: %s", name, key, result["status"] if result["status"] != "ok" else
                 f"max|d| {result['max_abs_diff']:.2g}, {metric} delta {result['metric_delta']:.2g}, {speed}{int8}")
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
    tracker.log_onnx_model(trained.paths.onnx_model)
    if report["passed"]:  # only a model that passed every gate becomes a version of the task's model
        from pipeline import serving
        from pipeline.tracking import git_tags

        tags = {"model": model_name, "cell": config.model[model_name].cell, "run_id": handoff["run_id"],
                "git.commit": git_tags()["git.commit"]}
        with serving.staged_code() as code:
            tracker.log_served_model(serving.OnnxModel(), {serving.ONNX_ARTIFACT: str(trained.paths.onnx_model)},
                                     [code], serving.pip_requirements(), task_name, tags)
    tracker.end()


if __name__ == "__main__":
    sys.exit(main())
