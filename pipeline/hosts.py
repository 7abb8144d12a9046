"""Which kind of host a figure comes from: the same code and seed give other timings, and
slightly other results, on another CPU (fp32 kernels sum in other orders). The benchmarks
name their results files after it, and each training run records it (metrics/train)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def cpu_field(field: str, default: str = "") -> str:
    """One field of /proc/cpuinfo (the first core's), or `default` where there is none."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":")[0].strip() == field), default)


# CPU vendors by /proc/cpuinfo's vendor_id: the same core count and architecture can be an AMD
# EPYC one session and an Intel Xeon the next, several times apart in speed.
VENDORS = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}
# One vendor spans generations too: a 2-core EPYC with AVX-512 and bf16 and one with AVX2 only
# trained Tiny Shakespeare 2.5x apart. The widest vector extension the CPU reports (its
# /proc/cpuinfo flags, widest first) names the generation.
SIMD_LEVELS = (("amx_tile", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))


def simd_level(flags: str) -> str:
    present = set(flags.split())
    return next((level for flag, level in SIMD_LEVELS if flag in present), "")


def host_kind(device=None) -> str:
    """cuda-<gpu name> or cpu-<vendor>-<simd>-<cores>core-<arch>: the name of the results file."""
    if device is not None and device.type == "cuda":
        import torch

        name = f"cuda-{torch.cuda.get_device_name(device)}"
    else:
        vendor_id = cpu_field("vendor_id")
        vendor = VENDORS.get(vendor_id, vendor_id or "unknown")
        simd = simd_level(cpu_field("flags"))
        name = f"cpu-{vendor}-{simd + '-' if simd else ''}{os.cpu_count()}core-{platform.machine()}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
