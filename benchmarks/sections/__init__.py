"""The benchmark's sections, in the order they run and their tables appear: each name mapped
to its module, which measures it (`measure`; repro's two are `measure_full` and `measure_noop`)
and renders its markdown (`render(results) -> lines`)."""

from __future__ import annotations

from types import ModuleType

from benchmarks.sections import (browser, export, onnx, peephole, prepare, profile, repro, roofline, serve, train,
                                 train_profile, unrolled)

SECTIONS: dict[str, ModuleType] = {
    "train": train, "peephole": peephole, "roofline": roofline, "onnx": onnx, "profile": profile,
    "unrolled": unrolled, "train-profile": train_profile, "export": export, "prepare": prepare,
    "repro-full": repro, "repro-noop": repro, "serve": serve, "browser": browser}


def present(results: dict) -> list[ModuleType]:
    """The modules whose sections `results` has, in order, each once: repro-full and repro-noop
    share one table."""
    return list(dict.fromkeys(module for name, module in SECTIONS.items() if name in results))
