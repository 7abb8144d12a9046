"""A real `mlflow server` on 127.0.0.1 over the SQLite store of the fixture run, read via REST."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(pipeline_repo):
    repo, *_ = pipeline_repo
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{repo}/mlflow.db", "--workers", "1"],
        cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited: {process.stderr.read()[-2000:]}")
    else:
        process.kill()
        pytest.fail("mlflow server did not answer /health within 90 s")
    yield base
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def api(base: str, path: str, **body):
    response = requests.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_rest_api_shows_both_experiments_comparable_runs_onnx_models_and_registry(server):
    from mlflow import MlflowClient

    client = MlflowClient(server)  # artifact listing goes through the server too
    for task in ("imdb", "etth1"):
        response = requests.get(f"{server}/api/2.0/mlflow/experiments/get-by-name",
                                params={"experiment_name": task}, timeout=30)
        response.raise_for_status()
        experiment_id = response.json()["experiment"]["experiment_id"]
        runs = api(server, "runs/search", experiment_ids=[experiment_id],
                   order_by=["attributes.start_time DESC"])["runs"]
        newest = {}
        for run in runs:
            newest.setdefault(run["info"]["run_name"], run)
        assert sorted(newest) == ["gru", "lstm"]
        keys = {name: {m["key"] for m in run["data"]["metrics"]} for name, run in newest.items()}
        assert keys["lstm"] == keys["gru"] and "onnx/cpu/max_abs_diff" in keys["lstm"]

        for name, run in newest.items():
            models = api(server, "logged-models/search", experiment_ids=[experiment_id],
                         filter=f"source_run_id = '{run['info']['run_id']}'")["models"]
            onnx_model = next(m for m in models if m["info"]["name"] == "onnx-model")
            files = {f.path for f in client.list_logged_model_artifacts(onnx_model["info"]["model_id"])}
            assert {"MLmodel", "model.onnx"} <= files

    response = requests.get(f"{server}/api/2.0/mlflow/registered-models/search", timeout=30)
    response.raise_for_status()
    registered = response.json()["registered_models"]
    assert {m["name"] for m in registered} == {"imdb-lstm", "imdb-gru", "etth1-lstm", "etth1-gru"}
    aliases = [a["alias"] for m in registered for a in m.get("aliases", [])]
    assert aliases.count("champion") == 2
