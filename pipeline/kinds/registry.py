"""The kinds as the stages use them (`Kind`, pipeline/kinds/base.py), by name: a kind's module
(`pipeline/kinds/<name>.py`, whose `KIND` is its instance) is imported on first lookup, so a
stage imports only the kind of its own run (pipeline/kinds/__init__.py says why)."""

from __future__ import annotations

import importlib

from torch import nn

from pipeline.kinds.base import Kind
from pipeline.kinds.specs import register_spec

KINDS: dict[str, Kind] = {}   # name -> Kind, filled on lookup (or by `register`)


def register(kind: Kind) -> None:
    """Add a kind from outside pipeline/kinds/ (its spec too): a Kind, its spec, and conf files."""
    register_spec(kind.spec)
    KINDS[kind.name] = kind


def kind_of(name: str) -> Kind:
    if name not in KINDS:
        from pipeline.kinds import module_of

        KINDS[name] = importlib.import_module(module_of(name)).KIND
    return KINDS[name]


def build_model(head: str, args: dict) -> nn.Module:
    """Rebuild a model from the plain `model_args` stored in a checkpoint."""
    return kind_of(head).build(args)
