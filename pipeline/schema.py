"""The schema's building blocks, shared by pipeline/config.py and each kind's own settings
(pipeline/kinds/*_spec.py): one strict base section, the configuration error, common types.
Pydantic only: the deployment path imports the kinds' specs, never torch."""

from __future__ import annotations

from typing import Annotated

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
