"""Parity of an exported graph with PyTorch, judged at each output's own scale.

Two implementations of the same fp32 network (PyTorch's kernels and onnxruntime's) add the
same products in different orders, so their outputs differ by rounding that grows with the
work behind each value: the length of each dot product and the number of recurrent steps.
That difference is a fraction of the values' scale, not a fixed amount, so the gate is the
`allclose` form with its absolute term in units of the reference's own root-mean-square:

    |ONNX - PyTorch| <= rtol * |PyTorch| + atol * rms(PyTorch)     (elementwise)

Multiplying a model's outputs by any factor leaves the verdict unchanged. The figure kept is
the worst element's difference over its tolerance: <= 1 passes, and the rest is the margin.
The tolerances are settings (export.gates in conf/export/); docs/validation.md says why they
are what they are, and the margins measured.
"""

from __future__ import annotations

import numpy as np


def scaled_error(ours: np.ndarray, reference: np.ndarray, rtol: float, atol: float) -> float:
    """max |ours - reference| / (rtol * |reference| + atol * rms(reference)): the difference as a
    fraction of its tolerance (<= 1 passes; 0 when equal, inf when a zero tolerance is exceeded)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        raise ValueError(f"parity: shapes differ, {ours.shape} against {reference.shape}")
    difference = np.abs(ours - reference)
    allowed = rtol * np.abs(reference) + atol * np.sqrt(np.mean(reference ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(difference == 0, 0.0, difference / allowed)
    return float(ratio.max(initial=0.0))


class Parity:
    """The worst of several comparisons: the raw largest |difference| (for the record) and the
    largest difference over tolerance, with the name of the output where it was found."""

    def __init__(self) -> None:
        self.max_abs_diff, self.worst, self.where = 0.0, 0.0, ""

    def add(self, name: str, ours: np.ndarray, reference: np.ndarray, tolerance=None) -> None:
        """One output against its reference; `tolerance` (rtol, atol) None keeps only the raw figure."""
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(np.asarray(ours, np.float64) - reference).max()))
        if tolerance is None:
            return
        error = scaled_error(ours, reference, tolerance.rtol, tolerance.atol)
        if error >= self.worst:
            self.worst, self.where = error, name

    def record(self, prefix: str, tolerance) -> dict:
        """`<prefix>` (the worst over tolerance), `<prefix>_at` and the tolerance beside it."""
        return {prefix: self.worst, f"{prefix}_at": self.where,
                f"{prefix}_rtol": tolerance.rtol, f"{prefix}_atol": tolerance.atol}
