"""(a) train: samples/s and tokens (or time steps)/s of pipeline.stages.train's loop against a bare
PyTorch loop, same model, same batches; the ratio must be >= 0.95."""

from __future__ import annotations

import copy
import itertools
import time

import torch
from torch import nn

from benchmarks.common import ratio, ratio_fields, spread, stats, synchronize, table
from benchmarks.training import first_batches, model_for, timed_bare_loop
from pipeline.config import Config
from pipeline.training.distributed import uses_bf16
from pipeline.kinds.registry import kind_of

TRAIN_RATIO_TARGET = 0.95


def batch_work(kind, args: dict, meta: dict, batches) -> dict:
    """Samples, time steps (the kind's `step_unit`: valid tokens for IMDB) and training FLOPs of a list of batches."""
    samples = steps = flops = 0
    for inputs, _ in batches:
        samples += len(inputs)
        batch_steps, batch_flops = kind.train_work(inputs, args, meta)
        steps, flops = steps + batch_steps, flops + batch_flops
    return {"samples": samples, "steps": steps, "flops": flops}


def measure(config: Config, task_name: str, model_name: str, device: torch.device, repeats: int,
            n_batches: int) -> dict:
    """Our loop (pipeline.stages.train.train_epoch over its DataLoader) against the bare loop over the
    same batches, alternating, each from the same initial weights."""
    from pipeline.training.epochs import train_epoch

    task = config.task[task_name]
    data, batches = first_batches(config, task_name, n_batches)
    n_batches = len(batches)
    initial, model_args = model_for(config, task_name, model_name, data.meta)
    loss_fn = kind_of(task.head).loss()
    autocast = uses_bf16(config.precision_of(task_name), device)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(initial).to(device)
        return model, torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)

    def ours() -> float:
        model, optimizer = fresh()
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.train.lr,
                                                        total_steps=n_batches + 1)
        synchronize(device)
        start = time.perf_counter()
        train_epoch(model, itertools.islice(data.train, n_batches), optimizer, scheduler, loss_fn, device,
                    config.train.grad_clip, autocast, "benchmark", show_progress=False)
        synchronize(device)
        return time.perf_counter() - start

    def bare() -> float:
        return timed_bare_loop(*fresh(), batches, loss_fn, device, autocast)

    work = batch_work(kind_of(task.head), model_args["args"], data.meta, batches)
    ours(), bare()  # warm-up: allocator, oneDNN/cuDNN kernel selection
    seconds = {"ours": [], "bare": []}
    for repeat in range(repeats):  # alternate which goes first, so drift favours neither
        order = (("ours", ours), ("bare", bare)) if repeat % 2 == 0 else (("bare", bare), ("ours", ours))
        for loop, timed in order:
            seconds[loop].append(timed())
    result = {"batches": n_batches, "batch_size": task.train.batch_size, **work,
              "step_unit": kind_of(task.head).step_unit}
    for loop, values in seconds.items():
        result[loop] = {"seconds": stats(values),
                        "samples_per_s": stats([work["samples"] / s for s in values]),
                        "steps_per_s": stats([work["steps"] / s for s in values]),
                        "flop_per_s": stats([work["flops"] / s for s in values])}
    ratios = [b / o for o, b in zip(seconds["ours"], seconds["bare"])]  # throughput ours / bare
    return {**result, **ratio_fields("ours_to_bare", ratios, TRAIN_RATIO_TARGET)}


def render(results: dict) -> list[str]:
    return table("## (a) Training throughput: pipeline loop against a bare PyTorch loop",
                 ["model", "batches", "ours samples/s", "bare samples/s", "ours steps/s",
                  "ratio ours/bare (≥ 0.95)"],
                 [[name, f"{r['batches']} × {r['batch_size']}", spread(r["ours"]["samples_per_s"]),
                   spread(r["bare"]["samples_per_s"]), f"{spread(r['ours']['steps_per_s'], 1e-3)}k {r['step_unit']}",
                   ratio(r, "ratio_ours_to_bare")] for name, r in results["train"].items()])
