"""The long-horizon table: one command sweeps a forecaster task's horizon through DVC's own
experiment queue, over the normal stages, and writes the table from the MLflow runs."""

from __future__ import annotations

import json
import re

import yaml
from mlflow import MlflowClient

from pipeline.experiments.ltsf import sweep_command, table_rows
from tests.conftest import (
    TINY_OVERRIDES,
    copy_repo,
    nested,
    run_in,
    sha256_spec,
    synthetic_series,
    write_csv,
)


def test_the_sweep_is_one_dvc_grid_over_the_horizons_with_the_tasks_validate_stages():
    assert sweep_command("etth1", (96, 192), ["validate@etth1-lstm", "validate@etth1-gru"]) == [
        "dvc", "exp", "run", "--queue", "-S", "task.etth1.prepare.horizon=96,192",
        "validate@etth1-lstm", "validate@etth1-gru"]


def test_the_table_marks_the_cell_chosen_on_validation_and_averages_only_complete_rows():
    results = {("lstm", 96): {"test/mse": 0.38, "test/mae": 0.40, "val": 0.60},
               ("gru", 96): {"test/mse": 0.37, "test/mae": 0.41, "val": 0.65},   # better on test, worse on val
               ("lstm", 192): {"test/mse": 0.42, "test/mae": 0.43, "val": 0.90}}
    floors = {96: {"test/mse": 1.2, "test/mae": 0.7}, 192: {"test/mse": 1.3, "test/mae": 0.8}}
    published = {96: {"iTransformer": {"test/mse": 0.386, "test/mae": 0.405}}}
    rows = table_rows(results, ["lstm", "gru"], (96, 192), floors, published)
    assert rows[0] == ["LSTM", "**0.380 / 0.400**", "**0.420 / 0.430**", "0.400 / 0.415"]
    assert rows[1] == ["GRU", "0.370 / 0.410", "–", "–"]                # no H=192 run: no average
    assert rows[2] == ["*naive floor: repeat last value*", "1.200 / 0.700", "1.300 / 0.800", "1.250 / 0.750"]
    assert rows[3] == ["*iTransformer*", "0.386 / 0.405", "–", "–"]


def experiment_horizons(repo) -> list[int]:
    """The horizon of each DVC experiment of the repository (`dvc exp show`)."""
    shown = json.loads(run_in(repo, "dvc", "exp", "show", "--json").stdout)
    return sorted(e["revs"][0]["data"]["params"]["params.yaml"]["data"]["task"]["mycsv"]["prepare"]["horizon"]
                  for baseline in shown for e in baseline.get("experiments") or [])


def test_the_command_runs_a_csv_task_at_two_horizons_and_tables_what_mlflow_tracked(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    # A CSV series a user added: its own conf file, no published figures, one cell.
    csv = write_csv(tmp_path / "series.csv", synthetic_series(400, seed=3))
    task = {"data": "timeseries", "source": {"url": str(csv), "checksum": sha256_spec(csv)},
            "prepare": {"time_column": "date", "columns": None, "target": "OT", "features": "M", "missing": "error",
                        "lookback": 24, "horizon": 12, "borders": [240, 320, 400], "ratios": None},
            "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 512}, "models": ["gru"]}
    (repo / "conf/task/mycsv.yaml").write_text(yaml.safe_dump(task))
    config = repo / "conf/config.yaml"
    config.write_text(config.read_text().replace("  - task@task.shakespeare: shakespeare\n",
                                                 "  - task@task.shakespeare: shakespeare\n  - task@task.mycsv: mycsv\n"))
    (repo / "conf/tiny.yaml").write_text(yaml.safe_dump({"defaults": ["config", "_self_"], **nested(TINY_OVERRIDES)}))
    run_in(repo, "dvc", "config", "hydra.config_name", "tiny")
    run_in(repo, "python", "-m", "pipeline.config", *TINY_OVERRIDES)   # params.yaml as the tiny config composes it
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    run_in(repo, *git, "add", "-A")
    run_in(repo, *git, "commit", "-qm", "a CSV task")

    result = run_in(repo, "python", "-m", "pipeline.experiments.ltsf", "mycsv", "--horizons", "4", "8", timeout=900)

    # Two DVC experiments, one per horizon, each through prepare, train, export and validate.
    assert experiment_horizons(repo) == [4, 8], result.stderr[-3000:]
    # Their MLflow runs, in the repository's store, hold what the table prints.
    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("mycsv").experiment_id])
    by_horizon = {int(r.data.params["task.prepare.horizon"]): r for r in runs}
    assert sorted(by_horizon) == [4, 8] and all(r.data.tags["onnx.cpu.status"] == "ok" for r in runs)
    report = (repo / "reports/ltsf/mycsv.md").read_text()
    assert "| cell (MSE / MAE) | H=4 | H=8 | average |" in report
    gru = next(line for line in report.splitlines() if line.startswith("| GRU |"))
    for horizon, run in by_horizon.items():
        assert f"{run.data.metrics['test/mse']:.3f} / {run.data.metrics['test/mae']:.3f}" in gru
    assert re.search(r"\| \*naive floor: repeat last value\* \| [\d.]+ / [\d.]+ \| [\d.]+ / [\d.]+ \|", report)
    published = [line for line in report.splitlines() if line.startswith("| *") and "naive floor" not in line]
    assert published == []                                   # a task without anchors shows only its own rows
    assert report.count("| passed |") == 2                   # every model's ONNX gates, from its record
    settings = next(line for line in report.splitlines() if line.startswith("Settings of every run"))
    assert "`task.train.epochs=2`" in settings and "`model.forecaster.hidden_size=16`" in settings
    assert "differs" not in settings                          # the horizon is the only sweep dimension
    # --report-only rebuilds the same table from MLflow alone, without sweeping again.
    run_in(repo, "python", "-m", "pipeline.experiments.ltsf", "mycsv", "--horizons", "4", "8", "--report-only")
    assert (repo / "reports/ltsf/mycsv.md").read_text().split("\n\n", 3)[2:] == report.split("\n\n", 3)[2:]
    assert experiment_horizons(repo) == [4, 8]                # and no new experiment
    records = {p.name: json.loads(p.read_text()) for p in (repo / "reports/ltsf/mycsv").glob("*.json")}
    assert sorted(records) == ["mycsv-gru-h4.json", "mycsv-gru-h8.json"]
    assert all(r["passed"] and r["cpu"]["status"] == "ok" for r in records.values())


def test_a_task_that_is_not_a_forecaster_is_refused(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    result = run_in(repo, "python", "-m", "pipeline.experiments.ltsf", "imdb", check=False)
    assert result.returncode == 2 and "task.imdb: a classifier task has no prepare.horizon" in result.stderr
