"""benchmarks/train_seconds_ab.py: each checkout trains with its own code, in the order A B B A,
and every training is a row naming its commit and host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from benchmarks.train_seconds_ab import commit_of, main, order
from pipeline.hosts import host_kind

# A stand-in for a checkout's pipeline: `pipeline.config` does nothing, and `pipeline.stages.train`
# appends the checkout's name to a shared log and records the seconds its SECONDS file holds.
TRAIN_STUB = """import json, sys
from pathlib import Path
task, model = sys.argv[1:]
with open(Path.cwd().parent / "trainings.log", "a") as log:
    log.write(Path.cwd().name + "\\n")
Path("metrics/train").mkdir(parents=True, exist_ok=True)
Path(f"metrics/train/{task}-{model}.json").write_text(json.dumps({"train/seconds": float(Path("SECONDS").read_text())}))
"""


def stub_checkout(path: Path, seconds: float) -> str:
    for module, text in {"__init__": "", "config": "", "stages/__init__": "", "stages/train": TRAIN_STUB}.items():
        (path / "pipeline" / f"{module}.py").parent.mkdir(parents=True, exist_ok=True)
        (path / "pipeline" / f"{module}.py").write_text(text)
    (path / "SECONDS").write_text(str(seconds))
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "stub"]):
        subprocess.run(command, cwd=path, check=True)
    return commit_of(path)


def test_each_checkout_goes_first_as_often_as_the_other():
    assert order(2) == ["a", "b", "b", "a"]
    assert order(3) == ["a", "b", "b", "a", "a", "b"]


def test_each_checkout_trains_with_its_own_code_in_turn_and_each_training_is_a_row(tmp_path, capsys):
    commits = {"a": stub_checkout(tmp_path / "before", 10.0), "b": stub_checkout(tmp_path / "after", 12.5)}
    out = tmp_path / "ab.jsonl"
    assert main(["--a", str(tmp_path / "before"), "--b", str(tmp_path / "after"), "--task", "imdb",
                 "--models", "lstm", "gru", "--repeats", "2", "--out", str(out)]) == 0
    ran = (tmp_path / "trainings.log").read_text().split()
    assert ran == ["before", "after", "after", "before"] * 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["model"], r["side"]) for r in rows] == [(m, s) for m in ("lstm", "gru") for s in order(2)]
    assert all(r["commit"] == commits[r["side"]] and r["host"] == host_kind() for r in rows)
    assert all(r["train/seconds"] == {"a": 10.0, "b": 12.5}[r["side"]] for r in rows)
    assert "lstm: a 10.0 s [10.0, 10.0], b 12.5 s [12.5, 12.5], b/a 1.250" in capsys.readouterr().out
