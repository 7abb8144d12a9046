"""(c3) unrolled: a segmented forecaster's encoder exported as T explicit steps of MatMuls (time
axis fixed) against the exported fused LSTM/GRU node: onnxruntime CPU latency, speed-up over
PyTorch and GFLOP/s at batch 1 and 64, beside the matmul peak."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import spread, summarise, table
from pipeline.config import Config
from pipeline.kinds.registry import kind_of


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


def measure(config: Config, task_name: str, model_name: str, repeats: int, timing_runs: dict[int, int]) -> dict:
    """A segmented forecaster (few recurrent steps, many series rows) as exported, one fused
    LSTM/GRU node, and unrolled, each timed against PyTorch eager the way validate times it,
    the two forms taking turns `repeats` times, with the arithmetic rate of each."""
    from pipeline.training.checkpoints import load_trained
    from pipeline.latency import LATENCY_BATCHES, latency_report
    from pipeline.onnx_files import export_onnx
    from pipeline.deploy.sessions import PROVIDERS, open_workloads

    trained = load_trained(config, task_name, model_name)
    model, kind, args, meta = trained.model.cpu(), kind_of(trained.head), trained.model_args["args"], trained.meta
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


def form_row(name: str, steps: int, form: str, f: dict) -> str:
    """One row of table (c3): one form of one model."""
    return (f"| {name} | {steps} | {form} | {f['max_abs_diff']:.1e} | "
            f"{spread(f['latency_ms_b1_p50'], digits=2)} | {spread(f['speedup_vs_torch_b1'], digits=2)}× | "
            f"{spread(f['latency_ms_b64_p50'], digits=2)} | {spread(f['torch_latency_ms_b64_p50'], digits=2)} | "
            f"{spread(f['speedup_vs_torch_b64'], digits=2)}× | {spread(f['gflop_per_s_b64'], digits=0)} |")


def render(results: dict) -> list[str]:
    peak = results["unrolled"]["peak"]
    # The rows are written out: a skipped model's row leaves its cells bare ("| |"), which
    # table() would pad.
    lines = table("## (c3) A short recurrence unrolled: fused LSTM/GRU node against T steps of MatMuls (CPU)",
                  ["model", "steps", "form", "max abs diff", "b1 p50 ms", "speed-up b1", "b64 p50 ms",
                   "torch b64 ms", "speed-up b64", "GFLOP/s b64"], [],
                  intro=f"The same trained forecaster, onnxruntime fp32 on the CPU, each form timed against PyTorch "
                        f"eager as validate times it, the two taking turns. GFLOP/s: PyTorch's count of one forward "
                        f"pass over the p50 latency; the fastest {peak['n']}² fp32 matmul here: "
                        f"{peak['flop_per_s']['median'] / 1e9:.0f} GFLOP/s ({peak['library']}).")
    for name, r in results["unrolled"]["models"].items():
        if "fused" not in r:
            lines.append(f"| {name} | | {r['reason']} |" + " |" * 7)
            continue
        lines += [form_row(name, r["steps"], form, r[form]) for form in ("fused", "unrolled")]
    return lines
