"""The `timeseries` data kind's settings (a CSV series): the schema of `task.<name>` for a
task of `data: timeseries`. pipeline.config builds the configuration's schema from every data
kind's `*_settings.py`; the code that reads and prepares the data (`timeseries.py`) is imported
only for this kind's tasks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.kinds import forecaster_settings
from pipeline.schema import PositiveInt, Section, TaskBase, TaskTrain

NAME = "timeseries"


class TimeseriesPrepare(Section):
    time_column: str
    columns: list[str] | None = Field(min_length=1)
    target: str
    features: Literal["M", "S"]
    missing: Literal["error", "ffill"]
    lookback: PositiveInt
    horizon: PositiveInt
    borders: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)] | None
    ratios: Annotated[list[Annotated[float, Field(gt=0, lt=1)]],
                      Field(min_length=3, max_length=3)] | None
    units: dict[str, str] | None = None   # column -> unit, for figure labels only

    @model_validator(mode="after")
    def _one_split_rule(self) -> "TimeseriesPrepare":
        if (self.borders is None) == (self.ratios is None):
            raise ValueError("set exactly one of borders ([train_end, val_end, test_end]) "
                             "and ratios ([train, val, test])")
        if self.borders is not None and not self.borders[0] < self.borders[1] < self.borders[2]:
            raise ValueError(f"borders must increase, found {self.borders}")
        if self.ratios is not None and sum(self.ratios) > 1 + 1e-9:
            raise ValueError(f"ratios must sum to at most 1, found {self.ratios}")
        return self


class Task(TaskBase):
    data: Literal[NAME]
    prepare: TimeseriesPrepare
    train: TaskTrain
    head: str = forecaster_settings.NAME
