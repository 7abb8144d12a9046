"""Where each run's outputs live, and the ONNX metadata prefix: written once, used everywhere.

dvc.yaml declares the same paths (it cannot import this module); tests/test_dvc_deps.py checks
that the two agree. No torch or pydantic here: the deployment path imports it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

METADATA_PREFIX = "rb."  # every metadata key pipeline.stages.export writes; predict refuses a model without them


@dataclass(frozen=True)
class RunPaths:
    """The files of one (task, model) run, from training to validation."""

    name: str                # <task>-<model>: the stage suffix in dvc.yaml
    model_dir: Path          # train: the checkpoint and the MLflow hand-off
    checkpoint: Path
    handoff: Path            # the MLflow run id that export and validate log to
    train_metrics: Path      # train: every figure of the run (report, export metadata, MLflow)
    train_scores: Path       # train: the headline that DVC compares (`dvc metrics show`)
    figures: Path            # train: PNG figures and their data, for MLflow and the report
    sample: Path             # train: a generator's final sample (text), in figures/
    curves_plot: Path        # train: loss per epoch, a DVC plot (plots/curves/*)
    head_plot: Path          # train: the head's DVC plot (plots/<head>/*: confusion, forecast vs truth)
    resume: Path             # train: per-epoch resume state, deleted when the run ends
    onnx_dir: Path           # export: the model and its export record
    onnx_model: Path
    export_info: Path
    onnx_metrics: Path       # validate: every figure of the validation
    onnx_scores: Path        # validate: the headline that DVC compares


@dataclass(frozen=True)
class TaskPaths:
    """The files of one task, derived from its name alone: a task file copied from another
    never writes into the other's files."""

    raw: Path          # fetch: a folder holding the task's fetched source file(s), by their own names
    prepared: Path     # prepare: training-ready arrays and what deployment needs (tokenizer, scale)
    embeddings: Path   # embed (text tasks that ask for it): pretrained word vectors
    card: Path         # prepare: the data card (read by the report, logged to MLflow)


def task_paths(paths, task: str) -> TaskPaths:
    """`paths` is the config's paths section; dvc.yaml spells the same paths with `${key}`."""
    return TaskPaths(raw=Path(paths.raw) / task, prepared=Path(paths.prepared) / task / "data",
                     embeddings=Path(paths.prepared) / task / "embeddings",
                     card=Path(paths.metrics) / "data" / f"{task}.json")


def source_name(url: str) -> str:
    """The name a fetched file keeps under its task's raw folder: the last part of its URL or path."""
    from urllib.parse import urlparse

    return Path(urlparse(url).path).name


def int8_model(onnx_model: str | Path) -> Path:
    """model.onnx -> model.int8.onnx beside it: its dynamic INT8 quantisation (export.int8),
    which export writes, validate gates and `predict --int8` runs."""
    onnx_model = Path(onnx_model)
    return onnx_model.with_name(f"{onnx_model.stem}.int8{onnx_model.suffix}")


def run_name(task: str, model: str) -> str:
    return f"{task}-{model}"


def run_paths(paths, task: str, model: str, head: str) -> RunPaths:
    """`paths` is the config's paths section (PathsConfig); `head` the task's model head."""
    name = run_name(task, model)
    model_dir, onnx_dir, metrics = Path(paths.models) / name, Path(paths.onnx) / name, Path(paths.metrics)
    plots = Path(paths.plots)
    return RunPaths(
        name=name, model_dir=model_dir, checkpoint=model_dir / "model.pt", handoff=model_dir / "mlflow.json",
        train_metrics=metrics / "train" / f"{name}.json", train_scores=Path(paths.scores) / "train" / f"{name}.json",
        figures=plots / "train" / name, sample=plots / "train" / name / "sample.txt", curves_plot=plots / "curves" / f"{name}.csv",
        head_plot=plots / head / f"{name}.csv", resume=Path(paths.checkpoints) / name / "last.pt",
        onnx_dir=onnx_dir, onnx_model=onnx_dir / "model.onnx", export_info=onnx_dir / "export.json",
        onnx_metrics=metrics / "onnx" / f"{name}.json", onnx_scores=Path(paths.scores) / "onnx" / f"{name}.json")
