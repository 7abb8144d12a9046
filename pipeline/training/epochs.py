"""One epoch of training, for the train stage and the benchmarks (which time this same loop
against a bare one): the optimisation steps over a loader, with autocast and clipping."""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm import tqdm

from pipeline.training.datasets import epoch_seed


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Dropout of an epoch depends on (seed, epoch) only: resumable exactly. Each rank draws
    its own dropout masks."""
    torch.manual_seed(epoch_seed(seed, epoch, rank))


def train_epoch(model, loader, optimizer, scheduler, loss_fn, device, grad_clip, autocast, desc,
                show_progress: bool = True) -> tuple[float, int]:
    """One pass over `loader`; returns the summed per-sample loss and the number of samples."""
    model.train()
    total_loss, samples = 0.0, 0
    start = time.perf_counter()
    with tqdm(loader, desc=desc, leave=False, disable=None if show_progress else True) as bar:
        for inputs, target in bar:
            inputs, target = inputs.to(device, non_blocking=True), target.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(model(inputs).float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(target)
            samples += len(target)
            bar.set_postfix(loss=f"{total_loss / samples:.4f}",
                            samples_per_s=f"{samples / (time.perf_counter() - start):.0f}")
    return total_loss, samples
