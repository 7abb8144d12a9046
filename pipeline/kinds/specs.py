"""The kinds' torch-free halves (`<kind>_spec.py`) by name, each imported on first lookup:
what pipeline.deploy.predict and the served model use to read a request and answer it."""

from __future__ import annotations

import importlib

from pipeline.kinds import SETTINGS, module_of

SPECS: dict = {}   # name -> spec module, filled on lookup (or by `register_spec` for a kind from elsewhere)


def register_spec(spec) -> None:
    """A kind's spec from outside pipeline/kinds/ (a module or any object with its names)."""
    SETTINGS.setdefault(spec.NAME, spec)
    SPECS[spec.NAME] = spec


def spec_of(name: str):
    if name not in SPECS:
        SPECS[name] = importlib.import_module(module_of(name, "_spec"))
    return SPECS[name]


def known(name: str) -> bool:
    return name in SETTINGS or name in SPECS


def known_heads() -> list[str]:
    return sorted({*SETTINGS, *SPECS})
