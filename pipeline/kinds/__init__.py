"""The kinds of model head (classifier, forecaster, generator): everything specific to one kind
lives with that kind, and every stage looks the kind up instead of branching on its name.

A kind is two modules, split where torch is:
- `<kind>_spec.py`, torch-free: its name, the schema of its settings (`model.<cell>.<kind>`), its
  metric, and how a deployed model reads a request and answers it. pipeline.config builds the
  schema from it; pipeline.predict and the served model (whose code must stay torch-free) use it.
- `<kind>.py`: a `Kind` (pipeline/kinds/base.py) with the model, its training-only settings, the
  loss, the metrics and the naive floor, the plots, the export wrapper and its graph interface,
  the validation checks and timing workloads, and the report's columns. The stages look it up
  in pipeline/kinds/registry.py.

This module is the registry of specs: torch-free, like them. A new kind is its two modules plus
`register_spec` (and `registry.register`), or a line in each registry.
"""

from __future__ import annotations

from types import ModuleType

from pipeline.kinds import classifier_spec, forecaster_spec, generator_spec

SPECS: dict[str, ModuleType] = {spec.NAME: spec for spec in (classifier_spec, forecaster_spec, generator_spec)}


def register_spec(spec: ModuleType) -> None:
    """Add a kind's spec (a module or any object with its names): the config schema takes it
    from the next validation on."""
    SPECS[spec.NAME] = spec


def spec_of(name: str):
    if name not in SPECS:
        raise KeyError(f"no model head {name!r}; the kinds are {sorted(SPECS)} (pipeline/kinds/)")
    return SPECS[name]
