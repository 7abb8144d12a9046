"""Prepared arrays -> loaders, for every data kind: each kind's module makes its datasets
(`split_datasets`, pipeline/data/<kind>.py: a `SplitData` per split), this module batches them.

Datasets with `lengths` are length-bucketed: similar lengths share a batch, and the kind's
`collate` may cut each batch to its longest row (IMDB), so little time goes into padding. Every order is drawn from a generator
seeded by (seed, epoch), so an epoch replays identically after a resume.

Under DDP every process draws the same global batches and takes its own slice of each:
N processes step through exactly the batches that one process would, so the batch size in
the config is the global batch whatever N is.

A dataset may cap an epoch at `max_batches` batches (character-level text: windows at random
offsets, `steps_per_epoch` batches of them drawn afresh each epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from pipeline.data.registry import data_kind
from pipeline.files import file_digest, read_json

BUCKET_POOL = 50  # batches per pool that is sorted by length


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's randomness (data order; dropout per rank): a function of
    (seed, epoch, rank) alone, so an epoch replays identically after a resume."""
    return seed * 100_003 + epoch + 7_919 * rank


def prepared_digest(prepared_dir: str | Path) -> str:
    """One sha256 over every file of a prepared folder (names and contents)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(prepared_dir).iterdir()):
        digest.update(path.name.encode() + b"\0" + file_digest(path).encode())
    return digest.hexdigest()


def shard(batch: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's slice of a global batch. A batch that does not split evenly is padded with
    its own first rows (as DistributedSampler pads), so every rank gets the same number."""
    if world_size == 1:
        return batch
    total = -(-len(batch) // world_size) * world_size
    padded = (batch * -(-total // len(batch)))[:total]
    return padded[rank::world_size]


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled (or ordered) batches; with `lengths`, bucketed by length within pools.

    A distributed sampler too: with world_size > 1 each rank yields its shard of every
    global batch. Call set_epoch before each epoch (as with DistributedSampler).
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int,
                 lengths: torch.Tensor | None = None, rank: int = 0, world_size: int = 1,
                 max_batches: int | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.lengths = lengths
        self.max_batches = max_batches  # an epoch of the first N batches (random windows)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        batches = -(-self.size // self.batch_size)
        return batches if self.max_batches is None else min(batches, self.max_batches)

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        if self.lengths is not None:
            pool = self.batch_size * BUCKET_POOL
            pools = [order[i:i + pool] for i in range(0, self.size, pool)]
            order = torch.cat([p[torch.argsort(self.lengths[p], stable=True)] for p in pools])
        batches = list(torch.split(order, self.batch_size))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        batches = batches[:self.max_batches]
        return iter([shard(b.tolist(), self.rank, self.world_size) for b in batches])


@dataclass
class TaskData:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    meta: dict
    digest: str


def _loader(dataset, batch_size, shuffle, seed, num_workers, lengths=None, collate=None, rank=0, world_size=1,
            max_batches=None):
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, seed, lengths, rank, world_size, max_batches)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)


def load_task_data(data: str, prepared_dir: str | Path, train, seed: int, num_workers: int = 0, rank: int = 0,
                   world_size: int = 1) -> TaskData:
    """Loaders for the three splits of a task of data kind `data` (`train`: the task's train
    settings), over the datasets its module makes (`split_datasets`, pipeline/data/<data>.py);
    only train is sharded across ranks (rank 0 evaluates)."""
    prepared_dir = Path(prepared_dir)
    meta = read_json(prepared_dir / "meta.json")
    loaders = {}
    for split, found in data_kind(data).split_datasets(prepared_dir, meta, train).items():
        size, shuffle = (train.batch_size, True) if split == "train" else (train.eval_batch_size, False)
        ranks = dict(rank=rank, world_size=world_size) if split == "train" else {}
        loaders[split] = _loader(found.dataset, size, shuffle, seed, num_workers, found.lengths, found.collate,
                                 max_batches=found.max_batches, **ranks)
    return TaskData(**loaders, meta=meta, digest=prepared_digest(prepared_dir))
