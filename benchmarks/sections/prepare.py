"""(e) prepare: throughput of each task's prepare step, in the unit its data card counts
(IMDB texts/s, ETTh1 rows/s, Tiny Shakespeare chars/s)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import spread, stats, table
from pipeline.config import Config


def measure(config: Config, tasks: list[str], repeats: int) -> dict:
    from pipeline.data.registry import data_kind

    result = {}
    for task_name in tasks:
        task = config.task[task_name]
        preparer = data_kind(task.data)
        seconds, card = [], {}
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(repeats):
                start = time.perf_counter()
                card = preparer.prepare(task.paths.raw, task.prepare, Path(tmp) / str(i))
                seconds.append(time.perf_counter() - start)
        unit, count = preparer.items(card)   # what the kind's data card counts
        result[task_name] = {"unit": unit, "count": count, "seconds": stats(seconds),
                             f"{unit}_per_s": stats([count / s for s in seconds])}
    return result


def render(results: dict) -> list[str]:
    return table("## (e) Prepare", ["task", "items", "seconds", "items/s"],
                 [[name, f"{r['count']} {r['unit']}", spread(r["seconds"], digits=2),
                   spread(r[r["unit"] + "_per_s"], digits=0)] for name, r in results["prepare"].items()])
