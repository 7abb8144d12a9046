"""(b) roofline: the training throughput of (a) in FLOP/s, as a fraction of a large matmul
measured in this run (the ceiling the unrolled section measures its GFLOP/s against too)."""

from __future__ import annotations

import torch

from benchmarks.common import spread, stats, synchronize, table
from pipeline.training.flops import matmul_flops
from pipeline.markdown import number


def rate(run, flops: int, device: torch.device, repeats: int) -> list[float]:
    """FLOP/s of `run` (doing `flops`), one figure per timed call, after validate's warm-up."""
    from pipeline.latency import timings

    return [flops / (ms / 1000.0) for ms in timings(lambda: (run(), synchronize(device)), repeats)]


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int, n: int) -> dict:
    """The roofline's ceiling: the fastest n x n matmul among the GEMM libraries torch uses here.

    torch.mm goes to MKL on the CPU (cuBLAS on CUDA), but the CPU LSTM and GRU kernels are
    oneDNN's, and on some CPUs (MKL on AMD: AVX2 code even where AVX-512 exists) oneDNN's
    GEMM is much faster. Measuring only torch.mm would put the models "above peak".
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    libraries = {"torch.mm": stats(rate(lambda: a @ b, matmul_flops(n), device, repeats))}
    if device.type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        # cuDNN's RNNs use TF32 tensor cores for fp32 by default; plain torch.mm does not.
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            libraries["torch.mm (TF32)"] = stats(rate(lambda: a @ b, matmul_flops(n), device, repeats))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        a_onednn, b_onednn = a.to_mkldnn(), b.to_mkldnn()
        libraries["oneDNN"] = stats(rate(lambda: torch.ops.aten.mkldnn_linear(a_onednn, b_onednn), matmul_flops(n),
                                         device, repeats))
    best = max(libraries, key=lambda name: libraries[name]["median"])
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "library": best,
            "flop_per_s": libraries[best], "libraries": libraries}


def fractions_of_peak(train: dict, peak: dict) -> dict:
    """Each model's training FLOP/s (median, min, max over the repeats) over the median ceiling."""
    ceiling = peak["flop_per_s"]["median"]
    return {"peak": peak, "models": {
        name: {"flop_per_token_position": None if r["steps"] == 0 else r["flops"] / r["steps"],
               "ours_flop_per_s": r["ours"]["flop_per_s"]["median"],
               "fraction_of_peak": {key: r["ours"]["flop_per_s"][key] / ceiling for key in ("median", "min", "max")}
               | {"n": r["ours"]["flop_per_s"]["n"]}}
        for name, r in train.items()}}


def measure(train: dict, device: torch.device, dtype: torch.dtype, repeats: int, n: int) -> dict:
    """The models of `train` (section (a)'s results) against an n x n matmul of `dtype` on `device`."""
    return fractions_of_peak(train, matmul_peak(device, dtype, repeats, n))


def render(results: dict) -> list[str]:
    peak = results["roofline"]["peak"]
    measured = ", ".join(f"{name} {spread(value, 1e-9, 0)}" for name, value in peak["libraries"].items())
    return table(f"## (b) Roofline: training FLOP/s against the fastest {peak['n']}² {peak['dtype']} matmul",
                 ["model", "train FLOP per token (IMDB) or input step (ETTh1)", "ours GFLOP/s",
                  "fraction of matmul peak"],
                 [[name, f"{number(r['flop_per_token_position'] / 1e6, 2)} M", number(r["ours_flop_per_s"] / 1e9, 1),
                   f"{spread(r['fraction_of_peak'], 100)} %"] for name, r in results["roofline"]["models"].items()],
                 intro=f"Matmul GFLOP/s: {measured}; the ceiling is {peak['library']}'s. FLOPs are counted "
                       "per training step (forward and backward) by `pipeline/training/flops.py`.")
