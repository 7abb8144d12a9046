"""The kinds of model head (classifier, forecaster, generator): everything specific to one kind
lives with that kind, and every stage looks the kind up by name instead of branching on it.

A kind is three modules, split by who needs them:
- `<kind>_settings.py`: its name, its metric and the schema of its settings (`model.<cell>.<kind>`).
  Small and torch-free: the configuration's schema is built from every kind's, here.
- `<kind>_spec.py`, torch-free: how a deployed model reads a request and answers it
  (pipeline.deploy.predict, the served model), looked up by name in `pipeline/kinds/specs.py`.
- `<kind>.py`: a `Kind` (pipeline/kinds/base.py) with the model, the loss, metrics and floor,
  the plots, the export wrapper, the validation checks and the report's columns, looked up by
  name in `pipeline/kinds/registry.py`.

Both lookups import a kind's module only when it is asked for (as Time-Series-Library's model
dictionary does), so a stage imports, and dvc.yaml lists as its deps, only the kind of its own
run: an edit to `forecaster.py` re-runs the forecaster's runs and nothing else.
"""

from __future__ import annotations

from types import ModuleType

from pipeline.kinds import classifier_settings, forecaster_settings, generator_settings

# name -> its settings module (NAME, METRIC, MAXIMIZE, Settings); a fourth kind adds its own.
SETTINGS: dict[str, ModuleType] = {m.NAME: m for m in (classifier_settings, forecaster_settings, generator_settings)}


def settings_of(name: str):
    if name not in SETTINGS:
        raise KeyError(f"no model head {name!r}; the kinds are {sorted(SETTINGS)} (pipeline/kinds/)")
    return SETTINGS[name]


def module_of(name: str, suffix: str = "") -> str:
    """The dotted name of a kind's module: pipeline.kinds.<name><suffix>."""
    settings_of(name)   # an unknown name fails here, naming the kinds
    return f"{__name__}.{name}{suffix}"
