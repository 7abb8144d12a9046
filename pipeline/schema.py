"""The schema's building blocks, shared by pipeline/config.py, each kind of head's settings
(pipeline/kinds/*_settings.py) and each data kind's (pipeline/data/*_settings.py): one strict
base section, the configuration error, common types, and what every task has (its source,
paths, anchors, training batch sizes, head). Pydantic only: the deployment path imports it,
never torch."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Checksum = Annotated[
    str,
    Field(pattern=r"^(md5:[0-9a-f]{32}|sha256:[0-9a-f]{64})$",
          description="<algorithm>:<hex digest>, algorithm md5 or sha256"),
]
PositiveInt = Annotated[int, Field(gt=0)]
Dropout = Annotated[float, Field(ge=0, lt=1)]


class Section(BaseModel):
    # strict: YAML gives real types, so "yes" for a bool or "3" for an int is a mistake.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ConfigError(ValueError):
    """A configuration that does not fit the schema; the message names each bad key."""


# ---- what every task has -------------------------------------------------------------------


class OfflineSource(Section):
    filename: str = Field(min_length=1)
    checksum: Checksum


class SourceConfig(Section):
    url: str = Field(min_length=1, description="http(s) URL, file:// URL or local path")
    checksum: Checksum
    offline: OfflineSource | None = None


class TaskPaths(Section):
    raw: str
    prepared: str
    card: str
    embeddings: str | None = None  # text tasks: pretrained word vectors (stage embed)


class TaskTrain(Section):
    epochs: PositiveInt
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    precision: Literal["fp32", "bf16"] | None = None   # this task's own train.precision
    lr: float | None = Field(None, gt=0)                # this task's own train.lr (AdamW peak learning rate)


class Anchors(Section):
    """Published figures on a task's dataset under one protocol (conf/task/<name>.yaml): the
    report prints them beside the task's runs when the task's prepare settings match `protocol`."""

    dataset: str | None = None   # the checksum of the source they are about (task.<name>.source.checksum)
    protocol: dict[str, Any] = Field(default_factory=dict)   # prepare settings the figures hold for
    source: str = Field(min_length=1)                          # where the figures are published
    figures: dict[str, dict[str, float]] = Field(min_length=1)  # model -> {metric key: value}


class TaskBase(Section):
    source: SourceConfig
    paths: TaskPaths
    anchors: list[Anchors] = Field(default_factory=list)  # none for a dataset without published figures
    # The models this task trains (names under model:); all of them when left out. Opting a
    # slow task out of a model keeps the full `dvc repro` inside its time budget.
    models: list[str] | None = Field(default=None, min_length=1)
    # The model head it trains (a kind, pipeline/kinds/); each data kind has its own default.
    head: str

    @property
    def metric(self) -> str:
        """The metric that picks the best epoch and the champion: the head's."""
        from pipeline.kinds import settings_of   # here: the kinds' settings import this module

        return settings_of(self.head).METRIC

    @property
    def maximize(self) -> bool:
        from pipeline.kinds import settings_of

        return settings_of(self.head).MAXIMIZE
