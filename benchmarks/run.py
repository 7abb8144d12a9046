"""One command that measures the pipeline side by side, on this machine:

    python -m benchmarks.run                 # after `dvc repro`; writes benchmarks/results/<host-kind>.{json,md}

(a) train      samples/s and tokens (or time steps)/s of pipeline.train's loop against a bare
               PyTorch loop, same model, same batches; the ratio must be >= 0.95
(a2) peephole  training samples/s of the peephole LSTM against nn.LSTM, same settings, same
               batches, bare loop; the ratio's target is >= 0.5
(b) roofline   the same throughput in FLOP/s, as a fraction of a large matmul measured in this run
(c) onnx       onnxruntime (CPU and CUDA providers), fp32 and INT8, against PyTorch eager: p50/p95
               latency and throughput at batch 1 and 64, and the speed-up targets
(c2) profile   the op types that take the time, from onnxruntime's profiler and torch.profiler
(c3) unrolled  a segmented forecaster's encoder exported as T explicit steps of MatMuls (time
               axis fixed) against the exported fused LSTM/GRU node: onnxruntime CPU latency,
               speed-up over PyTorch and GFLOP/s at batch 1 and 64, beside the matmul peak
(d) export     seconds of torch.onnx.export per model
(e) prepare    IMDB prepare throughput (reviews/s), ETTh1 rows/s
(f) repro      `dvc repro` wall time: full (a fresh clone of HEAD, empty cache) and no-op (all up
               to date; must be <= 5 s)
(g) serve      each task's champion behind `mlflow models serve` on 127.0.0.1: throughput and p50 /
               p95 / p99 under a bounded load from concurrent clients, and every over-limit or
               malformed request sent during it refused with its 4xx (benchmarks/serving_load.py)

Every figure is the median of --repeats runs, with min and max (and the runs' values). Sections
run in the order above; --only picks some, --runs some task-model runs, and --timing-runs the
timed calls behind each latency and profile figure (validate's 100 at batch 1 and 20 at batch 64
by default). The machine should be otherwise idle. A quick look:

    python -m benchmarks.run --runs imdb-lstm,etth1-gru --timing-runs 3 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.config import Config, load_config
from pipeline.datasets import load_task_data
from pipeline.distributed import pick_device, uses_bf16
from pipeline.files import read_json, write_json_atomic, write_text_atomic
from pipeline.flops import matmul_flops
from pipeline.hosts import cpu_field, host_kind
from pipeline.kinds import forecaster_spec
from pipeline.kinds.registry import KINDS, kind_of
from pipeline.latency import LATENCY_BATCHES
from pipeline.tracking import git_tags

SECTIONS = ("train", "peephole", "roofline", "onnx", "profile", "unrolled", "export", "prepare", "repro-full", "repro-noop",
            "serve")
TRAIN_RATIO_TARGET = 0.95
NOOP_TARGET_S = 5.0


def stats(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
            "n": len(values), "values": [float(v) for v in values]}


def verdict(values: list[float], target: float, higher_is_better: bool = True) -> dict:
    """The figures' stats, the target, and whether their median meets it."""
    median = float(np.median(values))
    return {"stats": stats(values), "target": target,
            "met": bool(median >= target if higher_is_better else median <= target)}


def host_info(device: torch.device) -> dict:
    import onnxruntime

    info = {"cpu": cpu_field("model name", platform.processor()), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- (a) and (b): training throughput and its roofline -----------------------------------


def bare_loop(model, batches, optimizer, loss_fn, device) -> None:
    """What a minimal PyTorch training loop does: forward, loss, backward, step."""
    model.train()
    for inputs, target in batches:
        inputs, target = inputs.to(device), target.to(device)
        loss = loss_fn(model(inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def timed_bare_loop(model, optimizer, batches, loss_fn, device: torch.device, autocast: bool) -> float:
    """Seconds of the bare loop over `batches`, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        bare_loop(model, batches, optimizer, loss_fn, device)
    synchronize(device)
    return time.perf_counter() - start


def model_for(config: Config, task_name: str, model_name: str, meta: dict) -> tuple[nn.Module, dict]:
    task, model = config.task[task_name], config.model[model_name]
    kind = kind_of(task.head)
    spec = kind.model_args(model.settings(task.head), model.cell, meta, (task_name, model_name))
    torch.manual_seed(config.seed)
    return kind.build(spec["args"]), spec


def batch_work(kind, args: dict, meta: dict, batches) -> dict:
    """Samples, time steps (the kind's `step_unit`: valid tokens for IMDB) and training FLOPs of a list of batches."""
    samples = steps = flops = 0
    for inputs, _ in batches:
        samples += len(inputs)
        batch_steps, batch_flops = kind.train_work(inputs, args, meta)
        steps, flops = steps + batch_steps, flops + batch_flops
    return {"samples": samples, "steps": steps, "flops": flops}


def bench_train(config: Config, task_name: str, model_name: str, device: torch.device, repeats: int,
                n_batches: int) -> dict:
    """Our loop (pipeline.train.train_epoch over its DataLoader) against the bare loop over the
    same batches, alternating, each from the same initial weights."""
    from pipeline.epochs import train_epoch

    task = config.task[task_name]
    data = load_task_data(task.kind, task.paths.prepared, task.train, config.seed, config.train.num_workers)
    data.train.batch_sampler.set_epoch(1)
    n_batches = min(n_batches, len(data.train))
    batches = list(itertools.islice(data.train, n_batches))
    initial, spec = model_for(config, task_name, model_name, data.meta)
    loss_fn = kind_of(task.head).loss()
    autocast = uses_bf16(config.precision_of(task_name), device)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = copy.deepcopy(initial).to(device)
        return model, torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)

    def ours() -> float:
        model, optimizer = fresh()
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.train.lr,
                                                        total_steps=n_batches + 1)
        synchronize(device)
        start = time.perf_counter()
        train_epoch(model, itertools.islice(data.train, n_batches), optimizer, scheduler, loss_fn, device,
                    config.train.grad_clip, autocast, "benchmark", show_progress=False)
        synchronize(device)
        return time.perf_counter() - start

    def bare() -> float:
        return timed_bare_loop(*fresh(), batches, loss_fn, device, autocast)

    work = batch_work(kind_of(task.head), spec["args"], data.meta, batches)
    ours(), bare()  # warm-up: allocator, oneDNN/cuDNN kernel selection
    seconds = {"ours": [], "bare": []}
    for repeat in range(repeats):  # alternate which goes first, so drift favours neither
        order = (("ours", ours), ("bare", bare)) if repeat % 2 == 0 else (("bare", bare), ("ours", ours))
        for loop, measure in order:
            seconds[loop].append(measure())
    result = {"batches": n_batches, "batch_size": task.train.batch_size, **work,
              "step_unit": kind_of(task.head).step_unit}
    for loop, values in seconds.items():
        result[loop] = {"seconds": stats(values),
                        "samples_per_s": stats([work["samples"] / s for s in values]),
                        "steps_per_s": stats([work["steps"] / s for s in values]),
                        "flop_per_s": stats([work["flops"] / s for s in values])}
    ratios = [b / o for o, b in zip(seconds["ours"], seconds["bare"])]  # throughput ours / bare
    ratio = verdict(ratios, TRAIN_RATIO_TARGET)
    result.update(ratio_ours_to_bare=ratio["stats"], ratio_target=ratio["target"], ratio_met=ratio["met"])
    return result


# ---- (a2) the peephole cell against nn.LSTM ---------------------------------------------------


PEEPHOLE_RATIO_TARGET = 0.5


def bench_peephole(config: Config, task_name: str, device: torch.device, repeats: int, n_batches: int) -> dict:
    """Training throughput of the peephole LSTM against nn.LSTM: the task's LSTM settings with
    one cell and then the other, the bare loop over the same batches, alternating."""
    task = config.task[task_name]
    data = load_task_data(task.kind, task.paths.prepared, task.train, config.seed, config.train.num_workers)
    data.train.batch_sampler.set_epoch(1)
    batches = list(itertools.islice(data.train, min(n_batches, len(data.train))))
    reference = next(name for name, model in config.model.items() if model.cell == "lstm")
    initial, spec = model_for(config, task_name, reference, data.meta)
    loss_fn = kind_of(task.head).loss()
    autocast = uses_bf16(config.precision_of(task_name), device)

    def measure(cell: str) -> float:
        torch.manual_seed(config.seed)
        model = kind_of(task.head).build({**spec["args"], "cell": cell}).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
        return timed_bare_loop(model, optimizer, batches, loss_fn, device, autocast)

    measure("lstm"), measure("lstm_peephole")  # warm-up, and TorchScript's profiling runs
    seconds = {"lstm": [], "lstm_peephole": []}
    for repeat in range(repeats):
        for cell in (("lstm", "lstm_peephole") if repeat % 2 == 0 else ("lstm_peephole", "lstm")):
            seconds[cell].append(measure(cell))
    samples = sum(len(inputs) for inputs, _ in batches)
    result = {"batches": len(batches), "batch_size": task.train.batch_size, "samples": samples,
              "shape": list(batches[0][0].shape)}
    for cell, values in seconds.items():
        result[cell] = {"seconds": stats(values), "samples_per_s": stats([samples / v for v in values])}
    ratios = [lstm / peephole for lstm, peephole in zip(seconds["lstm"], seconds["lstm_peephole"])]
    ratio = verdict(ratios, PEEPHOLE_RATIO_TARGET)
    result.update(ratio_peephole_to_lstm=ratio["stats"], ratio_target=ratio["target"], ratio_met=ratio["met"])
    return result


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


def roofline(train: dict, peak: dict) -> dict:
    """Each model's training FLOP/s (median, min, max over the repeats) over the median ceiling."""
    ceiling = peak["flop_per_s"]["median"]
    return {"peak": peak, "models": {
        name: {"flop_per_token_position": None if r["steps"] == 0 else r["flops"] / r["steps"],
               "ours_flop_per_s": r["ours"]["flop_per_s"]["median"],
               "fraction_of_peak": {key: r["ours"]["flop_per_s"][key] / ceiling for key in ("median", "min", "max")}
               | {"n": r["ours"]["flop_per_s"]["n"]}}
        for name, r in train.items()}}


# ---- (c) onnxruntime against PyTorch, (d) export -----------------------------------------


# Issue 14's targets, as speed-ups of onnxruntime's median over PyTorch eager's at batch 1 and
# 64: every fp32 model >= 1.2x (none slower than PyTorch), and the INT8 LSTM models >= 2x
# (onnxruntime has no quantised GRU kernel, so an INT8 GRU keeps fp32 recurrences).
ONNX_TARGETS = {"fp32": 1.2, "int8": 2.0}


def onnx_target(variant: str, cell: str) -> float | None:
    return ONNX_TARGETS[variant] if variant == "fp32" or cell != "gru" else None


def with_targets(result: dict, target: float | None) -> dict:
    """`result` plus its target and, per timed batch, whether the median speed-up meets it."""
    from pipeline.latency import LATENCY_BATCHES

    met = {f"target_met_b{b}": target is None or verdict(result[f"speedup_vs_torch_b{b}"]["values"], target)["met"]
           for b in LATENCY_BATCHES}
    return {**result, "target": target, **met}


def bench_onnx(config: Config, task_name: str, model_name: str, repeats: int, timing_runs: dict[int, int]) -> dict:
    """Per provider: the fp32 model and (where export wrote it) the INT8 model beside it, each
    timed against the same PyTorch eager runs; their speed-ups and the targets."""
    from pipeline.checkpoints import load_trained
    from pipeline.latency import LATENCY_BATCHES, latency_report, onnx_latency
    from pipeline.layout import int8_model
    from pipeline.sessions import PROVIDERS, open_workloads

    trained = load_trained(config, task_name, model_name)
    model, kind, args, meta = trained.model, kind_of(trained.head), trained.spec["args"], trained.meta
    int8_path = int8_model(trained.paths.onnx_model)
    result = {}
    for key, provider in PROVIDERS.items():
        # the sessions validate times: batch 1 with export.session.latency, 64 with .throughput
        sessions, reason = open_workloads(trained.paths.onnx_model, provider, config.export.session)
        if sessions is None:
            result[key] = {"status": "unavailable", "reason": reason}
            continue
        int8_sessions = open_workloads(int8_path, provider, config.export.session)[0] if int8_path.is_file() else None
        device = pick_device("auto" if key == "cuda" else "cpu")   # PyTorch on the provider's kind of device
        fp32_runs, int8_runs = [], []
        for _ in range(repeats):  # INT8 right after fp32, against the same PyTorch timings
            fp32 = latency_report(sessions, model.to(device), kind, args, meta, device, timing_runs)
            fp32_runs.append(fp32)
            if int8_sessions is not None:
                int8 = onnx_latency(int8_sessions, kind, args, meta, timing_runs)
                int8_runs.append({**int8, **{f"speedup_vs_torch_b{b}": fp32[f"torch_latency_ms_b{b}_p50"]
                                             / int8[f"latency_ms_b{b}_p50"] for b in LATENCY_BATCHES}})
        result[key] = {"status": "ok", "torch_device": device.type,
                       **with_targets(summarise(fp32_runs), onnx_target("fp32", args["cell"]))}
        if int8_runs:
            result[key]["int8"] = {"bytes": int8_path.stat().st_size,
                                   **with_targets(summarise(int8_runs), onnx_target("int8", args["cell"]))}
    return result


def summarise(runs: list[dict]) -> dict:
    return {metric: stats([run[metric] for run in runs]) for metric in runs[0]}


# ---- (c2) where the time goes: onnxruntime's profiler and PyTorch's ---------------------------

PROFILE_TOP = 3  # op types per row


def onnx_profile(path: Path, settings: dict, x: np.ndarray, runs: int, warmup: int = 3) -> dict[str, float]:
    """ms per run spent in each op type, from onnxruntime's own profiler (SessionOptions.
    enable_profiling): the kernel time of every node, over `runs` runs after `warmup`."""
    import onnxruntime as ort

    from pipeline.sessions import session_options

    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(settings)
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    timed_from = run_starts[warmup]
    per_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= timed_from:
            op = event["args"]["op_name"]
            per_op[op] = per_op.get(op, 0.0) + event["dur"] / 1000.0 / runs
    return per_op


def torch_profile(model: nn.Module, x: torch.Tensor, runs: int, warmup: int = 3) -> dict[str, float]:
    """ms per run of self CPU time per aten op, from torch.profiler, in eager inference."""
    from torch.profiler import ProfilerActivity, profile

    model.eval()
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    return {event.key: event.self_cpu_time_total / 1000.0 / runs for event in prof.key_averages()
            if event.self_cpu_time_total > 0}


def top_ops(per_op: dict[str, float]) -> list[dict]:
    total = sum(per_op.values())
    ranked = sorted(per_op.items(), key=lambda item: -item[1])[:PROFILE_TOP]
    return [{"op": op, "ms": ms, "share": ms / total} for op, ms in ranked]


def bench_profile(config: Config, task_name: str, model_name: str, timing_runs: dict[int, int]) -> dict:
    """On the CPU, at the two timed batches: the op types that take the time in the fp32 and
    INT8 onnxruntime models and in PyTorch eager (the evidence behind a missed target)."""
    from pipeline.checkpoints import load_trained
    from pipeline.latency import LATENCY_BATCHES, WORKLOAD_OF_BATCH
    from pipeline.layout import int8_model

    trained = load_trained(config, task_name, model_name)
    model, kind, args, meta = trained.model.cpu(), kind_of(trained.head), trained.spec["args"], trained.meta
    variants = {"fp32": trained.paths.onnx_model, "int8": int8_model(trained.paths.onnx_model)}
    result = {}
    for batch in LATENCY_BATCHES:
        x = kind.latency_input(args, meta, batch)
        settings = getattr(config.export.session, WORKLOAD_OF_BATCH[batch]).model_dump()
        row = {"torch": torch_profile(model, torch.from_numpy(x), timing_runs[batch])}
        for variant, path in variants.items():
            if path.is_file():
                row[variant] = onnx_profile(path, settings, x, timing_runs[batch])
        result[f"b{batch}"] = {name: {"ms_total": sum(per_op.values()), "top": top_ops(per_op), "ops": per_op}
                               for name, per_op in row.items()}
    return result


class UnrolledForecaster(nn.Module):
    """The forecaster with its encoder as T explicit steps (`Forecaster.forward(unrolled=True)`):
    exported with its time axis fixed, the graph is MatMuls and gate arithmetic, not one node."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        return self.model(past, unrolled=True)


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """PyTorch's count of one forward pass (decomposed kernels, as `counted_train_flops` in the tests)."""
    from torch.utils.flop_counter import FlopCounterMode

    with warnings.catch_warnings():   # switching oneDNN off warns about Intel-GPU TF32, which is beside the point
        warnings.simplefilter("ignore", UserWarning)
        with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    return counter.get_total_flops()


def bench_unrolled(config: Config, task_name: str, model_name: str, repeats: int,
                   timing_runs: dict[int, int]) -> dict:
    """A segmented forecaster (few recurrent steps, many series rows) as exported, one fused
    LSTM/GRU node, and unrolled, each timed against PyTorch eager the way validate times it,
    the two forms taking turns `repeats` times, with the arithmetic rate of each."""
    from pipeline.checkpoints import load_trained
    from pipeline.latency import LATENCY_BATCHES, latency_report
    from pipeline.onnx_files import export_onnx
    from pipeline.sessions import PROVIDERS, open_workloads

    trained = load_trained(config, task_name, model_name)
    model, kind, args, meta = trained.model.cpu(), kind_of(trained.head), trained.spec["args"], trained.meta
    if not args.get("segment_len"):
        return {"status": "skipped", "reason": "not segmented: its recurrence is lookback steps long"}
    interface = kind.graph_interface(args, meta)
    fixed_time = {**interface, "dynamic_axes": {name: {0: "batch"} for name in interface["dynamic_axes"]}}
    flops = {b: forward_flops(model, torch.from_numpy(kind.latency_input(args, meta, b))) for b in LATENCY_BATCHES}
    inputs = [kind.latency_input(args, meta, b) for b in LATENCY_BATCHES]   # the lookback: the fixed axis
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        unrolled = Path(tmp) / "unrolled.onnx"
        export_onnx(UnrolledForecaster(model), fixed_time, unrolled, config.export.opset, False, {})
        forms = {}
        for form, path in (("fused", trained.paths.onnx_model), ("unrolled", unrolled)):
            sessions, reason = open_workloads(path, PROVIDERS["cpu"], config.export.session)
            if sessions is None:
                raise RuntimeError(f"{path}: {reason}")
            forms[form] = sessions
        runs = {form: [] for form in forms}
        for _ in range(repeats):
            for form, sessions in forms.items():
                report = latency_report(sessions, model, kind, args, meta, cpu, timing_runs)
                runs[form].append({**report, **{f"gflop_per_s_b{b}": flops[b] / report[f"latency_ms_b{b}_p50"] / 1e6
                                                for b in LATENCY_BATCHES}})
        return {"steps": meta["lookback"] // args["segment_len"], "forward_flops": flops,
                **{form: {**summarise(runs[form]),
                          "max_abs_diff": kind.max_abs_diff(forms[form]["throughput"], model, inputs, cpu)}
                   for form in forms}}


def bench_export(config: Config, task_name: str, model_name: str, repeats: int) -> dict:
    from pipeline.checkpoints import load_trained
    from pipeline.onnx_files import export_onnx

    trained = load_trained(config, task_name, model_name)
    kind = kind_of(trained.head)
    interface = kind.graph_interface(trained.spec["args"], trained.meta)
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            start = time.perf_counter()
            export_onnx(kind.export_module(trained.model), interface, Path(tmp) / "model.onnx", config.export.opset,
                        config.export.dynamo, {})
            seconds.append(time.perf_counter() - start)  # export plus check and save, as the stage does
    return {"seconds": stats(seconds)}


# ---- (e) prepare throughput ------------------------------------------------------------------


def bench_prepare(config: Config, tasks: list[str], repeats: int) -> dict:
    from pipeline.data import PREPARERS

    # What each kind's card counts: (unit, card -> count).
    units = {"imdb": ("reviews", lambda card: sum(s["count"] for s in card["splits"].values()) + card["unsup_count"]),
             "timeseries": ("rows", lambda card: card["rows"]),
             "charlm": ("chars", lambda card: sum(card["chars"].values()))}
    result = {}
    for task_name in tasks:
        task = config.task[task_name]
        preparer, (unit, counted) = PREPARERS[task.kind], units[task.kind]
        seconds, card = [], {}
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(repeats):
                start = time.perf_counter()
                card = preparer.prepare(task.paths.raw, task.prepare, Path(tmp) / str(i))
                seconds.append(time.perf_counter() - start)
        count = counted(card)
        result[task_name] = {"unit": unit, "count": count, "seconds": stats(seconds),
                             f"{unit}_per_s": stats([count / s for s in seconds])}
    return result


# ---- (f) dvc repro -----------------------------------------------------------------------------


def timed(command: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} in {cwd} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def repro_env() -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # each clone tracks into its own store
    if env.get("RB_OFFLINE_DIR"):  # the clone lives elsewhere: a relative mirror path would not resolve there
        env["RB_OFFLINE_DIR"] = str(Path(env["RB_OFFLINE_DIR"]).resolve())
    return env


def bench_repro_full(repeats: int) -> dict:
    """`dvc repro` of a fresh clone of HEAD with an empty DVC cache: every stage runs."""
    if not os.environ.get("RB_OFFLINE_DIR"):
        print("repro-full: RB_OFFLINE_DIR is not set, so fetch downloads the datasets", file=sys.stderr)
    seconds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "-q", str(Path.cwd()), str(clone)], check=True)
            seconds.append(timed(["dvc", "repro"], clone, repro_env()))
    return {"commit": git_tags()["git.commit"], "seconds": stats(seconds)}


def bench_repro_noop(repeats: int) -> dict:
    """`dvc repro` here, where everything is up to date: DVC's own overhead."""
    env = repro_env()
    status = subprocess.run(["dvc", "status", "--json"], env=env, capture_output=True, text=True, check=False)
    if status.returncode != 0 or json.loads(status.stdout or "{}"):
        raise RuntimeError(f"repro-noop needs an up-to-date pipeline; `dvc status` says: {status.stdout.strip()}"
                           f"{status.stderr.strip()}")
    seconds = [timed(["dvc", "repro"], Path.cwd(), env) for _ in range(repeats)]
    noop = verdict(seconds, NOOP_TARGET_S, higher_is_better=False)
    return {"seconds": noop["stats"], "target_s": noop["target"], "target_met": noop["met"]}


# ---- (g) serving under load ------------------------------------------------------------------------


def bench_serve(config: Config, tasks: list[str], requests_total: int, clients: int) -> dict:
    """Per task: its champion served (one worker, serve.timeout_s), under load_test's bounded load."""
    from benchmarks.serving_load import at_limit, load_test, served
    from pipeline.tracking import resolve_uri

    uri = resolve_uri(config.tracking)   # the servers run elsewhere: a relative SQLite path, made absolute
    limits, timeout_s = config.serve.limits.model_dump(), config.serve.timeout_s
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in tasks:
            head = config.task[name].head
            kind = kind_of(head).spec   # the requests are the kind's (pipeline/kinds/*_spec.py)
            window, longest = kind.request_material(config.task[name]), kind.longest_request(limits)
            with served(Path.cwd(), f"models:/{name}@champion", Path(tmp) / f"{name}.log", uri, timeout_s) as base:
                result[name] = {"head": head, "timeout_s": timeout_s,
                                **load_test(base, kind, limits, window, requests_total, clients, timeout_s)}
                if longest is not None:
                    result[name]["at_limit"] = at_limit(base, longest, timeout_s)
    return result


# ---- the table -----------------------------------------------------------------------------


def fmt(stat: dict, scale: float = 1.0, digits: int = 1) -> str:
    return f"{stat['median'] * scale:.{digits}f} ({stat['min'] * scale:.{digits}f}–{stat['max'] * scale:.{digits}f})"


def table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    return ["", title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def ratio(result: dict, key: str) -> str:
    """A ratio against its target, marked where the target is missed."""
    return fmt(result[key], digits=3) + ("" if result["ratio_met"] else " **missed**")


def onnx_row(name: str, label: str, r: dict, fp32: dict) -> str:
    """One row of table (c): `r`'s onnxruntime timings beside the PyTorch timings in `fp32`."""
    speedups = " / ".join(f"{r[f'speedup_vs_torch_b{b}']['median']:.2f}×"
                          + ("" if r[f"target_met_b{b}"] else " **missed**") for b in LATENCY_BATCHES)
    target = "no target" if r["target"] is None else f"≥ {r['target']:g}×"
    return (f"| {name} | {label} | {fmt(r['latency_ms_b1_p50'], digits=2)} | {fmt(r['latency_ms_b1_p95'], digits=2)} | "
            f"{fmt(fp32['torch_latency_ms_b1_p50'], digits=2)} | {fmt(r['latency_ms_b64_p50'], digits=2)} | "
            f"{fmt(r['latency_ms_b64_p95'], digits=2)} | {fmt(fp32['torch_latency_ms_b64_p50'], digits=2)} | "
            f"{fmt(r['throughput_b64'], digits=0)} | {speedups} ({target}) |")


def profiled_runs(results: dict) -> str:
    from pipeline.latency import REPEATS

    # Results from before --timing-runs carry no count: they were taken with validate's.
    timing_runs = {int(b): n for b, n in (results.get("timing_runs") or REPEATS).items()}
    counts = ", ".join(f"{runs} at batch {batch}" for batch, runs in timing_runs.items())
    return counts + (" (validate's)" if timing_runs == REPEATS else " (--timing-runs)")


def profile_cell(profile: dict) -> str:
    top = ", ".join(f"{t['op']} {t['ms']:.2f} ({t['share']:.0%})" for t in profile["top"])
    return f"{profile['ms_total']:.2f} ms: {top}"


def markdown(results: dict) -> str:
    host = results["host"]
    lines = [f"# Benchmarks: {results['host_kind']}",
             f"{host.get('gpu') or host['cpu']}; {host['cores']} cores, torch {host['torch']} "
             f"({host['torch_threads']} threads), onnxruntime {host['onnxruntime']}; commit "
             f"{results['commit'][:10]}; {results['date']}. Median (min–max) of {results['repeats']} runs."]
    if "train" in results:
        lines += table("## (a) Training throughput: pipeline loop against a bare PyTorch loop",
                       ["model", "batches", "ours samples/s", "bare samples/s", "ours steps/s",
                        "ratio ours/bare (≥ 0.95)"],
                       [[name, f"{r['batches']} × {r['batch_size']}", fmt(r["ours"]["samples_per_s"]),
                         fmt(r["bare"]["samples_per_s"]), f"{fmt(r['ours']['steps_per_s'], 1e-3)}k {r['step_unit']}",
                         ratio(r, "ratio_ours_to_bare")] for name, r in results["train"].items()])
    if "peephole" in results:
        lines += table("## (a2) Training throughput: the peephole LSTM against nn.LSTM (bare loop, same batches)",
                       ["task", "batches × shape", "nn.LSTM samples/s", "peephole samples/s",
                        "ratio peephole/LSTM (≥ 0.5)"],
                       [[name, f"{r['batches']} × {r['shape']}", fmt(r["lstm"]["samples_per_s"]),
                         fmt(r["lstm_peephole"]["samples_per_s"]), ratio(r, "ratio_peephole_to_lstm")]
                        for name, r in results["peephole"].items()])
    if "roofline" in results:
        peak = results["roofline"]["peak"]
        measured = ", ".join(f"{name} {fmt(value, 1e-9, 0)}" for name, value in peak["libraries"].items())
        lines += ["", f"## (b) Roofline: training FLOP/s against the fastest {peak['n']}² {peak['dtype']} matmul", "",
                  f"Matmul GFLOP/s: {measured}; the ceiling is {peak['library']}'s. FLOPs are counted "
                  "per training step (forward and backward) by `benchmarks/flops.py`.", "",
                  "| model | train FLOP per token (IMDB) or input step (ETTh1) | ours GFLOP/s | fraction of matmul peak |", "|---|---|---|---|"]
        for name, r in results["roofline"]["models"].items():
            lines.append(f"| {name} | {r['flop_per_token_position'] / 1e6:.2f} M | {r['ours_flop_per_s'] / 1e9:.1f} | "
                         f"{fmt(r['fraction_of_peak'], 100)} % |")
    if "onnx" in results:
        lines += ["", "## (c) onnxruntime against PyTorch eager (ms; throughput in samples/s)", "",
                  "Targets: fp32 ≥ 1.2× PyTorch eager at batch 1 and 64 for every model; INT8 ≥ 2× for the "
                  "LSTM models (an INT8 GRU has no target: onnxruntime has no quantised GRU kernel). "
                  "INT8 is timed right after fp32, against the same PyTorch runs.", "",
                  "| model | provider | b1 p50 | b1 p95 | torch b1 p50 | b64 p50 | b64 p95 | torch b64 p50 | "
                  "b64 samples/s | speed-up b1 / b64 (target) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, providers in results["onnx"].items():
            for key, r in providers.items():
                if r["status"] != "ok":  # onnxruntime's own reason, e.g. the CUDA library it could not load
                    reason = re.sub(r"/\S+/", "", r["reason"].split("]: ", 1)[-1]).replace("|", "/")
                    lines.append(f"| {name} | {key} | unavailable: {reason} |" + " |" * 7)
                    continue
                lines.append(onnx_row(name, key, r, r))
                if "int8" in r:
                    lines.append(onnx_row(name, f"{key} INT8 ({r['int8']['bytes'] / 1e6:.2f} MB)", r["int8"], r))
    if "profile" in results:
        lines += ["", "## (c2) Where the time goes (CPU; ms per run by op type, share of the op total)", "",
                  "onnxruntime's profiler (`SessionOptions.enable_profiling`: the kernel time of each node, "
                  "summed by op type) and torch.profiler (self CPU time per aten op), over the timed "
                  f"runs: {profiled_runs(results)}. The evidence behind each missed target above.",
                  "", "| model | batch | PyTorch eager | onnxruntime fp32 | onnxruntime INT8 |", "|---|---|---|---|---|"]
        for name, batches in results["profile"].items():
            for batch, row in batches.items():
                cells = [profile_cell(row[k]) if k in row else "" for k in ("torch", "fp32", "int8")]
                lines.append(f"| {name} | {batch} | " + " | ".join(cells) + " |")
    if "unrolled" in results:
        peak = results["unrolled"]["peak"]
        lines += ["", "## (c3) A short recurrence unrolled: fused LSTM/GRU node against T steps of MatMuls (CPU)", "",
                  f"The same trained forecaster, onnxruntime fp32 on the CPU, each form timed against PyTorch eager "
                  f"as validate times it, the two taking turns. GFLOP/s: PyTorch's count of one forward pass over "
                  f"the p50 latency; "
                  f"the fastest {peak['n']}² fp32 matmul here: {peak['flop_per_s']['median'] / 1e9:.0f} GFLOP/s "
                  f"({peak['library']}).", "",
                  "| model | steps | form | max abs diff | b1 p50 ms | speed-up b1 | b64 p50 ms | torch b64 ms | "
                  "speed-up b64 | GFLOP/s b64 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in results["unrolled"]["models"].items():
            if "fused" not in r:
                lines.append(f"| {name} | | {r['reason']} |" + " |" * 7)
                continue
            for form in ("fused", "unrolled"):
                f = r[form]
                lines.append(f"| {name} | {r['steps']} | {form} | {f['max_abs_diff']:.1e} | "
                             f"{fmt(f['latency_ms_b1_p50'], digits=2)} | {fmt(f['speedup_vs_torch_b1'], digits=2)}× | "
                             f"{fmt(f['latency_ms_b64_p50'], digits=2)} | {fmt(f['torch_latency_ms_b64_p50'], digits=2)} | "
                             f"{fmt(f['speedup_vs_torch_b64'], digits=2)}× | {fmt(f['gflop_per_s_b64'], digits=0)} |")
    if "export" in results:
        lines += ["", "## (d) ONNX export (s)", "", "| model | seconds |", "|---|---|"]
        lines += [f"| {name} | {fmt(r['seconds'], digits=3)} |" for name, r in results["export"].items()]
    if "prepare" in results:
        lines += ["", "## (e) Prepare", "", "| task | items | seconds | items/s |", "|---|---|---|---|"]
        for name, r in results["prepare"].items():
            lines.append(f"| {name} | {r['count']} {r['unit']} | {fmt(r['seconds'], digits=2)} | "
                         f"{fmt(r[r['unit'] + '_per_s'], digits=0)} |")
    if "repro-full" in results or "repro-noop" in results:
        lines += ["", "## (f) `dvc repro` wall time (s)", "", "| run | seconds |", "|---|---|"]
        if "repro-full" in results:
            lines.append(f"| full (fresh clone, empty cache) | {fmt(results['repro-full']['seconds'])} |")
        if "repro-noop" in results:
            r = results["repro-noop"]
            mark = "" if r["target_met"] else " **missed**"
            lines.append(f"| no-op (up to date; ≤ {r['target_s']:g} s) | {fmt(r['seconds'], digits=2)}{mark} |")
    if "serve" in results:
        lines += ["", "## (g) Serving under load (`mlflow models serve`, one worker, loopback)", "",
                  "One run per task: well-formed requests from concurrent clients (latency in ms, of the "
                  "answered ones); during the load, each over-limit and malformed request, which must get "
                  "its 4xx with the limit named.", "",
                  "| task | requests × clients | req/s | p50 | p95 | p99 | errors | refused as expected | "
                  "slowest refusal (ms) |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in results["serve"].items():
            refusals = r["refused"]
            ok = sum(v["ok"] for v in refusals.values())
            missed = [k for k, v in refusals.items() if not v["ok"]]
            lines.append(f"| {name} | {r['requests']} × {r['clients']} | {r['throughput_per_s']:.1f} | "
                         f"{r.get('p50_ms', float('nan')):.1f} | {r.get('p95_ms', float('nan')):.1f} | "
                         f"{r.get('p99_ms', float('nan')):.1f} | {r['errors']} | {ok} of {len(refusals)}"
                         + (f" (**not**: {', '.join(missed)})" if missed else "") + " | "
                         f"{max(v['seconds'] for v in refusals.values()) * 1000:.0f} |")
        for name, r in results["serve"].items():
            if "at_limit" in r:
                longest = r["at_limit"]
                lines.append(f"\n{name} at the generation limit: {longest['chars']:,} characters in "
                             f"{longest['seconds']:.1f} s (status {longest['status']}; the server's timeout is "
                             f"{longest['timeout_s']} s)" + ("" if longest["within_bound"] else " **over the bound**"))
    return "\n".join(lines) + "\n"


# ---- the command -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--repro-repeats", type=int, default=1,
                        help="full `dvc repro` runs (each is the whole pipeline; default 1)")
    parser.add_argument("--batches", type=int, default=40, help="training batches per timed run (default 40)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated among {', '.join(SECTIONS)}")
    parser.add_argument("--runs", help="comma-separated task-model runs to measure (default: every run in "
                                       "params.yaml), e.g. imdb-lstm,etth1-gru")
    parser.add_argument("--timing-runs", type=int, metavar="N",
                        help="timed calls per latency and profile figure at each batch (default: validate's, "
                             "100 at batch 1 and 20 at batch 64)")
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--serve-requests", type=int, default=200, help="serve: well-formed requests per task")
    parser.add_argument("--serve-clients", type=int, default=4, help="serve: concurrent clients")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: print (and rewrite the .md beside it) the table of a results file")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose among {list(SECTIONS)}")
    counts = {"--repeats": args.repeats, "--repro-repeats": args.repro_repeats, "--batches": args.batches,
              "--matmul-size": args.matmul_size, "--timing-runs": args.timing_runs,
              "--serve-requests": args.serve_requests, "--serve-clients": args.serve_clients}
    for flag, value in counts.items():
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1, found {value}")
    args.runs = None if args.runs is None else [r.strip() for r in args.runs.split(",") if r.strip()]
    return args


class UsageError(ValueError):
    """An argument that names nothing in params.yaml (exit status 2, as argparse's own errors)."""


def chosen_runs(config: Config, names: list[str] | None) -> dict:
    """{name: run} of params.yaml's runs, all of them or the named ones (in params.yaml's order)."""
    if names is None:
        return dict(config.runs)
    unknown = sorted(set(names) - set(config.runs))
    if unknown:
        raise UsageError(f"--runs: unknown run(s) {unknown}; params.yaml has {sorted(config.runs)}")
    return {name: run for name, run in config.runs.items() if name in names}


def run(args: argparse.Namespace) -> dict:
    from pipeline.latency import LATENCY_BATCHES, REPEATS

    config = load_config()
    device = pick_device(config.train.device)
    torch.use_deterministic_algorithms(config.train.deterministic, warn_only=True)
    runs = chosen_runs(config, args.runs)
    timing_runs = dict(REPEATS) if args.timing_runs is None else {b: args.timing_runs for b in LATENCY_BATCHES}
    results = {"host_kind": host_kind(device), "host": host_info(device), "commit": git_tags()["git.commit"],
               "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "repeats": args.repeats, "sections": args.only,
               "runs": list(runs), "timing_runs": timing_runs}
    tasks = list(dict.fromkeys(run.task for run in runs.values()))

    def each_model(function, *extra, heads=tuple(KINDS)):
        return {name: function(config, run.task, run.model, *extra) for name, run in runs.items()
                if run.head in heads}

    # The FLOP counts and batch latencies cover the kinds whose forward pass maps a batch to a
    # batch (classifier, forecaster); a generator's ms per character and prompt rate are measured
    # by its validate stage (metrics/onnx/).
    batch_heads = tuple(name for name, kind in KINDS.items() if kind.batched)

    steps = [
        ("train", lambda: each_model(bench_train, device, args.repeats, args.batches, heads=batch_heads)),
        ("peephole", lambda: {name: bench_peephole(config, name, device, args.repeats, args.batches)
                              for name in tasks if config.task[name].head in batch_heads}),
        ("roofline", lambda: roofline(results["train"] if "train" in results else
                                      each_model(bench_train, device, args.repeats, args.batches,
                                                 heads=batch_heads),
                                      matmul_peak(device, torch.bfloat16 if config.train.precision == "bf16"
                                                  and device.type == "cuda" else torch.float32,
                                                  args.repeats, args.matmul_size))),
        ("onnx", lambda: each_model(bench_onnx, args.repeats, timing_runs, heads=batch_heads)),
        ("profile", lambda: each_model(bench_profile, timing_runs, heads=batch_heads)),
        ("unrolled", lambda: {"peak": matmul_peak(torch.device("cpu"), torch.float32, args.repeats, args.matmul_size),
                              "models": each_model(bench_unrolled, args.repeats, timing_runs,
                                                   heads=(forecaster_spec.NAME,))}),
        ("export", lambda: each_model(bench_export, args.repeats)),
        ("prepare", lambda: bench_prepare(config, tasks, args.repeats)),
        ("repro-full", lambda: bench_repro_full(args.repro_repeats)),
        ("repro-noop", lambda: bench_repro_noop(args.repeats)),
        ("serve", lambda: bench_serve(config, tasks, args.serve_requests, args.serve_clients)),
    ]
    for section, measure in steps:
        if section in args.only:
            start = time.perf_counter()
            print(f"benchmarks: {section} ...", file=sys.stderr, flush=True)
            results[section] = measure()
            print(f"benchmarks: {section} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        try:
            table = markdown(read_json(args.render))
        except (OSError, ValueError) as exc:
            print(f"benchmarks: --render {args.render}: {exc}", file=sys.stderr)
            return 2
        except KeyError as exc:
            print(f"benchmarks: --render {args.render}: missing key {exc}; is it a benchmarks/results file?",
                  file=sys.stderr)
            return 2
        write_text_atomic(args.render.with_suffix(".md"), table)
        print(table)
        return 0
    for needed in ("params.yaml", "dvc.yaml"):
        if not Path(needed).is_file():
            print(f"benchmarks: {needed} not found in {Path.cwd()}; run from the repository root", file=sys.stderr)
            return 2
    try:
        results = run(args)
    except UsageError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"benchmarks: {exc}\n(run `dvc repro` first: the benchmarks read its models and data)",
              file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, subprocess.SubprocessError) as exc:  # ConfigError is a ValueError
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 1
    table = markdown(results)
    stem = args.out / results["host_kind"]
    write_json_atomic(stem.with_suffix(".json"), results)
    write_text_atomic(stem.with_suffix(".md"), table)
    print(table)
    print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
