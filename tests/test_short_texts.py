"""The short-text study's proxies (benchmarks/short_texts.py) are built as documented, and the
task file it writes is one a user could: it composes and validates through conf/ alone."""

from __future__ import annotations

import shutil

import pandas as pd

from benchmarks.short_texts import play_speeches, task_yaml
from pipeline.compose import compose
from pipeline.config import validate
from tests.conftest import REPO_ROOT


def test_speeches_are_labelled_by_their_play_and_kept_only_at_five_to_forty_words(tmp_path):
    text = tmp_path / "plays.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
                    "GLOUCESTER:\nNow is the winter of our discontent made glorious\n\n"
                    "ROMEO:\nAy me.\n\n"                                        # two words: dropped
                    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"   # no known play
                    "PETRUCHIO:\n" + "word " * 41 + "\n", encoding="utf-8")          # 41 words: dropped
    train, test = play_speeches(text, seed=0)
    rows = pd.concat([train, test])
    assert sorted(rows["label"]) == ["richard3", "romeo"] and len(train) == 1
    assert "But soft, what light through yonder window breaks?" in set(rows["text"])


def test_the_study_task_file_composes_with_the_short_text_defaults(tmp_path):
    files = {}
    for split in ("train", "test"):
        files[split] = tmp_path / f"{split}.csv"
        pd.DataFrame({"text": ["a b c d e"] * 4, "label": ["x", "y"] * 2}).to_csv(files[split], index=False)
    conf = shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    (conf / "task/study.yaml").write_text(task_yaml(files), encoding="utf-8")
    task = validate(compose(["+task@task.study=study"], conf)).task["study"]
    assert task.prepare.min_freq == 2 and task.prepare.max_len == "auto" and task.train.batch_size == 32
    assert task.prepare.read.files.train == "train.csv" and task.source["test"].url == str(files["test"].resolve())
