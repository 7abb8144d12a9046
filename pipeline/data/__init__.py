"""The data kinds (a task's `data`: imdb, timeseries, charlm), one module each, split by who
needs them, as the kinds of head are (pipeline/kinds/__init__.py):
- `<kind>_settings.py`: the schema of a task of this kind (`task.<name>`), imported here for
  pipeline.config, which validates every task;
- `<kind>.py`: reading and preparing the raw data (`prepare`), and the datasets a stage trains
  or scores on (`split_datasets`), looked up by name in `pipeline/data/registry.py` and so
  imported only by the stages of this kind's tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from pipeline.data import charlm_settings, imdb_settings, timeseries_settings

# kind -> its settings module (NAME, Task); a new data kind adds its own.
SETTINGS: dict[str, ModuleType] = {m.NAME: m for m in (imdb_settings, timeseries_settings, charlm_settings)}


@dataclass
class SplitData:
    """What a data kind gives for one split: its dataset and how to batch it."""

    dataset: Any                            # a torch Dataset
    lengths: Any = None                     # a tensor of lengths: bucket batches by length
    collate: Callable | None = None         # e.g. cut a batch to its longest row
    max_batches: int | None = None          # an epoch of the first N batches
