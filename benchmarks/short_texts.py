"""The study behind the labelled-texts defaults for short texts (docs/own-data.md, "How the
defaults were chosen"): sentence-length corpora of a few thousand examples, built from the data
the project already holds, each added as a task through conf/ alone and trained by the normal
stages under candidate settings. Settings are compared on validation only (`best/val/acc`, the
weights' epoch chosen on it too); the train stage also scores test at its end, and the table
shows it for the chosen settings only.

    python -m benchmarks.short_texts --data ../shared/data --out /tmp/short-texts   # in a scratch clone

It writes conf/task/<proxy>.yaml and params.yaml in the working tree it runs in, so run it in a
clone of its own (`git clone . ../study`), never in the working tree of a `dvc repro`.

The proxies:
- `sentences`: one sentence of 5-40 words from each of 8,000 aclImdb train reviews (balanced,
  seeded), labelled with its review's polarity, and 2,000 from test: the construction of
  Pang & Lee's sentence-polarity data (MR), on IMDB. Many sentences carry no sentiment, so the
  ceiling is well below the reviews'.
- `plays`: the speeches of 5-40 words in Tiny Shakespeare, labelled with their play (six plays,
  known by their speakers), 80/20 train/test by a seeded shuffle: six classes, a few thousand
  texts, topic rather than sentiment.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd

from pipeline.data import texts_settings
from pipeline.files import file_digest

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
BREAK = re.compile(r"<br\s*/?>")
WORDS = (5, 40)

# Tiny Shakespeare concatenates plays without titles; their speakers tell them apart.
PLAYS = {
    "coriolanus": ["CORIOLANUS", "MENENIUS", "SICINIUS", "BRUTUS", "VOLUMNIA", "COMINIUS", "AUFIDIUS"],
    "richard3": ["GLOUCESTER", "KING RICHARD III", "QUEEN ELIZABETH", "BUCKINGHAM", "QUEEN MARGARET",
                 "DUCHESS OF YORK", "CLARENCE", "HASTINGS", "STANLEY"],
    "measure": ["DUKE VINCENTIO", "ISABELLA", "LUCIO", "ANGELO", "ESCALUS", "POMPEY", "PROVOST"],
    "romeo": ["ROMEO", "JULIET", "Nurse", "CAPULET", "MERCUTIO", "FRIAR LAURENCE", "BENVOLIO",
              "LADY CAPULET"],
    "shrew": ["PETRUCHIO", "KATHARINA", "TRANIO", "BAPTISTA", "LUCENTIO", "HORTENSIO", "GRUMIO",
              "BIONDELLO", "GREMIO"],
    "winters": ["LEONTES", "PAULINA", "POLIXENES", "CAMILLO", "HERMIONE", "AUTOLYCUS", "Clown",
                "FLORIZEL", "PERDITA"],
}


def short(text: str) -> bool:
    return WORDS[0] <= len(text.split()) <= WORDS[1]


def review_sentences(archive: Path, split: str, count: int, seed: int) -> pd.DataFrame:
    """One short sentence per review, from `count` reviews of `split` (half of each polarity)."""
    pools: dict[str, list[str]] = {"neg": [], "pos": []}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] == split and parts[2] in pools:
                pools[parts[2]].append(tar.extractfile(member).read().decode("utf-8"))
    rng = random.Random(seed)
    rows = []
    for label, reviews in pools.items():
        rng.shuffle(reviews)
        kept = 0
        for review in reviews:
            sentences = [s for s in SENTENCE_END.split(BREAK.sub(" ", review)) if short(s)]
            if sentences:
                rows.append({"text": rng.choice(sentences).strip(), "label": label})
                kept += 1
            if kept == count // 2:
                break
    rng.shuffle(rows)
    return pd.DataFrame(rows)


def play_speeches(text_file: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    play_of = {speaker: play for play, speakers in PLAYS.items() for speaker in speakers}
    rows = []
    for block in text_file.read_text(encoding="utf-8").split("\n\n"):
        speaker, _, speech = block.strip().partition(":\n")
        speech = " ".join(speech.split())
        if speaker in play_of and short(speech):
            rows.append({"text": speech, "label": play_of[speaker]})
    random.Random(seed).shuffle(rows)
    cut = int(0.8 * len(rows))
    return pd.DataFrame(rows[:cut]), pd.DataFrame(rows[cut:])


def build(data: Path, out: Path) -> dict[str, dict[str, Path]]:
    """The proxies' CSV files, {proxy: {split: path}}."""
    files = {"sentences": {}, "plays": {}}
    frames = {
        "sentences": {"train": review_sentences(data / "aclImdb_v1.tar.gz", "train", 8000, seed=0),
                      "test": review_sentences(data / "aclImdb_v1.tar.gz", "test", 2000, seed=1)},
        "plays": dict(zip(("train", "test"), play_speeches(data / "tinyshakespeare.txt", seed=0))),
    }
    for proxy, splits in frames.items():
        for split, frame in splits.items():
            path = out / proxy / f"{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(path, index=False)
            files[proxy][split] = path
    return files


def task_yaml(files: dict[str, Path]) -> str:
    """A task file as a user would write it from docs/own-data.md."""
    source = {split: {"url": str(path.resolve()), "checksum": f"sha256:{file_digest(path)}"}
              for split, path in files.items()}
    task = {"data": texts_settings.NAME, "models": ["lstm", "gru"], "source": source,
            "prepare": {"read": {"format": "csv", "files": {s: p.name for s, p in files.items()}}},
            "train": {"epochs": 10, "batch_size": 32, "eval_batch_size": 256}}
    return json.dumps(task, indent=1)   # JSON is YAML


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def task_override(proxy: str, override: str) -> str:
    """`prepare.min_freq=1` -> `++task.<proxy>.prepare.min_freq=1`: set, whether the task file
    writes the key or leaves it to the schema's default."""
    return f"++task.{proxy}.{override}"


def trial(proxy: str, overrides: list[str], seed: int, models) -> dict[str, dict]:
    """Prepare and train one candidate; each model's train metrics."""
    run([sys.executable, "-m", "pipeline.config", f"+task@task.{proxy}={proxy}", "tracking.enabled=false",
         f"seed={seed}", *[task_override(proxy, o) for o in overrides]])
    for stage in ("fetch", "prepare"):
        run([sys.executable, "-m", f"pipeline.stages.{stage}", proxy])
    if any(o.startswith("embeddings") for o in overrides):
        run([sys.executable, "-m", "pipeline.stages.embed", proxy])
    figures = {}
    for model in models:
        start = time.perf_counter()
        run([sys.executable, "-m", "pipeline.stages.train", proxy, model])
        metrics = json.loads(Path(f"metrics/train/{proxy}-{model}.json").read_text())
        metrics["wall_s"] = round(time.perf_counter() - start, 1)
        figures[model] = metrics
    card = json.loads(Path(f"metrics/data/{proxy}.json").read_text())
    return {"models": figures, "card": {k: card[k] for k in ("max_len", "vocab_size") if k in card},
            "train_tokens": card["splits"]["train"]["tokens"], "oov": card["splits"]["val"]["oov_rate"]}


CANDIDATES = {   # name -> task overrides; the first is today's defaults
    "defaults (min_freq 2, max_len p95, vocab 30000)": [],
    "min_freq 1": ["prepare.min_freq=1"],
    "min_freq 3": ["prepare.min_freq=3"],
    "max_len p90": ["prepare.max_len=P90"],
    "max_len p99": ["prepare.max_len=P99"],
    "vocab 5000": ["prepare.vocab_size=5000"],
    "epochs 5": ["train.epochs=5"],
    "epochs 20": ["train.epochs=20"],
    "batch 64": ["train.batch_size=64"],
    "word2vec on train (embeddings)": ["embeddings={dim:128,window:5,epochs:10,skip_gram:false,seed:0}"],
}


def table(results_file: Path, proxies=("sentences", "plays"), models=("lstm", "gru")) -> str:
    """Per candidate, each proxy and model's best/val/acc (the mean over the seeds run, and their
    range where several), the defaults' test accuracy in the last row."""
    runs: dict[tuple, dict[int, float]] = {}
    tests: dict[tuple, dict[int, float]] = {}
    for line in results_file.read_text().splitlines():
        row = json.loads(line)
        for model, metrics in row["models"].items():
            runs.setdefault((row["candidate"], row["proxy"], model), {})[row["seed"]] = metrics["best/val/acc"]
            tests.setdefault((row["candidate"], row["proxy"], model), {})[row["seed"]] = metrics["test/acc"]

    def cell(values: dict[int, float]) -> str:
        if not values:
            return "–"
        mean = sum(values.values()) / len(values)
        spread = f" ({min(values.values()):.3f}–{max(values.values()):.3f}, {len(values)} seeds)" if len(values) > 1 else ""
        return f"{mean:.4f}{spread}"

    columns = [(p, m) for p in proxies for m in models]
    lines = ["| candidate | " + " | ".join(f"{p} {m.upper()}" for p, m in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for name in CANDIDATES:
        lines.append(f"| {name} | " + " | ".join(cell(runs.get((name, p, m), {})) for p, m in columns) + " |")
    defaults = next(iter(CANDIDATES))
    lines.append("| *test accuracy, defaults* | " + " | ".join(cell(tests.get((defaults, p, m), {})) for p, m in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    parser.add_argument("--proxies", nargs="*", default=["sentences", "plays"])
    parser.add_argument("--table", action="store_true", help="print the table of what --out holds, run nothing")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.out / "results.jsonl"))
        return 0
    files = build(args.data, args.out)
    results_file = args.out / "results.jsonl"
    for proxy in args.proxies:
        Path(f"conf/task/{proxy}.yaml").write_text(task_yaml(files[proxy]))
        percentiles = None
        for name, overrides in CANDIDATES.items():
            if args.only and name not in args.only:
                continue
            for seed in args.seeds:
                if percentiles is None:   # train's token lengths, prepared with the defaults
                    percentiles = trial(proxy, [], seed, [])["train_tokens"]
                concrete = [o.replace("P90", str(8 * -(-int(percentiles["p90"]) // 8)))
                             .replace("P99", str(8 * -(-int(percentiles["p99"]) // 8))) for o in overrides]
                figures = trial(proxy, concrete, seed, ["lstm", "gru"])
                line = {"proxy": proxy, "candidate": name, "overrides": concrete, "seed": seed, **figures}
                with results_file.open("a") as f:
                    f.write(json.dumps(line) + "\n")
                print(proxy, name, seed, {m: (v["best/val/acc"], v["wall_s"]) for m, v in figures["models"].items()},
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
