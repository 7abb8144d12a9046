"""The data kinds' modules (`pipeline/data/<kind>.py`) by name, each imported on first lookup,
so that a stage imports, and dvc.yaml lists, only the data kind of its own task."""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.data import SETTINGS

MODULES: dict[str, ModuleType] = {}   # data kind -> its module, filled on lookup (or by a test's toy kind)


def data_kind(name: str) -> ModuleType:
    """The module that prepares and loads a task of this data kind (a task's `data`)."""
    if name not in MODULES:
        if name not in SETTINGS:
            raise KeyError(f"no data kind {name!r}; the data kinds are {sorted(SETTINGS)} (pipeline/data/)")
        MODULES[name] = importlib.import_module(f"{__package__}.{name}")
    return MODULES[name]
