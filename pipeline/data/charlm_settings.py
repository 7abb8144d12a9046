"""The `charlm` data kind's settings (a plain UTF-8 text, read character by character): the schema of `task.<name>` for a
task of `data: charlm`. pipeline.config builds the configuration's schema from every data
kind's `*_settings.py`; the code that reads and prepares the data (`charlm.py`) is imported
only for this kind's tasks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pipeline.kinds import generator_settings
from pipeline.schema import PositiveInt, Section, TaskBase, TaskTrain

NAME = "charlm"


class CharLmPrepare(Section):
    train_fraction: float = Field(gt=0, lt=1, description="the first part of the text (nanoGPT: 0.9)")
    val_fraction: float = Field(gt=0, lt=1, description="of the rest: its first part is val, the remainder test")


class CharLmTrain(TaskTrain):
    block_size: Annotated[int, Field(ge=2)]   # characters per training window (random offsets)
    steps_per_epoch: PositiveInt             # an epoch is this many batches of random windows
    lr: float = Field(gt=0)                  # required here: character models want their own
    eval_streams: PositiveInt                # val/test are read as this many contiguous streams
    sample_prompt: str = Field(min_length=1)  # the fixed prompt of the samples logged every epoch


class Task(TaskBase):
    data: Literal[NAME]
    prepare: CharLmPrepare
    train: CharLmTrain
    head: str = generator_settings.NAME
