"""(a2) peephole: training samples/s of the peephole LSTM against nn.LSTM, same settings, same
batches, bare loop; the ratio's target is >= 0.5."""

from __future__ import annotations

import torch

from benchmarks.common import ratio, ratio_fields, spread, stats, table
from benchmarks.training import first_batches, model_for, timed_bare_loop
from pipeline.config import Config
from pipeline.training.distributed import uses_bf16
from pipeline.kinds.registry import kind_of

PEEPHOLE_RATIO_TARGET = 0.5


def measure(config: Config, task_name: str, device: torch.device, repeats: int, n_batches: int) -> dict:
    """Training throughput of the peephole LSTM against nn.LSTM: the task's LSTM settings with
    one cell and then the other, the bare loop over the same batches, alternating."""
    task = config.task[task_name]
    data, batches = first_batches(config, task_name, n_batches)
    reference = next(name for name, model in config.model.items() if model.cell == "lstm")
    initial, model_args = model_for(config, task_name, reference, data.meta)
    loss_fn = kind_of(task.head).loss()
    autocast = uses_bf16(config.precision_of(task_name), device)

    def timed(cell: str) -> float:
        torch.manual_seed(config.seed)
        model = kind_of(task.head).build({**model_args["args"], "cell": cell}).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
        return timed_bare_loop(model, optimizer, batches, loss_fn, device, autocast)

    timed("lstm"), timed("lstm_peephole")  # warm-up, and TorchScript's profiling runs
    seconds = {"lstm": [], "lstm_peephole": []}
    for repeat in range(repeats):
        for cell in (("lstm", "lstm_peephole") if repeat % 2 == 0 else ("lstm_peephole", "lstm")):
            seconds[cell].append(timed(cell))
    samples = sum(len(inputs) for inputs, _ in batches)
    result = {"batches": len(batches), "batch_size": task.train.batch_size, "samples": samples,
              "shape": list(batches[0][0].shape)}
    for cell, values in seconds.items():
        result[cell] = {"seconds": stats(values), "samples_per_s": stats([samples / v for v in values])}
    ratios = [lstm / peephole for lstm, peephole in zip(seconds["lstm"], seconds["lstm_peephole"])]
    return {**result, **ratio_fields("peephole_to_lstm", ratios, PEEPHOLE_RATIO_TARGET)}


def render(results: dict) -> list[str]:
    return table("## (a2) Training throughput: the peephole LSTM against nn.LSTM (bare loop, same batches)",
                 ["task", "batches × shape", "nn.LSTM samples/s", "peephole samples/s",
                  "ratio peephole/LSTM (≥ 0.5)"],
                 [[name, f"{r['batches']} × {r['shape']}", spread(r["lstm"]["samples_per_s"]),
                   spread(r["lstm_peephole"]["samples_per_s"]), ratio(r, "ratio_peephole_to_lstm")]
                  for name, r in results["peephole"].items()])
