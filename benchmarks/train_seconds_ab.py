"""Training seconds of two checkouts, interleaved on one host: which trains a task's model faster.

On a shared 2-core host the same training can take 355 s or 507 s an hour apart (docs/benchmarks.md,
"How IMDB's recipe was chosen"), so single runs on different days do not compare. This runs the
two checkouts' train stages in turn, A B B A A B ..., so that a drift of the host lands on both
alike, and reports each one's training seconds (the train stage's `train/seconds`: its epochs,
not its evaluation), with the ratio of the medians.

    python -m benchmarks.train_seconds_ab --a ../before --b ../after --task imdb \\
        --models lstm gru --repeats 2 --epochs 1 \\
        --out benchmarks/results/imdb-recipe/train-seconds-ab.jsonl

Each checkout must hold its task's prepared data already (after `dvc repro`, or its
`dvc repro embed@<task>`); its params.yaml is recomposed with MLflow off and the epochs given,
and its metrics/ and models/ of that task are overwritten: use scratch clones. The host should be
otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from pipeline.hosts import host_kind


def train_seconds(checkout: Path, task: str, model: str, epochs: int) -> float:
    """One training of `model` on `task` in `checkout`, with its own code and conf; its training
    seconds."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}   # the checkout's code, not an installed copy
    for command in ([sys.executable, "-m", "pipeline.config", "tracking.enabled=false",
                     f"++task.{task}.train.epochs={epochs}"],
                    [sys.executable, "-m", "pipeline.stages.train", task, model]):
        result = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{checkout}: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads((checkout / f"metrics/train/{task}-{model}.json").read_text())["train/seconds"]


def commit_of(checkout: Path) -> str:
    """The checkout's commit, short: what a result names instead of a machine's path."""
    return subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=checkout, capture_output=True, text=True,
                          check=True).stdout.strip()


def order(repeats: int) -> list[str]:
    """A B, B A, A B, ...: each checkout goes first as often as the other (for an even count)."""
    return [side for i in range(repeats) for side in (("a", "b") if i % 2 == 0 else ("b", "a"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the checkout before")
    parser.add_argument("--b", type=Path, required=True, help="the checkout after")
    parser.add_argument("--task", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSON Lines file to append to")
    args = parser.parse_args(argv)
    checkouts = {"a": args.a.resolve(), "b": args.b.resolve()}
    commits, host = {side: commit_of(path) for side, path in checkouts.items()}, host_kind()
    seconds: dict[tuple[str, str], list[float]] = {}
    for model in args.models:
        for side in order(args.repeats):
            s = train_seconds(checkouts[side], args.task, model, args.epochs)
            seconds.setdefault((model, side), []).append(s)
            line = {"task": args.task, "model": model, "side": side, "commit": commits[side],
                    "epochs": args.epochs, "train/seconds": s, "host": host}
            with args.out.open("a") as f:
                f.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)
    for model in args.models:
        a, b = seconds[(model, "a")], seconds[(model, "b")]
        print(f"{model}: a {statistics.median(a):.1f} s {a}, b {statistics.median(b):.1f} s {b}, "
              f"b/a {statistics.median(b) / statistics.median(a):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
