"""Trained models on disk: the checkpoint format, and a trained run loaded with what it needs.

A checkpoint is `{state_dict, model_args, config}` and loads with `weights_only=True`;
`model_args` is `{head, args}`, the plain arguments that rebuild the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.config import Config, ConfigError
from pipeline.files import atomic_path, read_json
from pipeline.kinds.registry import build_model
from pipeline.layout import RunPaths, run_name, run_paths


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomically. Saved through a file handle: given a path, torch names the archive's top
    folder after the (random) temporary file, so equal states would give unequal bytes and
    DVC would re-run every stage downstream of an identical retrain."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, model_args)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model_args = checkpoint["model_args"]
    model = build_model(model_args["head"], model_args["args"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), model_args


def paths_of(config: Config, task_name: str, model_name: str) -> RunPaths:
    """The output paths of the run (task, model)."""
    name = run_name(task_name, model_name)
    if name not in config.runs:
        raise ConfigError(f"params.yaml: no run {name}; runs are {sorted(config.runs)}")
    run = config.runs[name]
    return run_paths(config.paths, run.task, run.model, run.head)


@dataclass
class TrainedRun:
    """A trained model with its prepared-data meta and its training figures."""

    model: nn.Module
    model_args: dict      # {head, args}: what rebuilds the model
    meta: dict            # the prepared data's meta.json
    metrics: dict         # metrics/train/<run>.json
    paths: RunPaths

    @property
    def head(self) -> str:
        return self.model_args["head"]

    @property
    def test_metrics(self) -> dict:
        return {k: v for k, v in self.metrics.items() if k.startswith("test/")}


def load_trained(config: Config, task_name: str, model_name: str) -> TrainedRun:
    paths = paths_of(config, task_name, model_name)
    model, model_args = load_checkpoint(paths.checkpoint)
    meta = read_json(Path(config.task[task_name].paths.prepared) / "meta.json")
    return TrainedRun(model, model_args, meta, read_json(paths.train_metrics), paths)
