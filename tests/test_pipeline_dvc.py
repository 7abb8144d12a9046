"""The whole DAG through real `dvc repro`, in a throw-away copy of the repo, on fixtures."""

from __future__ import annotations

import json
import math
import re

import pytest

from pipeline.config import load_config
from tests.conftest import compose_params, copy_repo, make_mirror, run_in

TASKS = ("imdb", "etth1", "shakespeare")
# DVC commands in the shared repo run on one xdist worker: DVC locks a repo for most commands,
# and gives up after a few seconds when another DVC process holds the lock.
SHARED_DVC = pytest.mark.xdist_group("shared-pipeline-dvc")


def stages_of(repo) -> set[str]:
    """Every stage the repo's params.yaml gives, named as DVC names them."""
    config = load_config(repo / "params.yaml")
    runs = config.runs
    return {*(f"{stage}@{task}" for stage in ("fetch", "prepare") for task in TASKS), "report",
            *(f"embed@{task}" for task in config.embeds),
            *(f"{stage}@{name}" for stage in ("train", "export", "validate") for name in runs)}


def ran(result) -> set[str]:
    """The stages a `dvc repro` ran, from its output."""
    return set(re.findall(r"Running stage '([^']+)'", result.stdout))


def test_the_tiny_pipeline_trains_every_cell_on_etth1_and_lstm_and_gru_on_the_others(pipeline_repo):
    runs = load_config(pipeline_repo[0] / "params.yaml").runs
    assert sorted(runs) == sorted(["etth1-lstm", "etth1-gru", "etth1-peephole", "imdb-lstm", "imdb-gru",
                                   "shakespeare-lstm", "shakespeare-gru"])


@SHARED_DVC
def test_dvc_dag_lists_every_stage(pipeline_repo):
    repo, *_ = pipeline_repo
    dag = run_in(repo, "dvc", "dag", "--mermaid").stdout
    assert set(re.findall(r'\["([^"]+)"\]', dag)) == stages_of(repo)


@SHARED_DVC
def test_repro_fetches_prepares_and_writes_the_data_cards(pipeline_repo):
    repo, mirror, _, result = pipeline_repo
    assert ran(result) == stages_of(repo)
    assert (repo / "data/raw/imdb/aclImdb_v1.tar.gz").read_bytes() == (mirror / "aclImdb_v1.tar.gz").read_bytes()
    imdb = json.loads((repo / "metrics/data/imdb.json").read_text())
    etth1 = json.loads((repo / "metrics/data/etth1.json").read_text())
    assert [imdb["splits"][s]["count"] for s in ("train", "val", "test")] == [18, 6, 24]
    text = json.loads((repo / "metrics/data/shakespeare.json").read_text())
    assert sum(text["chars"].values()) == len((mirror / "tinyshakespeare.txt").read_text())
    assert etth1["windows"] == {"train": 205, "val": 69, "test": 69}
    assert sorted(p.name for p in (repo / "data/prepared/etth1/data").iterdir()) == [
        "meta.json", "test.npz", "train.npz", "val.npz"]
    lock = (repo / "dvc.lock").read_text()
    assert "prepare@imdb" in lock and "metrics/data/imdb.json" in lock
    # DVC compares the headline scores only: the data cards are plain outputs.
    shown = json.dumps(json.loads(run_in(repo, "dvc", "metrics", "show", "--json").stdout))
    assert "scores/train/etth1-gru.json" in shown and "scores/onnx/imdb-lstm.json" in shown
    assert "metrics/data" not in shown and "metrics/train" not in shown


@SHARED_DVC
def test_dvc_metrics_show_fits_a_terminal_with_the_same_few_columns_for_every_task(pipeline_repo):
    repo, *_ = pipeline_repo
    table = run_in(repo, "dvc", "metrics", "show").stdout.splitlines()
    assert sorted(table[0].split()) == sorted(["Path", "test", "val", "cpu_parity", "cpu_ms", "cpu_speedup"])
    assert max(map(len, table)) <= 100


def changed_series(repo, mirror, env) -> dict:
    """A new version of the ETTh1 series in a mirror of its own; the env that fetches from it."""
    make_mirror(mirror.parent / "new-mirror", series_seed=1)
    compose_params(repo, mirror.parent / "new-mirror")
    return {**env, "RB_OFFLINE_DIR": str(mirror.parent / "new-mirror")}


def etth1_downstream(repo) -> set[str]:
    return {stage for stage in stages_of(repo) if "etth1" in stage and not stage.startswith(("fetch", "prepare"))}


def test_a_changed_source_marks_exactly_what_depends_on_it_one_level_at_a_time(pipeline_copy):
    repo, mirror, env = pipeline_copy
    assert "up to date" in run_in(repo, "dvc", "status").stdout
    env = changed_series(repo, mirror, env)
    # the new checksum is a task setting, and report reads the task settings (each task's anchors)
    assert set(json.loads(run_in(repo, "dvc", "status", "--json").stdout)) == {"fetch@etth1", "report"}

    assert ran(run_in(repo, "dvc", "repro", "prepare@etth1", env=env)) == {"fetch@etth1", "prepare@etth1"}
    # The new prepared data and data card: every ETTh1 train, export and validate stage and the
    # report read them; nothing of IMDB or Tiny Shakespeare does.
    assert set(json.loads(run_in(repo, "dvc", "status", "--json").stdout)) == etth1_downstream(repo) | {"report"}


@pytest.mark.slow
def test_a_changed_source_reruns_only_what_depends_on_it(pipeline_copy):
    repo, mirror, env = pipeline_copy
    result = run_in(repo, "dvc", "repro", env=changed_series(repo, mirror, env))
    assert ran(result) == {stage for stage in stages_of(repo) if "etth1" in stage} | {"report"}


def test_an_edit_to_one_kinds_module_marks_only_the_runs_of_that_kind(pipeline_copy):
    """The heads and the data kinds are imported by name, only where a run uses them, and each
    run lists its own: an edit re-runs that kind's stages (and the report, which shows every
    kind), nothing of another task."""
    repo, *_ = pipeline_copy
    runs = load_config(repo / "params.yaml").runs
    of = {field: {} for field in ("head", "data")}
    for name, run in runs.items():
        of["head"].setdefault(run.head, set()).add(name)
        of["data"].setdefault(run.data, set()).add(name)
    cases = {f"pipeline/kinds/{head}.py": {f"{s}@{n}" for n in names for s in ("train", "export", "validate")}
             | {"report"} for head, names in of["head"].items()}
    for head in of["head"]:   # its torch-free half and its network: the same runs
        cases[f"pipeline/kinds/{head}_spec.py"] = cases[f"pipeline/nets/{head}.py"] = cases[f"pipeline/kinds/{head}.py"]
    embeds = load_config(repo / "params.yaml").embeds
    for data, names in of["data"].items():
        task = runs[next(iter(names))].task
        embed = {f"embed@{task}"} if task in embeds else set()   # word2vec reads the texts through it too
        cases[f"pipeline/data/{data}/__init__.py"] = {f"prepare@{task}", *embed,
                                                     *(f"{s}@{n}" for n in names for s in ("train", "validate"))}
    cases["pipeline/data/texts/files.py"] = cases["pipeline/data/texts/__init__.py"]   # a module of the package
    assert len(cases) == 13 and "up to date" in run_in(repo, "dvc", "status").stdout
    for path in cases:   # every file edited at once; `dvc status` names, per stage, the deps that changed
        (repo / path).write_text((repo / path).read_text() + "\n# an edit\n")
    found = {path: set() for path in cases}
    for stage, entries in json.loads(run_in(repo, "dvc", "status", "--json").stdout).items():
        changed = [dep for entry in entries if isinstance(entry, dict) for dep in entry.get("changed deps", {})]
        for path in cases:   # a file, or a module of a package listed as a folder
            if any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in changed):
                found[path].add(stage)
    assert found == cases


def changed_stages(repo, mirror, *overrides) -> set[str]:
    """The stages `dvc status` names under a changed config."""
    compose_params(repo, mirror, *overrides)
    return set(json.loads(run_in(repo, "dvc", "status", "--json").stdout))


def test_a_gru_forecaster_setting_reruns_only_the_gru_forecaster(pipeline_copy):
    # The classifiers read model.<m>.classifier only, and the LSTM stages model.lstm only.
    assert changed_stages(*pipeline_copy[:2], "model.gru.forecaster.hidden_size=12") == {"train@etth1-gru"}


def test_the_model_cell_reruns_every_head_of_that_model(pipeline_copy):
    assert changed_stages(*pipeline_copy[:2], "model.gru.cell=lstm") == {f"train@{task}-gru" for task in TASKS}


@SHARED_DVC
def test_train_stages_write_metrics_plots_and_checkpoints(pipeline_repo):
    repo, *_ = pipeline_repo
    imdb = json.loads((repo / "metrics/train/imdb-gru.json").read_text())
    etth1 = json.loads((repo / "metrics/train/etth1-lstm.json").read_text())
    common = {"best/epoch", "train/seconds", "train/samples_per_s", "params/count"}
    assert {"test/acc", "test/f1", "test/auc", "baseline/acc"} | common <= set(imdb)
    assert {"test/mse", "test/mae", "baseline/mse", "baseline/mae"} | common <= set(etth1)
    assert json.loads((repo / "metrics/train/imdb-lstm.json").read_text()).keys() == imdb.keys()
    text = json.loads((repo / "metrics/train/shakespeare-gru.json").read_text())
    assert {"test/loss", "test/bpc", "anchor/val10_loss", "baseline/loss", "baseline/bpc"} | common <= set(text)
    assert text["test/bpc"] == pytest.approx(text["test/loss"] / math.log(2))
    assert sorted(p.name for p in (repo / "plots/train/shakespeare-gru").iterdir()) == [
        "curves.png", "position_loss.png", "sample.txt"]
    assert (repo / "plots/generator/shakespeare-lstm.csv").read_text().startswith("position,loss\n")
    assert sorted(p.name for p in (repo / "plots/train/etth1-gru").iterdir()) == [
        "curves.png", "forecast.png", "horizon.csv"]
    assert (repo / "plots/curves/etth1-gru.csv").read_text().startswith("epoch,train/loss,")
    assert (repo / "plots/classifier/imdb-lstm.csv").read_text().startswith("actual,predicted\n")
    assert (repo / "plots/forecaster/etth1-lstm.csv").read_text().startswith("t,window,truth,forecast\n")
    metrics = json.loads((repo / "metrics/train/imdb-gru.json").read_text())
    assert json.loads((repo / "scores/train/imdb-gru.json").read_text()) == {
        "test": metrics["test/acc"], "val": metrics["best/val/acc"]}
    assert sorted(p.name for p in (repo / "models/imdb-gru").iterdir()) == ["mlflow.json", "model.pt"]
    rendered = run_in(repo, "dvc", "plots", "show", "--json").stdout
    for title in ("Learning curves", "Confusion matrix", "Forecast vs truth"):
        assert title in rendered


def test_mlflow_holds_one_experiment_per_task_with_comparable_runs(pipeline_repo):
    from mlflow import MlflowClient

    repo, *_ = pipeline_repo
    config = load_config(repo / "params.yaml")
    assert {t: config.task[t].train.lr is not None for t in TASKS} == {"imdb": False, "etth1": True,
                                                                       "shakespeare": True}
    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    for task in TASKS:
        experiment = client.get_experiment_by_name(task)
        found = client.search_runs([experiment.experiment_id])
        runs = {run.info.run_name: run for run in found}
        assert len(found) == len(runs) and set(runs) == {r.model for r in config.runs.values() if r.task == task}
        assert set(runs["lstm"].data.metrics) == set(runs["gru"].data.metrics)
        assert set(runs["lstm"].data.params) == set(runs["gru"].data.params)
        for model, run in runs.items():
            run_id = run.info.run_id
            # the rate it trained with: the task's own where it sets one (ETTh1, Shakespeare), else train.lr
            own = config.task[task].train.lr
            assert float(run.data.params["train.lr"]) == (own if own is not None else config.train.lr)
            assert run.data.params["model.name"] == model and run.data.params["task.name"] == task
            assert run.data.params["model.cell"] == {"peephole": "lstm_peephole"}.get(model, model)
            assert run.data.tags["dvc.stage"] == f"train@{task}-{model}"
            assert {"git.commit", "git.dirty"} <= set(run.data.tags)
            assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == [1, 2]
            artifacts = {a.path for folder in ("", "config", "data", "plots", "samples")
                         for a in client.list_artifacts(run_id, folder or None)}
            if task == "shakespeare":  # a sample per epoch and one at the end
                assert {"samples/epoch_001.txt", "samples/epoch_002.txt", "samples/final.txt"} <= artifacts
                final = client.download_artifacts(run_id, "samples/final.txt")
                assert open(final, encoding="utf-8").read().startswith("ROMEO:")
            assert {"config/params.yaml", f"data/{task}.json", "plots/curves.png"} <= artifacts
            inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
            assert sorted(inputs) == [f"{task}-test", f"{task}-train", f"{task}-val"]
            handoff = json.loads((repo / f"models/{task}-{model}/mlflow.json").read_text())
            assert handoff["run_id"] == run_id
            logged = client.search_logged_models([experiment.experiment_id],
                                                 filter_string=f"source_run_id = '{run_id}'")
            assert sorted(m.name for m in logged) == ["onnx-model", "pytorch-model", "served-model"]
            assert run.data.tags["onnx.cpu.status"] == "ok" and "onnx/cpu/max_abs_diff" in run.data.metrics
            onnx_model = next(m for m in logged if m.name == "onnx-model")
            signature = logged_signature(repo, onnx_model.model_id)
            assert signature.inputs.inputs[0].shape[:2] == (-1, -1)  # dynamic batch and time


def test_a_wrong_mirror_checksum_fails_the_stage_and_leaves_no_output(tmp_path):
    mirror = make_mirror(tmp_path / "mirror")
    repo = copy_repo(tmp_path / "repo")
    compose_params(repo, mirror, "task.etth1.source.offline.checksum=sha256:" + "0" * 64)
    result = run_in(repo, "dvc", "repro", "fetch@etth1", env={"RB_OFFLINE_DIR": str(mirror)}, check=False)
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr + result.stdout
    assert not (repo / "data/raw/etth1/ETTh1.csv").exists()
    assert list((repo / "data/raw").glob("*")) in ([], [repo / "data/raw/.gitignore"])


def logged_signature(repo, model_id):
    # Not mlflow.set_tracking_uri: it exports MLFLOW_TRACKING_URI to every later subprocess.
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    location = MlflowClient(f"sqlite:///{repo}/mlflow.db").get_logged_model(model_id).artifact_location
    return Model.load(download_artifacts(artifact_uri=location)).signature
