"""report: the champion is chosen on validation only; the README's results match the metrics."""

from __future__ import annotations

import json

from pipeline.config import load_config
from pipeline.report import ANCHORS, build_report, champion, missing_handoffs, replace_readme_table
from tests.conftest import REPO_ROOT


def test_champion_is_chosen_on_validation_never_on_test():
    config = load_config(REPO_ROOT / "params.yaml")
    train = {"lstm": {"best/val/acc": 0.91, "test/acc": 0.95, "params/count": 10},
             "gru": {"best/val/acc": 0.92, "test/acc": 0.90, "params/count": 20}}
    assert champion(config.task["imdb"], train) == "gru"
    train = {"lstm": {"best/val/mse": 0.60, "test/mse": 0.50, "params/count": 10},
             "gru": {"best/val/mse": 0.55, "test/mse": 0.70, "params/count": 20}}
    assert champion(config.task["etth1"], train) == "gru"


def test_readme_results_block_matches_the_committed_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    markdown, champions, figures = build_report(load_config(), tmp_path)
    readme = REPO_ROOT / "README.md"
    assert replace_readme_table(readme, markdown) == readme.read_text(encoding="utf-8"), (
        "README results differ from metrics/; run `python -m pipeline.report --readme`")
    assert all(f.is_file() for f in figures) and set(champions) == set(load_config().task)
    for anchors in ANCHORS.values():
        assert all(name in markdown for name, _ in anchors)


def test_report_stage_writes_the_summary_with_each_tasks_champion_and_the_figures(pipeline_repo):
    # Which version holds the alias, and that it is report's ranking, is tests/test_registry.py's.
    repo, *_ = pipeline_repo
    config = load_config(repo / "params.yaml")
    summary = (repo / "reports/summary.md").read_text()
    for task, settings in config.task.items():
        section = summary.split(f"## {task}")[1].split("\n## ")[0]
        models = [run.model for run in config.runs.values() if run.task == task]
        train = {m: json.loads((repo / f"metrics/train/{task}-{m}.json").read_text()) for m in models}
        assert f"**{champion(settings, train).upper()}** (champion)" in section
        assert section.count("(champion)") == 1
    assert (repo / "reports/etth1-forecasts.png").is_file() and (repo / "reports/imdb-curves.png").is_file()


def test_champions_are_not_promoted_while_a_train_stages_mlflow_handoff_is_missing(tmp_path, monkeypatch):
    config = load_config(REPO_ROOT / "params.yaml")
    monkeypatch.chdir(tmp_path)   # output paths are relative: nothing has been trained here
    every_run = {f"models/{name}/mlflow.json" for name in config.runs}
    assert set(missing_handoffs(config)) == every_run
    (tmp_path / "models/imdb-gru").mkdir(parents=True)
    (tmp_path / "models/imdb-gru/mlflow.json").write_text('{"run_id": "abc"}')
    assert set(missing_handoffs(config)) == every_run - {"models/imdb-gru/mlflow.json"}
