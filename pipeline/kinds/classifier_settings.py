"""The classifier (text classification (token ids in, class probabilities out)): its name, its metric and the schema of its settings
(`model.<cell>.classifier`). pipeline.config builds the configuration's schema from every kind's
`*_settings.py`; the code that reads requests (`classifier_spec.py`) and the code that trains and
exports (`classifier.py`) are imported only for the runs of this kind."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.schema import Dropout, PositiveInt, Section

NAME = "classifier"
METRIC, MAXIMIZE = "acc", True   # picks the best epoch and the champion


class Settings(Section):
    """model.<name>.classifier: the constructor's arguments, plus pretrained_embeddings."""

    embedding_dim: PositiveInt
    pretrained_embeddings: bool
    hidden_size: PositiveInt
    num_layers: PositiveInt
    bidirectional: bool
    dropout: Dropout
    embedding_dropout: Dropout
    pooling: list[Literal["last", "mean", "max"]] = Field(min_length=1)
