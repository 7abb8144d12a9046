"""Training: determinism, resume after SIGKILL, checkpoints, and tracking at start-up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.training.checkpoints import save_checkpoint
from pipeline.config import load_config
from pipeline.training.datasets import EpochBatchSampler
from pipeline.kinds.registry import build_model
from pipeline.training.resume import fingerprint
from pipeline.stages.train import evaluate_best, run_epochs, setup
from tests.conftest import compose_params, copy_pipeline, run_in

TIMING = {"train/seconds", "train/samples_per_s"}
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


@pytest.fixture(scope="module")
def repo(pipeline_repo, tmp_path_factory):
    """A writable copy of the shared pipeline, its data prepared and embedded, with the mirror
    beside it (compose_params reads the checksums there); the tests train in it."""
    source, mirror, *_ = pipeline_repo
    root = tmp_path_factory.mktemp("train")
    shutil.copytree(mirror, root / "mirror")
    return copy_pipeline(source, root / "repo")


def train(repo, task, model, *overrides, env=None, check=True, timeout=None):
    compose_params(repo, repo.parent / "mirror", *overrides)
    return run_in(repo, sys.executable, "-m", "pipeline.stages.train", task, model, env=env, check=check, timeout=timeout)


def metrics(repo, name):
    values = json.loads((repo / f"metrics/train/{name}.json").read_text())
    return {k: v for k, v in values.items() if k not in TIMING}


@pytest.mark.parametrize("task, model", [("etth1", "gru"), ("imdb", "lstm")])
def test_the_same_seed_gives_identical_metrics_on_the_cpu(pipeline_repo, repo, task, model):
    # The first run is the shared pipeline's, under `dvc repro` with MLflow on: tracking changes nothing.
    first = metrics(pipeline_repo[0], f"{task}-{model}")
    train(repo, task, model, "tracking.enabled=false")
    assert metrics(repo, f"{task}-{model}") == first
    assert json.loads((repo / f"models/{task}-{model}/mlflow.json").read_text())["run_id"] is None  # untracked
    train(repo, task, model, "tracking.enabled=false", "seed=7")
    assert metrics(repo, f"{task}-{model}") != first


def test_a_run_killed_with_sigkill_resumes_and_ends_with_the_same_metrics(repo):
    epochs = 12  # the kill lands right after the first epoch's resume checkpoint
    settings = [f"task.etth1.train.epochs={epochs}", "train.patience=100"]
    train(repo, "etth1", "lstm", "tracking.enabled=false", *settings)
    uninterrupted = metrics(repo, "etth1-lstm")

    compose_params(repo, repo.parent / "mirror", *settings, "tracking.uri=sqlite:///resume.db")
    checkpoint = repo / "checkpoints/etth1-lstm/last.pt"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen([sys.executable, "-m", "pipeline.stages.train", "etth1", "lstm"], cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training ended before it could be killed"
    killed_at = torch.load(checkpoint, weights_only=True)["progress"]["epoch"]
    assert 1 <= killed_at < epochs

    resumed = run_in(repo, sys.executable, "-m", "pipeline.stages.train", "etth1", "lstm")
    assert f"resuming etth1-lstm from epoch {killed_at}" in resumed.stderr
    assert metrics(repo, "etth1-lstm") == uninterrupted
    assert not checkpoint.exists()  # a finished run leaves no resume state

    from mlflow import MlflowClient  # the resumed run continued the same MLflow run
    client = MlflowClient(f"sqlite:///{repo}/resume.db")
    (run,) = client.search_runs([client.get_experiment_by_name("etth1").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mse")] == list(range(1, epochs + 1))


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_model(pipeline_repo):
    repo, *_ = pipeline_repo
    checkpoint = torch.load(repo / "models/imdb-gru/model.pt", weights_only=True)
    assert set(checkpoint) == {"state_dict", "model_args", "config"}
    model = build_model(checkpoint["model_args"]["head"], checkpoint["model_args"]["args"])
    model.load_state_dict(checkpoint["state_dict"])
    assert checkpoint["config"]["model"]["gru"]["cell"] == "gru"
    assert model.eval()(torch.tensor([[5, 6, 7, 0]])).shape == (1, 2)


def test_equal_states_save_to_equal_bytes_so_dvc_sees_an_identical_retrain_as_unchanged(tmp_path):
    state = {"state_dict": {"weight": torch.arange(6.0).reshape(2, 3)}, "model_args": {"head": "forecaster"}}
    save_checkpoint(tmp_path / "a.pt", state)
    save_checkpoint(tmp_path / "b.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"].keys() == state["state_dict"].keys()


def test_an_unreachable_tracking_server_fails_at_start_up(repo):
    start = time.monotonic()
    result = train(repo, "etth1", "gru", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, check=False)
    assert result.returncode == 1
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in result.stderr
    assert "tracking.enabled=false" in result.stderr
    assert "epoch 1" not in result.stderr and time.monotonic() - start < 60


def test_a_runs_tags_carry_its_stage_the_dvc_experiment_and_a_pinned_gpu(monkeypatch):
    # End to end, tests/test_experiments.py finds the runs of a real `dvc exp run` by this tag.
    from pipeline.tracking import run_tags

    monkeypatch.setenv("DVC_EXP_NAME", "brisk-bark")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.delenv("DVC_STAGE", raising=False)
    tags = run_tags("train@etth1-gru")
    assert tags["dvc.exp_name"] == "brisk-bark" and tags["dvc.stage"] == "train@etth1-gru"
    assert tags["cuda_visible_devices"] == "3"  # a queue worker's GPU pinning shows in MLflow
    assert {"git.commit", "git.dirty"} <= set(tags)
    monkeypatch.delenv("DVC_EXP_NAME")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert "dvc.exp_name" not in run_tags("train@etth1-gru") and "cuda_visible_devices" not in run_tags("x")


def test_a_segment_length_that_does_not_divide_the_lookback_is_named(repo):
    result = train(repo, "etth1", "gru", "model.gru.forecaster.segment_len=5", check=False)
    assert result.returncode == 1
    assert "model.gru.forecaster.segment_len=5 must divide task.etth1.prepare.lookback=24" in result.stderr


def test_a_pmf_decoder_whose_segments_do_not_divide_the_horizon_is_named(repo):
    result = train(repo, "etth1", "gru", "model.gru.forecaster.segment_len=8", "model.gru.forecaster.decoder=pmf",
                   check=False)
    assert result.returncode == 1
    assert ("model.gru.forecaster.decoder=pmf decodes segments: segment_len=8 must be > 0 and divide "
            "task.etth1.prepare.horizon=12") in result.stderr


def test_a_pmf_forecaster_trains_exports_to_onnx_and_passes_validation(repo):
    train(repo, "etth1", "gru", "model.gru.forecaster.decoder=pmf", "tracking.enabled=false", "export.int8=false")
    run_in(repo, sys.executable, "-m", "pipeline.stages.export", "etth1", "gru")
    run_in(repo, sys.executable, "-m", "pipeline.stages.validate", "etth1", "gru")
    report = json.loads((repo / "metrics/onnx/etth1-gru.json").read_text())
    assert report["passed"] and report["cpu"]["parity"] <= 1
    import onnx

    graph = onnx.load(str(repo / "onnx/etth1-gru/model.onnx"))
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("GRU") == 1 and "MatMul" in ops   # the encoder's node; the decoding step is tensor algebra


@pytest.mark.gpu
def test_training_runs_on_cuda_with_cudnn(repo):
    train(repo, "etth1", "gru", "train.device=cuda", "train.precision=bf16", "tracking.uri=sqlite:///gpu.db")
    from mlflow import MlflowClient
    client = MlflowClient(f"sqlite:///{repo}/gpu.db")
    runs = client.search_runs([client.get_experiment_by_name("etth1").experiment_id])
    assert runs[0].data.tags["device"] == "cuda"
    assert runs[0].data.tags["cudnn"] not in ("None", "")


@pytest.mark.parametrize("size, batch_size, world_size", [(205, 32, 2), (50, 8, 3), (3, 4, 4)])
def test_ranks_split_every_global_batch_into_equal_shards(size, batch_size, world_size):
    lengths = torch.randint(1, 50, (size,))
    single = EpochBatchSampler(size, batch_size, True, 0, lengths)
    shards = [EpochBatchSampler(size, batch_size, True, 0, lengths, rank, world_size) for rank in range(world_size)]
    for sampler in (single, *shards):
        sampler.set_epoch(3)
    per_rank = [list(s) for s in shards]
    assert all(len(batches) == len(single) for batches in per_rank)  # same step count: no rank waits forever
    for step, batch in enumerate(single):
        parts = [batches[step] for batches in per_rank]
        assert len({len(p) for p in parts}) == 1  # equal shards: DDP's gradient mean is the batch mean
        assert set().union(*parts) == set(batch)  # together, exactly the single-process batch
        assert sum(map(len, parts)) - len(batch) < world_size  # padded by fewer rows than there are ranks


def test_set_epoch_reshuffles_the_single_process_batches_and_every_ranks_shard():
    lengths = torch.randint(1, 50, (205,))
    samplers = [EpochBatchSampler(205, 32, True, 0, lengths, *ranks) for ranks in ((), (0, 2), (1, 2))]
    for sampler in samplers:
        sampler.set_epoch(3)
    epoch_3 = [list(s) for s in samplers]
    for sampler in samplers:
        sampler.set_epoch(4)
    assert all(list(s) != before for s, before in zip(samplers, epoch_3))
    samplers[0].set_epoch(3)
    assert list(samplers[0]) == epoch_3[0]   # and an epoch's order is a function of the epoch alone


def test_ddp_with_two_gloo_processes_matches_one_process_and_logs_one_run(pipeline_repo, repo):
    single = metrics(pipeline_repo[0], "etth1-gru")   # one process, the same settings
    compose_params(repo, repo.parent / "mirror", "tracking.uri=sqlite:///ddp.db")
    result = run_in(repo, TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "pipeline.stages.train", "etth1", "gru",
                    timeout=300)  # a collective that some rank never reaches would otherwise hang for an hour
    assert "training etth1-gru on cpu x 2 processes" in result.stderr
    ddp = metrics(repo, "etth1-gru")
    for key in ("test/mse", "test/mae", "best/val/mse"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-3), key
    assert ddp["best/epoch"] == single["best/epoch"] and ddp["epochs"] == single["epochs"]
    # Each sample was seen once per epoch (on one rank), plus at most one padding row per rank and batch.
    assert single["train/samples"] <= ddp["train/samples"] <= single["train/samples"] + 2 * ddp["epochs"]
    assert not (repo / "checkpoints/etth1-gru/last.pt").exists()

    from mlflow import MlflowClient  # rank 0 alone tracked
    client = MlflowClient(f"sqlite:///{repo}/ddp.db")
    (run,) = client.search_runs([client.get_experiment_by_name("etth1").experiment_id])
    assert run.data.tags["world_size"] == "2" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mse")] == [1, 2]


def test_nproc_per_node_launches_torchrun_from_the_stage_command(repo):
    # IMDB: length-bucketed batches cut per rank to their own longest row, and dropout per rank.
    result = train(repo, "imdb", "lstm", "tracking.enabled=false", "train.nproc_per_node=2", timeout=300)
    assert "torch.distributed.run --standalone --nproc_per_node=2 -m pipeline.stages.train imdb lstm" in result.stderr
    assert "training imdb-lstm on cpu x 2 processes" in result.stderr
    ddp = metrics(repo, "imdb-lstm")
    train_rows, batches = 18, 3  # the fixture's IMDB train split, in batches of 8
    assert ddp["epochs"] == 2
    assert 2 * train_rows <= ddp["train/samples"] <= 2 * (train_rows + batches)


def test_the_training_pieces_run_in_process_and_a_restored_progress_resumes_after_its_epoch(repo, monkeypatch):
    compose_params(repo, repo.parent / "mirror", "tracking.enabled=false", "task.etth1.train.epochs=3",
                   "train.patience=100")
    monkeypatch.chdir(repo)
    config = load_config()
    run = setup(config, "etth1", "lstm", "test")
    assert run.progress.epoch == 0 and run.monitor == "val/mse"
    run_epochs(run)
    whole = evaluate_best(run)
    assert [row["epoch"] for row in whole.history] == [1, 2, 3] and whole.metrics["epochs"] == 3

    # The resume checkpoint of the last epoch holds one Progress record; a new set-up restores it.
    resumed = setup(config, "etth1", "lstm", "test")
    assert resumed.progress.epoch == 3 and resumed.progress.best_epoch == whole.metrics["best/epoch"]
    run_epochs(resumed)  # nothing left to do
    assert evaluate_best(resumed).metrics["test/mse"] == whole.metrics["test/mse"]
    (repo / "checkpoints/etth1-lstm/last.pt").unlink()


def test_resume_state_is_tied_to_the_process_count_not_to_how_it_was_launched(repo):
    config = load_config(repo / "params.yaml")
    one = fingerprint(config, "etth1", "gru", "data")
    relaunched = config.model_copy(update={"train": config.train.model_copy(update={"nproc_per_node": 4})})
    assert fingerprint(relaunched, "etth1", "gru", "data") == one  # the same single process
    assert fingerprint(config, "etth1", "gru", "data", world_size=2) != one


@pytest.mark.parametrize("avx512_bf16, amx, precision, expected", [
    (True, False, "bf16", True), (False, True, "bf16", True), (False, False, "bf16", False),
    (True, True, "fp32", False)])
def test_bf16_autocast_runs_on_a_cpu_only_where_it_has_native_bf16(monkeypatch, caplog, avx512_bf16, amx,
                                                                   precision, expected):
    from pipeline.training.distributed import uses_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert uses_bf16(precision, torch.device("cpu")) is expected
    emulated = precision == "bf16" and not expected
    assert ("training in fp32" in caplog.text) is emulated
