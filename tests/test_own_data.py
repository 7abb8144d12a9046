"""Your own labelled texts through conf/ alone: a three-class CSV task and a JSON Lines task,
added as conf files, run fetch -> prepare -> embed -> train -> export -> validate -> report, and
answer with their label names."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import yaml

from pipeline.config import load_config
from tests.conftest import compose_params, run_in, sha256_spec
from tests.test_data_texts import CLASSES, corpus

TRAIN = {"epochs": 2, "batch_size": 8, "eval_batch_size": 32}


def write_task(repo, data, name: str, fmt: str, embeddings: bool) -> None:
    """The user's files in a folder of their own, and conf/task/<name>.yaml pointing at them."""
    sources = {}
    for split, (n, seed) in {"train": (12, 0), "test": (4, 1)}.items():
        rows = corpus(n, seed)
        path = data / f"{name}-{split}.{fmt}"
        if fmt == "csv":
            pd.DataFrame({"sentence": [t for _, t in rows], "topic": [lb for lb, _ in rows]}).to_csv(path, index=False)
        else:
            path.write_text("".join(json.dumps({"sentence": t, "topic": lb}) + "\n" for lb, t in rows))
        sources[split] = {"url": str(path), "checksum": sha256_spec(path)}
    task = {"data": "texts", "models": ["gru"], "source": sources,
            "prepare": {"read": {"format": fmt, "text": "sentence", "label": "topic",
                                 "files": {"train": f"{name}-train.{fmt}", "test": f"{name}-test.{fmt}"}},
                        "vocab_size": 200, "min_freq": 1},
            "train": TRAIN}
    if embeddings:
        task["embeddings"] = {"dim": 8, "window": 3, "epochs": 1, "skip_gram": False, "seed": 0}
    (repo / "conf/task" / f"{name}.yaml").write_text(yaml.safe_dump(task))


def test_labelled_texts_in_two_formats_run_end_to_end_through_conf_alone(pipeline_copy, tmp_path):
    repo, mirror, env = pipeline_copy
    data = tmp_path / "users-data"
    data.mkdir()
    write_task(repo, data, "topics", "csv", embeddings=False)
    write_task(repo, data, "moods", "jsonl", embeddings=True)
    compose_params(repo, mirror, "+task@task.topics=topics", "+task@task.moods=moods")
    result = run_in(repo, "dvc", "repro", env=env)
    for stage in ("fetch@topics", "prepare@topics", "embed@moods", "train@topics-gru", "export@moods-gru",
                  "validate@topics-gru", "report"):
        assert f"Running stage '{stage}'" in result.stdout, stage
    assert "Running stage 'train@imdb" not in result.stdout and "embed@topics" not in result.stdout

    config = load_config(repo / "params.yaml")
    assert set(config.embeds) == {"imdb", "moods"}
    for task in ("topics", "moods"):
        card = json.loads((repo / f"metrics/data/{task}.json").read_text())
        assert card["labels"] == sorted(CLASSES) and card["splits"]["test"]["count"] == 12
        train = json.loads((repo / f"metrics/train/{task}-gru.json").read_text())
        assert "test/macro_f1" in train and "test/auc" not in train and train["baseline/acc"] == 1 / 3
        onnx = json.loads((repo / f"metrics/onnx/{task}-gru.json").read_text())
        assert onnx["passed"] is True, onnx
    assert (repo / "data/raw/topics/topics-train.csv").is_file()   # its own folder, named after the task

    predicted = run_in(repo, sys.executable, "-m", "pipeline.deploy.predict", "onnx/topics-gru/model.onnx",
                       "--text", "goal match team score").stdout
    answer = json.loads(predicted)["predictions"][0]
    assert set(answer["probabilities"]) == set(CLASSES) and answer["label"] in CLASSES

    served = run_in(repo, sys.executable, "-c", (
        "import json, mlflow, pandas as pd; mlflow.set_tracking_uri('sqlite:///mlflow.db'); "
        "m = mlflow.pyfunc.load_model('models:/moods@champion'); "
        "print(json.dumps(m.predict(pd.DataFrame({'text': ['rain sun wind']}))))"), env=env).stdout
    assert json.loads(served.strip().splitlines()[-1])["predictions"][0]["label"] in CLASSES

    summary = (repo / "reports/summary.md").read_text()
    section = summary.split("## topics")[1].split("\n## ")[0]
    assert "*naive floor: majority class*" in section and "test/macro_f1" in section
    italic = [line for line in section.splitlines() if line.startswith("| *") and not line.startswith("| **")]
    assert len(italic) == 1   # the floor alone: no published anchors for the user's data
    assert (repo / "reports/topics-confusion.png").is_file()


def test_every_task_file_of_the_own_data_page_composes_and_validates(tmp_path):
    """docs/own-data.md's files, each added as its page says: `+task@task.<name>=<name>`."""
    import re
    import shutil

    from pipeline.compose import compose
    from pipeline.config import validate
    from tests.conftest import REPO_ROOT

    page = (REPO_ROOT / "docs/own-data.md").read_text(encoding="utf-8")
    files = re.findall(r"```yaml\n# conf/task/(\w+)\.yaml[^\n]*\n(.*?)```", page, re.S)
    assert {name for name, _ in files} >= {"reviews", "questions", "load", "poems"}
    conf = shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    for name, body in files:
        (conf / "task" / f"{name}.yaml").write_text(body, encoding="utf-8")
        config = validate(compose([f"+task@task.{name}={name}"], conf))
        assert str(config.task[name].paths.raw) == f"data/raw/{name}"   # its own, from its name
        if config.task[name].data == "texts":   # no train section: the short-text recipe
            assert (config.task[name].train.epochs, config.task[name].train.batch_size) == (10, 32)
