"""Training: determinism, resume after SIGKILL, checkpoints, and tracking at start-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pipeline.models import build_model
from tests.conftest import compose_params, copy_repo, make_mirror, run_in

TIMING = {"train/seconds", "train/samples_per_s"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repo copy with the fixture data prepared (training runs happen in the tests)."""
    root = tmp_path_factory.mktemp("train")
    mirror = make_mirror(root / "mirror")
    repo = copy_repo(root / "repo")
    compose_params(repo, mirror)
    run_in(repo, "dvc", "repro", "embed", "prepare@etth1", env={"RB_OFFLINE_DIR": str(mirror)})
    return repo


def train(repo, task, model, *overrides, env=None, check=True):
    compose_params(repo, repo.parent / "mirror", *overrides)
    return run_in(repo, sys.executable, "-m", "pipeline.train", task, model, env=env, check=check)


def metrics(repo, name):
    values = json.loads((repo / f"metrics/train/{name}.json").read_text())
    return {k: v for k, v in values.items() if k not in TIMING}


@pytest.mark.parametrize("task, model", [("etth1", "gru"), ("imdb", "lstm")])
def test_the_same_seed_gives_identical_metrics_on_the_cpu(repo, task, model):
    train(repo, task, model, "tracking.enabled=false")
    first = metrics(repo, f"{task}-{model}")
    train(repo, task, model, "tracking.enabled=false")
    assert metrics(repo, f"{task}-{model}") == first
    train(repo, task, model, "tracking.enabled=false", "seed=7")
    assert metrics(repo, f"{task}-{model}") != first


def test_a_run_killed_with_sigkill_resumes_and_ends_with_the_same_metrics(repo):
    settings = ["task.etth1.train.epochs=30", "train.patience=100"]
    train(repo, "etth1", "lstm", "tracking.enabled=false", *settings)
    uninterrupted = metrics(repo, "etth1-lstm")

    compose_params(repo, repo.parent / "mirror", *settings, "tracking.uri=sqlite:///resume.db")
    checkpoint = repo / "checkpoints/etth1-lstm/last.pt"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen([sys.executable, "-m", "pipeline.train", "etth1", "lstm"], cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training ended before it could be killed"
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_at < 30

    resumed = run_in(repo, sys.executable, "-m", "pipeline.train", "etth1", "lstm")
    assert f"resuming etth1-lstm from epoch {killed_at}" in resumed.stderr
    assert metrics(repo, "etth1-lstm") == uninterrupted
    assert not checkpoint.exists()  # a finished run leaves no resume state

    from mlflow import MlflowClient  # the resumed run continued the same MLflow run
    client = MlflowClient(f"sqlite:///{repo}/resume.db")
    (run,) = client.search_runs([client.get_experiment_by_name("etth1").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mse")] == list(range(1, 31))


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_model(repo):
    train(repo, "imdb", "gru", "tracking.enabled=false")
    checkpoint = torch.load(repo / "models/imdb-gru/model.pt", weights_only=True)
    assert set(checkpoint) == {"state_dict", "model_args", "config"}
    model = build_model(checkpoint["model_args"]["kind"], checkpoint["model_args"]["args"])
    model.load_state_dict(checkpoint["state_dict"])
    assert checkpoint["config"]["model"]["gru"]["cell"] == "gru"
    assert model.eval()(torch.tensor([[5, 6, 7, 0]])).shape == (1, 2)
    assert json.loads((repo / "models/imdb-gru/mlflow.json").read_text())["run_id"] is None


def test_an_unreachable_tracking_server_fails_at_start_up(repo):
    start = time.monotonic()
    result = train(repo, "etth1", "gru", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, check=False)
    assert result.returncode == 1
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in result.stderr
    assert "tracking.enabled=false" in result.stderr
    assert "epoch 1" not in result.stderr and time.monotonic() - start < 60


def test_the_dvc_experiment_name_is_tagged(repo):
    train(repo, "etth1", "gru", "tracking.uri=sqlite:///tags.db", env={"DVC_EXP_NAME": "brisk-bark"})
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{repo}/tags.db")
    (run,) = client.search_runs([client.get_experiment_by_name("etth1").experiment_id])
    assert run.data.tags["dvc.exp_name"] == "brisk-bark"
    assert run.info.run_name == "gru"


def test_a_segment_length_that_does_not_divide_the_lookback_is_named(repo):
    result = train(repo, "etth1", "gru", "model.gru.forecaster.segment_len=5", check=False)
    assert result.returncode == 1
    assert "model.gru.forecaster.segment_len=5 must divide task.etth1.prepare.lookback=24" in result.stderr


@pytest.mark.gpu
def test_training_runs_on_cuda_with_cudnn(repo):
    train(repo, "etth1", "gru", "train.device=cuda", "train.precision=bf16", "tracking.uri=sqlite:///gpu.db")
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{repo}/gpu.db")
    runs = client.search_runs([client.get_experiment_by_name("etth1").experiment_id])
    assert runs[0].data.tags["device"] == "cuda"
    assert runs[0].data.tags["cudnn"] not in ("None", "")
