"""The schema's building blocks, shared by pipeline/config.py, each kind of head's settings
(pipeline/kinds/*_settings.py) and each data kind's (pipeline/data/*_settings.py): one strict
base section, the configuration error, common types, and what every task has (its source,
paths, anchors, training batch sizes, head). Pydantic only: the deployment path imports it,
never torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, model_validator

from pipeline.layout import TaskPaths, source_name

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


def _source_form(value: Any) -> str:
    """Which form a `source` has: one file (a mapping with a `url`; an instance when serialised) or several."""
    return ONE_SOURCE if isinstance(value, SourceConfig) or (isinstance(value, dict) and "url" in value) \
        else SOURCES_BY_NAME


# The tags of the two forms of `source`, which error messages leave out of a key's path.
ONE_SOURCE, SOURCES_BY_NAME = "<one source>", "<sources by name>"
Sources = Annotated[Union[Annotated[SourceConfig, Tag(ONE_SOURCE)], Annotated[dict[str, SourceConfig], Tag(SOURCES_BY_NAME)]],
                    Discriminator(_source_form)]


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
    """What every task has. Its paths are not settings: they derive from the task's name
    (pipeline/layout.py task_paths), which the configuration gives it once loaded."""

    # One file, or several by name (a text task's train and test files); each is fetched under
    # the task's raw folder by the last part of its URL.
    source: Sources
    anchors: list[Anchors] = Field(default_factory=list)  # none for a dataset without published figures
    # The models this task trains (names under model:); all of them when left out. Opting a
    # slow task out of a model keeps the full `dvc repro` inside its time budget.
    models: list[str] | None = Field(default=None, min_length=1)
    # The model head it trains (a kind, pipeline/kinds/); each data kind has its own default.
    head: str
    _name: str = PrivateAttr("")
    _paths: TaskPaths | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _fetched_names_differ(self) -> "TaskBase":
        names = [source_name(s.url) for s in self.sources()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"source: two files would be fetched as {twice}; every source's URL must end "
                             "in its own file name")
        return self

    def named(self, name: str, paths: TaskPaths) -> None:
        """Called once by the configuration: the task's name (its key under task:) and its paths."""
        self._name, self._paths = name, paths

    @property
    def name(self) -> str:
        return self._name

    @property
    def paths(self) -> TaskPaths:
        if self._paths is None:
            raise RuntimeError("a task's paths derive from its name: load it through pipeline.config")
        return self._paths

    def sources(self) -> list[SourceConfig]:
        return list(self.source.values()) if isinstance(self.source, dict) else [self.source]

    @property
    def source_file(self) -> Path:
        """The fetched file of a task with one source."""
        if isinstance(self.source, dict):
            raise ValueError(f"task.{self.name}.source: expected one file, found several {sorted(self.source)}")
        return self.paths.raw / source_name(self.source.url)

    @property
    def metric(self) -> str:
        """The metric that picks the best epoch and the champion: the head's."""
        from pipeline.kinds import settings_of   # here: the kinds' settings import this module

        return settings_of(self.head).METRIC

    @property
    def maximize(self) -> bool:
        from pipeline.kinds import settings_of

        return settings_of(self.head).MAXIMIZE
