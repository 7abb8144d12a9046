"""The data kinds (a task's `data`: texts, timeseries, charlm), one module each, split by who
needs them, as the kinds of head are (pipeline/kinds/__init__.py):
- `<kind>_settings.py`: the schema of a task of this kind (`task.<name>`), imported here for
  pipeline.config, which validates every task;
- `<kind>/`, a package: reading and preparing the raw data (`prepare`), and the datasets a
  stage trains or scores on (`split_datasets`), looked up by name in `pipeline/data/registry.py`
  and so imported only by the stages of this kind's tasks; dvc.yaml lists the folder as their
  dep (`pipeline/data/${item.data}`), whatever modules the kind splits into.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from pipeline.data import charlm_settings, texts_settings, timeseries_settings

# kind -> its settings module (NAME, Task); a new data kind adds its own.
SETTINGS: dict[str, ModuleType] = {m.NAME: m for m in (texts_settings, timeseries_settings, charlm_settings)}


@dataclass
class SplitData:
    """What a data kind gives for one split: its dataset and how to batch it."""

    dataset: Any                            # a torch Dataset
    lengths: Any = None                     # a tensor of lengths: bucket batches by length
    collate: Callable | None = None         # e.g. cut a batch to its longest row
    max_batches: int | None = None          # an epoch of the first N batches


def single_file(raw: str | Path) -> Path:
    """The one fetched file of a task with one source: `raw` itself, or the one file in the raw
    folder (data/raw/<task>/) that fetch wrote."""
    raw = Path(raw)
    if raw.is_dir():
        files = sorted(p for p in raw.iterdir() if p.is_file() and not p.name.startswith("."))
        if len(files) != 1:
            raise ValueError(f"{raw}: expected the one fetched source file, found {[p.name for p in files]}")
        return files[0]
    return raw
