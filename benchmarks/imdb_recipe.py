"""The study behind IMDB's training recipe (docs/results.md, "How IMDB's recipe was chosen"):
candidate settings, each trained by the normal stages on the prepared IMDB data, compared on
validation only (`best/val/acc`, the epoch chosen on it too) and by training seconds. The train
stage also scores test at its end; the study does not record it: the test split is read once,
by the committed run of the chosen recipe.

    python -m benchmarks.imdb_recipe --out /tmp/imdb-recipe [--only NAME ...]   # in a scratch clone

It writes params.yaml and, for a candidate that changes prepare, data/prepared/imdb in the
working tree it runs in, so run it in a clone of its own, after `dvc repro` (or with the
prepared IMDB data and its word2vec vectors copied in), never in the working tree of a
`dvc repro`. The host should be otherwise idle: training seconds are compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# The recipe before the study: the first 400 tokens of a review, batches of 64 at lr 2e-3.
BATCH_64 = ["++task.imdb.train.batch_size=64", "++task.imdb.train.lr=0.002"]
BEFORE = ["++task.imdb.prepare.max_len=400", *BATCH_64]
BATCH_128 = ["++task.imdb.train.batch_size=128", "++task.imdb.train.lr=0.003"]
CHOSEN = "max_len 600, batch 128, lr 3e-3"   # conf/task/imdb.yaml's recipe
CANDIDATES = {   # name -> (model, overrides of `python -m pipeline.config`, on top of conf/)
    "recipe before (max_len 400, 3 epochs, batch 64, lr 2e-3)": ("lstm", BEFORE),
    "recipe before, GRU": ("gru", BEFORE),
    "4 epochs": ("lstm", [*BEFORE, "++task.imdb.train.epochs=4"]),
    "batch 128, lr 3e-3": ("lstm", [*BEFORE, *BATCH_128]),
    "batch 128, lr 3e-3, GRU": ("gru", [*BEFORE, *BATCH_128]),
    "keep the end (truncation_side left)": ("lstm", [*BEFORE, "++task.imdb.prepare.truncation_side=left"]),
    "max_len 600": ("lstm", BATCH_64),
    "max_len 600, GRU": ("gru", BATCH_64),
    # At 600 tokens the GRU took 568 s in the committed run (410 s before at 400): it has no fused
    # CPU kernel, and a probe found larger batches speed its step-by-step kernels up.
    f"{CHOSEN} (chosen: conf/task/imdb.yaml)": ("lstm", []),
    f"{CHOSEN}, GRU (chosen)": ("gru", []),
    # Regularisation, the vocabulary and the embedding, on top of the chosen recipe.
    f"{CHOSEN}, dropout 0.5, embedding dropout 0.5": ("lstm", ["model.lstm.classifier.dropout=0.5",
                                                    "model.lstm.classifier.embedding_dropout=0.5"]),
    f"{CHOSEN}, weight decay 0.1": ("lstm", ["train.weight_decay=0.1"]),
    f"{CHOSEN}, vocabulary 60k": ("lstm", ["++task.imdb.prepare.vocab_size=60000"]),
    f"{CHOSEN}, embedding 256": ("lstm", ["++task.imdb.embeddings.dim=256", "model.lstm.classifier.embedding_dim=256"]),
}


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def trial(model: str, overrides: list[str]) -> dict:
    """Configure, prepare and embed where the candidate changes them, train one model; its
    validation figures and seconds."""
    run([sys.executable, "-m", "pipeline.config", "tracking.enabled=false", *overrides])
    changes_prepare = any(".prepare." in o or ".embeddings." in o for o in overrides)
    marker = Path("data/prepared/imdb/.candidate")   # the prepared data is a candidate's, not the recipe's
    if changes_prepare or marker.exists():
        run([sys.executable, "-m", "pipeline.stages.prepare", "imdb"])
        run([sys.executable, "-m", "pipeline.stages.embed", "imdb"])   # the vectors follow the vocabulary
        if changes_prepare:
            marker.write_text(" ".join(overrides))
        else:
            marker.unlink()
    run([sys.executable, "-m", "pipeline.stages.train", "imdb", model])
    metrics = json.loads(Path(f"metrics/train/imdb-{model}.json").read_text())
    return {k: metrics[k] for k in ("best/val/acc", "best/epoch", "epochs", "train/seconds", "train/samples_per_s",
                                    "host")}


def table(results_file: Path) -> str:
    """Each candidate run: its model, validation accuracy, best epoch and training seconds."""
    lines = ["| candidate | model | best/val/acc | best epoch of | train s | samples/s |", "|---|---|---|---|---|---|"]
    for line in results_file.read_text().splitlines():
        r = json.loads(line)
        note = f" ({r['note']})" if "note" in r else ""
        lines.append(f"| {r['candidate']}{note} | {r['model'].upper()} | {r['best/val/acc']:.4f} | "
                     f"{r['best/epoch']} of {r['epochs']} | {r['train/seconds']:.0f} | {r['train/samples_per_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    parser.add_argument("--table", action="store_true", help="print the table of what --out holds, run nothing")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.out / "results.jsonl"))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (model, overrides) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        figures = trial(model, overrides)
        line = {"candidate": name, "model": model, "overrides": overrides, **figures,
                "wall_s": round(time.perf_counter() - start, 1)}
        with (args.out / "results.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
