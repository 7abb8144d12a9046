"""Stage `validate@<task>-<model>`: the ONNX model under onnxruntime, on CUDA and on the CPU.

    python -m pipeline.stages.validate <task> <model>

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
    against the fp32 ONNX model's (`export.gates.int8.<head>`), not on parity with PyTorch. Its figures are
    flat `int8_*` keys of each provider's report, so MLflow gets them as metrics.

The stage fails when a required provider (`export.required_providers`) is unavailable or
a gate (parity, test metric, INT8 test metric; their settings are `export.gates`, and the
record carries each beside its figure) fails; the report is written either way.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from pipeline.training.checkpoints import TrainedRun, load_trained
from pipeline.config import ConfigError, load_task, stage_args
from pipeline.training.datasets import load_task_data
from pipeline.training.distributed import pick_device
from pipeline.files import read_json, write_json_atomic
from pipeline.kinds.base import Kind
from pipeline.kinds.registry import kind_of
from pipeline.layout import int8_model, run_name
from pipeline.deploy.sessions import PROVIDERS, open_workloads
from pipeline.tracking import open_tracker, served_model_tags

log = logging.getLogger(__name__)


# ---- the stage -------------------------------------------------------------------------------


def validate_provider(key: str, trained: TrainedRun, task, loader, torch_metric: float, export) -> dict:
    """Every check of one provider: the fp32 model, then (export.int8) the INT8 model beside it;
    what is checked is the kind's (`onnx_checks`, `int8_checks`, pipeline/kinds/), against the
    gates of export.gates, which the record carries beside each figure."""
    provider = PROVIDERS[key]
    sessions, reason = open_workloads(trained.paths.onnx_model, provider, export.session)
    if sessions is None:
        log.warning("%s unavailable: %s", provider, reason)
        return {"status": "unavailable", "reason": reason}
    device = pick_device("auto" if key == "cuda" else "cpu")   # PyTorch beside it, on the same kind of device
    kind, gates = kind_of(trained.head), export.gates
    checks = kind.onnx_checks(sessions, trained.model.to(device), trained, task, loader, device, getattr(gates, key))
    if export.int8:
        int8_path = int8_model(trained.paths.onnx_model)  # main checked that it exists
        int8_sessions, reason = open_workloads(int8_path, provider, export.session)
        if int8_sessions is None:
            checks["int8_status"] = f"unavailable: {reason}"
        else:
            checks["int8_bytes"] = int8_path.stat().st_size
            checks.update(kind.int8_checks(int8_sessions, trained, task, loader, checks, gates.int8[trained.head]))
    checks = {k: v for k, v in checks.items() if not k.startswith("_")}   # working values, not figures
    result = {"status": "ok", "provider": provider, "gates": f"export.gates.{key}", "torch_device": device.type,
              "torch_metric": torch_metric, "metric_delta": abs(checks["onnx_metric"] - torch_metric),
              "metric_rtol": gates.metric_rtol, "metric_limit": gates.metric_rtol * abs(torch_metric), **checks}
    result["gates_passed"] = not gate_problems(provider, result)
    return result


DECISION = ("raising a tolerance accepts an export that differs more from the model trained: a decision "
            "about the model, not a fix (docs/validation.md)")


def gate_problems(provider: str, result: dict) -> list[str]:
    """Every failed gate of one provider's record, each naming the setting that sets it."""
    problems, setting = [], result.get("gates", "export.gates")
    for prefix, group in (("parity", "outputs"), ("state_parity", "states")):
        if result.get(prefix, 0.0) > 1:
            problems.append(f"{provider}: |ONNX - PyTorch| on {result[prefix + '_at']} is {result[prefix]:.3g} times "
                            f"its tolerance (rtol {result[prefix + '_rtol']:g}, atol {result[prefix + '_atol']:g} of "
                            f"the output's rms; {setting}.{group}); {DECISION}")
    if result["metric_delta"] > result["metric_limit"]:
        problems.append(f"{provider}: the test metric differs from PyTorch's by {result['metric_delta']:.3g} > "
                        f"{result['metric_limit']:.3g} ({result['metric_rtol']:g} of PyTorch's; "
                        f"export.gates.metric_rtol); {DECISION}")
    if result.get("greedy_identical") is False:
        problems.append(f"{provider}: greedy generation of {result['greedy_chars']} characters differs from PyTorch's")
    if result.get("int8_metric_change", 0.0) > result.get("int8_metric_change_limit", np.inf):
        problems.append(f"{provider} INT8: the test metric {result['int8_metric']:.6g} differs from the fp32 ONNX "
                        f"model's {result['onnx_metric']:.6g} by {result['int8_metric_change']:.3g} "
                        f"({result['int8_gate']}) > {result['int8_metric_change_limit']:g} "
                        f"(export.gates.int8.<head>); loosening it is a decision about the model, not a fix")
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


def headline(report: dict, kind: Kind) -> dict:
    """What DVC compares between experiments: per provider that ran, its parity, key latency
    and speed-up, under the same names for every head so that `dvc metrics show` stays a few
    columns wide. Parity is the largest difference from PyTorch as a fraction of its gate
    (<= 1 passes), readable at DVC's default precision where 1e-6 would print as 0. Whether
    the gates passed needs no column: a failed gate fails the stage. Percentiles, throughput
    and error texts stay in the full report (metrics/onnx/), and so do the INT8 figures: one
    more column took the table past 100 characters."""
    latency, speedup = kind.key_latency
    scores: dict = {}
    for key in PROVIDERS:
        result = report[key]
        if result["status"] == "ok":
            parity = max(result["parity"], result.get("state_parity", 0.0))
            scores.update({f"{key}_parity": float(f"{parity:.3g}"),
                           f"{key}_ms": round(result[latency], 3), f"{key}_speedup": round(result[speedup], 2)})
    return scores


def main(argv: list[str] | None = None) -> int:
    task_name, model_name = stage_args("pipeline.stages.validate", ["task", "model"], argv)
    name = run_name(task_name, model_name)
    try:
        config, task = load_task(task_name)
        trained = load_trained(config, task_name, model_name)
        metric = f"test/{task.metric}"
        data = load_task_data(task.data, task.paths.prepared, task.train, config.seed)
        export_info = read_json(trained.paths.export_info)
        if config.export.int8 and not int8_model(trained.paths.onnx_model).is_file():
            raise FileNotFoundError(f"{int8_model(trained.paths.onnx_model)}: not found, but export.int8 is true; "
                                    f"export it with `python -m pipeline.stages.export {task_name} {model_name}`")
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
    write_json_atomic(trained.paths.onnx_scores, headline(report, kind_of(task.head)))
    log_to_training_run(config, task_name, model_name, trained, report)
    for key in PROVIDERS:
        result = report[key]
        speed = ", ".join(f"{k[len('speedup_vs_torch_'):]} {v:.2f}x torch" for k, v in result.items()
                          if k.startswith("speedup_vs_torch_"))
        int8 = (f"; INT8 {metric} {result['int8_metric']:.4g} ({result['int8_gate']} change "
                f"{result['int8_metric_change']:.2g}, limit {result['int8_metric_change_limit']:g}), "
                f"{result[kind_of(task.head).key_int8_speedup]:.2f}x fp32" if "int8_metric" in result else "")
        log.info("validate@%s %s: %s", name, key, result["status"] if result["status"] != "ok" else
                 f"max|d| {result['max_abs_diff']:.2g} ({result['parity']:.2g} of its tolerance), {metric} delta {result['metric_delta']:.2g}, {speed}{int8}")
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
        from pipeline.deploy.serving import (
            served_form,  # torch-free; imported only where a model is registered
        )

        with served_form(trained.paths.onnx_model) as form:
            tracker.log_served_model(**form, registered_name=task_name, version_tags=served_model_tags(
                model_name, config.model[model_name].cell, handoff["run_id"]))
    tracker.end()


if __name__ == "__main__":
    sys.exit(main())
