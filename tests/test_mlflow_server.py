"""A real `mlflow server` on 127.0.0.1 over the SQLite store of the fixture run, read via REST."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from benchmarks.serving_load import free_port
from pipeline.config import load_config


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, *options: str, cwd: Path | None = None, timeout: float = 120):
    """A real `mlflow server` on 127.0.0.1 (a free port); yields its base URL, stops it afterwards."""
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would stall the server
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_store_uri, "--workers", "1", *options],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"mlflow server exited: {log.read()[-3000:]}")
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow server on {backend_store_uri} did not answer /health within {timeout:g} s")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def server(pipeline_repo):
    repo, *_ = pipeline_repo
    with mlflow_server(f"sqlite:///{repo}/mlflow.db", cwd=repo) as base:
        yield base


def api(base: str, path: str, **body):
    response = requests.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_rest_api_shows_both_experiments_comparable_runs_onnx_models_and_registry(server, pipeline_repo):
    from mlflow import MlflowClient

    runs_of = {}
    for run in load_config(pipeline_repo[0] / "params.yaml").runs.values():
        runs_of.setdefault(run.task, set()).add(run.model)
    client = MlflowClient(server)  # artifact listing goes through the server too
    for task in ("imdb", "etth1"):
        response = requests.get(f"{server}/api/2.0/mlflow/experiments/get-by-name",
                                params={"experiment_name": task}, timeout=30)
        response.raise_for_status()
        experiment_id = response.json()["experiment"]["experiment_id"]
        runs = api(server, "runs/search", experiment_ids=[experiment_id],
                   order_by=["attributes.start_time DESC"])["runs"]
        by_name = {run["info"]["run_name"]: run for run in runs}
        assert len(runs) == len(by_name) and set(by_name) == runs_of[task]   # one run per model
        keys = [{m["key"] for m in run["data"]["metrics"]} for run in by_name.values()]
        assert all(k == keys[0] for k in keys) and "onnx/cpu/max_abs_diff" in keys[0]

        for name, run in by_name.items():
            models = api(server, "logged-models/search", experiment_ids=[experiment_id],
                         filter=f"source_run_id = '{run['info']['run_id']}'")["models"]
            onnx_model = next(m for m in models if m["info"]["name"] == "onnx-model")
            files = {f.path for f in client.list_logged_model_artifacts(onnx_model["info"]["model_id"])}
            assert {"MLmodel", "model.onnx"} <= files

    response = requests.get(f"{server}/api/2.0/mlflow/registered-models/search", timeout=30)
    response.raise_for_status()
    registered = response.json()["registered_models"]
    assert {m["name"] for m in registered} == {"imdb", "etth1", "shakespeare"}   # one per task
    aliases = [a["alias"] for m in registered for a in m.get("aliases", [])]
    assert sorted(aliases) == ["challenger"] * 3 + ["champion"] * 3
