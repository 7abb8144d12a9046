"""The resume state of an unfinished training run (checkpoints/<run>/last.pt): where the run
stands after its last finished epoch, and the fingerprint that a resume must match, so that a
killed `train` stage picks up where it stopped and never from another run's state."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.config import Config

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where a run stands after its last finished epoch: all that a resume restores besides
    the model, optimizer and scheduler states."""

    best_metric: float
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict | None = None   # rank 0's best weights (on CPU); None elsewhere
    bad_epochs: int = 0              # epochs since the best one
    train_seconds: float = 0.0
    samples: int = 0                 # over all epochs and processes (DDP: padding rows included)
    run_id: str | None = None        # the MLflow run that a resumed run continues

    @classmethod
    def start(cls, maximize: bool) -> "Progress":
        return cls(best_metric=-math.inf if maximize else math.inf)


def model_settings(config: Config, task_name: str, model_name: str) -> dict:
    """What the run reads of model.<name>: the cell and its kind's section, nothing of the
    other kinds (so MLflow's compare view of three forecasters shows forecaster settings only)."""
    head, model = config.task[task_name].head, config.model[model_name]
    return {"cell": model.cell, head: model.settings(head).model_dump()}


def fingerprint(config: Config, task_name: str, model_name: str, data_digest: str, world_size: int = 1) -> str:
    """What a resume checkpoint must match: this run's settings, its data, and its number of
    processes (each rank draws its own dropout masks, so another count is another run)."""
    import hashlib
    import json

    train = config.train.model_dump(exclude={"nproc_per_node"})  # how it is launched: world_size says it
    relevant = {"task": config.task[task_name].model_dump(), "model": model_settings(config, task_name, model_name),
                "train": train, "seed": config.seed, "data": data_digest}
    if world_size > 1:
        relevant["world_size"] = world_size
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def load_resume(path: Path, expected: str) -> dict | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != expected:
        log.warning("ignoring %s: it belongs to other settings or data", path)
        return None
    return state
