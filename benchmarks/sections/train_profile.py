"""(c4) train-profile: where one training step's time goes, from torch.profiler over the training
step that pipeline.training.epochs runs (forward under the task's autocast, loss, backward,
gradient clipping and AdamW), on the batches the run trains on: the share of each phase, the
aten ops that take the most self time, and how much of each batch is padding."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.common import table
from benchmarks.training import first_batches, model_for
from pipeline.config import Config
from pipeline.kinds.registry import kind_of
from pipeline.training.distributed import uses_bf16

PHASES = ("forward", "loss", "backward", "clip", "optimizer")
WARMUP = 2      # batches before the profiled ones (allocator, kernels' first calls)
OPS_SHOWN = 4   # aten ops per row


def profiled_steps(model, optimizer, batches, loss_fn, device, grad_clip: float, autocast: bool):
    """torch.profiler's averages over the training steps of `batches`, each phase a labelled range."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    model.train()
    with profile(activities=activities) as prof:
        for inputs, target in batches:
            inputs, target = inputs.to(device), target.to(device)
            with record_function("forward"), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                outputs = model(inputs)
            with record_function("loss"):
                loss = loss_fn(outputs.float(), target)
            with record_function("backward"):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            with record_function("clip"):
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            with record_function("optimizer"):
                optimizer.step()
    return prof.key_averages()


def measure(config: Config, task_name: str, model_name: str, device: torch.device, n_batches: int) -> dict:
    task = config.task[task_name]
    kind = kind_of(task.head)
    data, batches = first_batches(config, task_name, n_batches + WARMUP)
    model, model_args = model_for(config, task_name, model_name, data.meta)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    loss_fn, autocast = kind.loss(), uses_bf16(config.precision_of(task_name), device)
    profiled_steps(model, optimizer, batches[:WARMUP], loss_fn, device, config.train.grad_clip, autocast)
    timed = batches[WARMUP:]
    events = profiled_steps(model, optimizer, timed, loss_fn, device, config.train.grad_clip, autocast)
    phases = {e.key: e.cpu_time_total / 1000.0 / len(timed) for e in events if e.key in PHASES}
    ops = {e.key: e.self_cpu_time_total / 1000.0 / len(timed) for e in events
           if e.key.startswith("aten::") and e.self_cpu_time_total > 0}
    cells = sum(inputs.shape[0] * inputs.shape[1] for inputs, _ in timed)
    valid = sum(kind.train_work(inputs, model_args["args"], data.meta)[0] for inputs, _ in timed)
    total = sum(phases.values())
    return {"batches": len(timed), "shape": list(timed[0][0].shape), "autocast_bf16": autocast,
            "ms_per_step": total, "phases": {k: {"ms": v, "share": v / total} for k, v in phases.items()},
            "top_ops": [{"op": op, "ms": ms, "share": ms / total}
                        for op, ms in sorted(ops.items(), key=lambda item: -item[1])[:OPS_SHOWN]],
            "padding_share": 1.0 - valid / cells}


def render(results: dict) -> list[str]:
    rows = []
    for name, found in results["train-profile"].items():
        phases = ", ".join(f"{k} {v['share']:.0%}" for k, v in found["phases"].items())
        ops = ", ".join(f"{o['op'][len('aten::'):]} {o['share']:.0%}" for o in found["top_ops"])
        rows.append([name, f"{found['batches']} × {found['shape']}" + (" bf16" if found["autocast_bf16"] else ""),
                     f"{found['ms_per_step']:.1f}", phases, ops, f"{found['padding_share']:.0%}"])
    return table("## (c4) Where a training step's time goes (torch.profiler)",
                 ["run", "batches × first shape", "ms / step", "phases", "top aten ops (self time)", "padding"],
                 rows, intro="The training step of pipeline.training.epochs, phase by phase (share of the "
                             "step), over the first batches of epoch 1 after two warm-up steps; an op's share "
                             "is its self time over the step's. Padding: the share of the batches' token "
                             "positions that are padding (0 where the kind has none).")
