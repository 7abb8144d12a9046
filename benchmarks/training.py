"""What the training sections (train, peephole) time against: a bare PyTorch training loop,
over the batches of a task's training set, of the model a run trains."""

from __future__ import annotations

import itertools
import time

import torch
from torch import nn

from benchmarks.common import synchronize
from pipeline.config import Config
from pipeline.training.datasets import load_task_data
from pipeline.kinds.registry import kind_of


def first_batches(config: Config, task_name: str, n_batches: int):
    """(the task's data, the first `n_batches` training batches of its epoch 1, at most all of them)."""
    task = config.task[task_name]
    data = load_task_data(task.data, task.paths.prepared, task.train, config.seed, config.train.num_workers)
    data.train.batch_sampler.set_epoch(1)
    return data, list(itertools.islice(data.train, min(n_batches, len(data.train))))


def bare_loop(model, batches, optimizer, loss_fn, device) -> None:
    """What a minimal PyTorch training loop does: forward, loss, backward, step."""
    model.train()
    for inputs, target in batches:
        inputs, target = inputs.to(device), target.to(device)
        loss = loss_fn(model(inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def timed_bare_loop(model, optimizer, batches, loss_fn, device: torch.device, autocast: bool) -> float:
    """Seconds of the bare loop over `batches`, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        bare_loop(model, batches, optimizer, loss_fn, device)
    synchronize(device)
    return time.perf_counter() - start


def model_for(config: Config, task_name: str, model_name: str, meta: dict) -> tuple[nn.Module, dict]:
    task, model = config.task[task_name], config.model[model_name]
    kind = kind_of(task.head)
    model_args = kind.model_args(model.settings(task.head), model.cell, meta, (task_name, model_name))
    torch.manual_seed(config.seed)
    return kind.build(model_args["args"]), model_args
