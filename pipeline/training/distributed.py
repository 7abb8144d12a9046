"""Devices and data-parallel processes (DDP under torchrun): which rank this is, and the
few collectives the train stage needs.

NCCL between GPUs (one per process), gloo on the CPU. With one process every helper here
is a no-op, so the train loop reads the same either way.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import torch

from pipeline.config import ConfigError

log = logging.getLogger(__name__)


def pick_device(setting: str, local_rank: int = 0) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but torch sees no CUDA device; use auto or cpu")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device("cuda", local_rank) if setting == "cuda" else torch.device("cpu")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether bf16 autocast runs: on CUDA, and on CPUs with native bf16 instructions
    (AVX512-BF16, AMX). Elsewhere oneDNN would emulate bf16, slower than fp32, so fp32 runs."""
    if precision != "bf16":
        return False
    if device.type == "cuda" or torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return True
    log.warning("precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); training in fp32")
    return False


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (same seed, same metrics on the CPU: train.deterministic), without
    torch's debugging aid that comes with them, which fills every new tensor with NaN so that a
    read of memory no kernel wrote shows. That fill was a fifth of an IMDB LSTM training step
    (oneDNN's workspace, hundreds of MB per layer call, written over in full each time), and no
    kernel here reads what it did not write: the metrics are the same with and without it."""
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job; the defaults are a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_ranks() -> Ranks:
    """The ranks that torchrun hands over in the environment (one process without it)."""
    return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def start_distributed(ranks: Ranks, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU."""
    import datetime

    import torch.distributed as dist

    if device.type == "cuda":
        if torch.cuda.device_count() <= ranks.local_rank:
            raise ConfigError(f"local rank {ranks.local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                              "start at most that many processes per node")
        torch.cuda.set_device(device)
    # Rank 0 evaluates while the others wait at the next collective: allow for a long evaluation.
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))


def from_rank0(value, ranks: Ranks):
    """Rank 0's value, on every rank (a no-op for one process)."""
    if ranks.world_size == 1:
        return value
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def summed(values: list[float], ranks: Ranks, device: torch.device) -> list[float]:
    """Element-wise sum over all ranks."""
    if ranks.world_size == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_command(nproc_per_node: int, task_name: str, model_name: str) -> list[str]:
    """This stage again, as N local DDP processes under torchrun (rendezvous on this host)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            "-m", "pipeline.stages.train", task_name, model_name]
