"""The kinds, by name, as the stages use them: the one place that lists them (with their
torch-free specs, pipeline/kinds/__init__.py). A stage looks a kind up here once and calls it."""

from __future__ import annotations

from torch import nn

from pipeline.kinds import register_spec
from pipeline.kinds.base import Kind
from pipeline.kinds.classifier import Classifier
from pipeline.kinds.forecaster import Forecaster
from pipeline.kinds.generator import Generator

KINDS: dict[str, Kind] = {kind.name: kind for kind in (Classifier(), Forecaster(), Generator())}


def register(kind: Kind) -> None:
    """Add a kind (its spec too): a fourth head is a Kind, its spec, and conf files."""
    register_spec(kind.spec)
    KINDS[kind.name] = kind


def kind_of(name: str) -> Kind:
    if name not in KINDS:
        raise KeyError(f"no model head {name!r}; the kinds are {sorted(KINDS)} (pipeline/kinds/registry.py)")
    return KINDS[name]


def build_model(head: str, args: dict) -> nn.Module:
    """Rebuild a model from the plain `model_args` stored in a checkpoint."""
    return kind_of(head).build(args)
