"""The `imdb` data kind's settings (labelled reviews in an aclImdb-style archive): the schema of `task.<name>` for a
task of `data: imdb`. pipeline.config builds the configuration's schema from every data
kind's `*_settings.py`; the code that reads and prepares the data (`imdb.py`) is imported
only for this kind's tasks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.kinds import classifier_settings
from pipeline.schema import PositiveInt, Section, TaskBase, TaskTrain

NAME = "imdb"


class ImdbPrepare(Section):
    vocab_size: int = Field(ge=3, description="including [PAD] and [UNK]")
    min_freq: PositiveInt
    vocab_from_unsup: bool
    max_len: PositiveInt
    truncation_side: Literal["left", "right"]
    val_fraction: float = Field(gt=0, lt=1)
    split_seed: int = Field(ge=0)


class EmbeddingsConfig(Section):
    dim: PositiveInt
    window: PositiveInt
    epochs: PositiveInt
    skip_gram: bool
    seed: int = Field(ge=0)


class Task(TaskBase):
    data: Literal[NAME]
    prepare: ImdbPrepare
    embeddings: EmbeddingsConfig
    train: TaskTrain
    head: str = classifier_settings.NAME
