"""The data kinds' modules (`pipeline/data/<kind>.py`) by name, each imported on first lookup,
so that a stage imports, and dvc.yaml lists, only the data kind of its own task."""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.data import SETTINGS

MODULES: dict[str, ModuleType] = {}   # kind -> its module, filled on lookup (or by a test's toy kind)


def data_kind(kind: str) -> ModuleType:
    """The module that prepares and loads a task of this data kind."""
    if kind not in MODULES:
        if kind not in SETTINGS:
            raise KeyError(f"no data kind {kind!r}; the kinds are {sorted(SETTINGS)} (pipeline/data/)")
        MODULES[kind] = importlib.import_module(f"{__package__}.{kind}")
    return MODULES[kind]
