"""The forecaster (multivariate time-series forecasting): its name, its metric and the schema of its settings
(`model.<cell>.forecaster`). pipeline.config builds the configuration's schema from every kind's
`*_settings.py`; the code that reads requests (`forecaster_spec.py`) and the code that trains and
exports (`forecaster.py`) are imported only for the runs of this kind."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.schema import Dropout, PositiveInt, Section

NAME = "forecaster"
METRIC, MAXIMIZE = "mse", False


class Settings(Section):
    """model.<name>.forecaster: the constructor's arguments (pipeline/nets/forecaster.py)."""

    hidden_size: PositiveInt
    num_layers: PositiveInt
    dropout: Dropout
    revin: bool
    segment_len: int = Field(ge=0, description="0 = one step at a time")
    channel_independent: bool
    decoder: Literal["linear", "pmf"] = Field("linear", description="pmf: SegRNN's parallel multi-step decoding")
