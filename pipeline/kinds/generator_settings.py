"""The generator (a character-level language model): its name, its metric and the schema of its settings
(`model.<cell>.generator`). pipeline.config builds the configuration's schema from every kind's
`*_settings.py`; the code that reads requests (`generator_spec.py`) and the code that trains and
exports (`generator.py`) are imported only for the runs of this kind."""

from __future__ import annotations

from pydantic import model_validator

from pipeline.schema import Dropout, PositiveInt, Section

NAME = "generator"
METRIC, MAXIMIZE = "loss", False   # nats per character


class Settings(Section):
    """model.<name>.generator: the constructor's arguments (pipeline/nets/generator.py)."""

    embedding_dim: PositiveInt
    hidden_size: PositiveInt
    num_layers: PositiveInt
    dropout: Dropout
    tie_weights: bool   # the output layer reuses the embedding (needs embedding_dim == hidden_size)

    @model_validator(mode="after")
    def _tying_fits(self) -> "Settings":
        if self.tie_weights and self.embedding_dim != self.hidden_size:
            raise ValueError(f"tie_weights needs embedding_dim == hidden_size, found {self.embedding_dim} "
                             f"and {self.hidden_size}")
        return self
