"""The registry by task: one registered model per task, a version per validated model, and
`champion` / `challenger` chosen by report's ranking (validation metric, then fewer
parameters, then the name)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from pipeline.config import load_config
from pipeline.stages.report import champion, ranking
from pipeline.tracking import newest_by_model, versions_of_runs
from tests.conftest import REPO_ROOT


def run(val: float, params: int, metric: str = "acc") -> dict:
    return {f"best/val/{metric}": val, f"test/{metric}": 1.0 - val, "params/count": params}


def test_a_tie_on_the_validation_metric_goes_to_fewer_parameters_then_to_the_name():
    imdb, etth1 = (load_config(REPO_ROOT / "params.yaml").task[t] for t in ("imdb", "etth1"))
    assert ranking(imdb, {"lstm": run(0.90, 300), "gru": run(0.90, 200), "peephole": run(0.80, 100)}, 0.0) == \
        ["gru", "lstm", "peephole"]
    assert ranking(imdb, {"lstm": run(0.90, 200), "gru": run(0.90, 200), "peephole": run(0.90, 200)}, 0.0) == \
        ["gru", "lstm", "peephole"]
    # lower is better for a forecaster; the order of the input plays no part
    train = {"peephole": run(0.5, 10, "mse"), "gru": run(0.4, 99, "mse"), "lstm": run(0.4, 50, "mse")}
    assert ranking(etth1, train, 0.0) == ["lstm", "gru", "peephole"]
    assert champion(etth1, train, 0.0) == "lstm"
    assert ranking(etth1, dict(reversed(train.items())), 0.0) == ["lstm", "gru", "peephole"]


def test_the_newest_version_of_each_model_is_the_one_aliased():
    versions = [SimpleNamespace(version=str(v), tags=tags) for v, tags in
                ((1, {"model": "gru"}), (2, {"model": "lstm"}), (10, {"model": "gru"}), (3, {}), (9, {"model": "lstm"}))]
    assert newest_by_model(versions) == {"gru": "10", "lstm": "9"}


def test_with_the_workspaces_runs_the_aliased_versions_are_theirs_not_a_later_sweeps():
    versions = [SimpleNamespace(version=str(v), tags=tags) for v, tags in
                ((1, {"model": "gru", "run_id": "a"}), (2, {"model": "lstm", "run_id": "b"}),
                 (7, {"model": "gru", "run_id": "sweep-720"}), (8, {"model": "lstm", "run_id": "sweep-720b"}))]
    assert newest_by_model(versions) == {"gru": "7", "lstm": "8"}
    assert versions_of_runs(versions, {"gru": "a", "lstm": "b"}) == {"gru": "1", "lstm": "2"}
    assert versions_of_runs(versions, {"gru": "a", "lstm": "never-registered"}) == {"gru": "1"}


def test_every_task_is_one_registered_model_with_tagged_versions_a_champion_and_a_challenger(pipeline_repo):
    from mlflow import MlflowClient

    repo, *_ = pipeline_repo
    config = load_config(repo / "params.yaml")
    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    assert {m.name for m in client.search_registered_models()} == set(config.task)
    for task, settings in config.task.items():
        models = [run.model for run in config.runs.values() if run.task == task]
        versions = client.search_model_versions(f"name = '{task}'")
        assert sorted(v.tags["model"] for v in versions) == sorted(models)   # one version per validated model
        version_of = {v.tags["model"]: v.version for v in versions}
        for version in versions:
            handoff = json.loads((repo / f"models/{task}-{version.tags['model']}/mlflow.json").read_text())
            assert version.tags["run_id"] == handoff["run_id"] == version.run_id
            assert version.tags["cell"] == config.model[version.tags["model"]].cell and version.tags["git.commit"]
        train = {m: json.loads((repo / f"metrics/train/{task}-{m}.json").read_text()) for m in models}
        order = ranking(settings, train, config.report.tie_rtol)
        aliases = client.get_registered_model(task).aliases
        assert aliases == {"champion": version_of[order[0]], "challenger": version_of[order[1]]}


def test_predict_reads_every_tasks_champion_by_task_name(pipeline_repo, capsys, monkeypatch):
    from pipeline.deploy.predict import main

    repo, mirror, *_ = pipeline_repo
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/mlflow.db")
    summary = (repo / "reports/summary.md").read_text()
    inputs = {"imdb": ("--text", "a superb film"), "etth1": ("--csv", str(mirror / "ETTh1.csv")),
              "shakespeare": ("--prompt", "ROMEO:", "--max-chars", "5")}
    for task, args in inputs.items():
        assert main([f"models:/{task}@champion", *args]) == 0
        out = json.loads(capsys.readouterr().out)
        section = summary.split(f"## {task}")[1].split("\n## ")[0]
        assert out["task"] == task and f"**{out['model'].upper()}** (champion)" in section
