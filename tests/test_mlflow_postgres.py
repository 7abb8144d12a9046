"""MLflow for a team: `mlflow server` on a real PostgreSQL backend store with a served artifact
root, and the pipeline pointed at it through MLFLOW_TRACKING_URI (the README's setup).

PostgreSQL is Debian's package. The fixture installs it (apt-get) where it is missing and
can be installed, starts a private cluster on 127.0.0.1 in a temporary folder, and stops it
afterwards. The test skips, with the reason, only when PostgreSQL cannot be installed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run_in
from tests.test_mlflow_server import free_port, mlflow_server


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def install_postgres() -> str | None:
    """apt-get install postgresql (as root, or through passwordless sudo); None on success, else why not."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        return "not root and no sudo to run apt-get"
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                                   "postgresql"]):
        result = subprocess.run(sudo + command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            return f"`{' '.join(command)}` failed ({result.returncode}): {result.stderr.strip()[-500:]}"
    return None


def as_postgres_user(command: list[str]) -> list[str]:
    """initdb and the server refuse to run as root: run them as Debian's `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL cluster on 127.0.0.1; yields its SQLAlchemy URI for database `mlflow`."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        problem = install_postgres()
        bin_dir = postgres_bin()
        if bin_dir is None:
            pytest.skip("PostgreSQL is not installed and cannot be installed here: "
                        f"{problem or 'apt-get installed postgresql, but no initdb was found'}")
    root = Path(tempfile.mkdtemp(prefix="rb-postgres-"))
    data, port = root / "data", free_port()

    def run(*command: str) -> None:
        result = subprocess.run(as_postgres_user(list(command)), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}")

    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "start", "-o",
            f"-h 127.0.0.1 -p {port} -k {root}")
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        # psycopg 3, named in the URI: SQLAlchemy before 2.1 reads a bare postgresql:// as psycopg2.
        yield f"postgresql+psycopg://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def team_server(postgres, tmp_path):
    """`mlflow server` on the PostgreSQL store, serving artifacts from a folder of its own."""
    artifacts = tmp_path / "artifact-root"
    with mlflow_server(postgres, "--artifacts-destination", str(artifacts)) as base:
        yield base, artifacts


def test_a_pipeline_run_logs_to_mlflow_on_postgresql_and_reads_back(pipeline_copy, team_server, postgres):
    repo, *_ = pipeline_copy
    base, artifacts = team_server
    stages = ["train@etth1-gru", "export@etth1-gru", "validate@etth1-gru"]
    run_in(repo, "dvc", "repro", "--force", "--single-item", *stages, env={"MLFLOW_TRACKING_URI": base})

    from mlflow import MlflowClient
    client = MlflowClient(base)
    experiment = client.get_experiment_by_name("etth1")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "gru" and run.info.status == "FINISHED"
    assert run.data.tags["dvc.stage"] == "train@etth1-gru"
    test_mse = json.loads((repo / "metrics/train/etth1-gru.json").read_text())["test/mse"]
    assert run.data.metrics["test/mse"] == pytest.approx(test_mse)
    assert "onnx/cpu/max_abs_diff" in run.data.metrics  # validate added to the same run
    assert len(client.get_metric_history(run.info.run_id, "val/mse")) == 2
    (version,) = client.search_model_versions("name = 'etth1'")   # the registry is by task
    assert version.run_id == run.info.run_id and version.tags["model"] == "gru"
    # The artifacts went through the server into its artifact root, not into the repo.
    assert list(artifacts.rglob("model.onnx")) and list(artifacts.rglob("curves.png"))
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")

    import psycopg  # and the run really lives in PostgreSQL
    with psycopg.connect(postgres.replace("+psycopg", "")) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cursor.fetchall() == [("FINISHED",)]
        cursor.execute("SELECT count(*) FROM registered_models WHERE name = 'etth1'")
        assert cursor.fetchone() == (1,)
