"""`dvc exp run -S ...` recomposes params.yaml through Hydra and lands as a new MLflow run."""

from __future__ import annotations

import json
import re
import time

import yaml
from mlflow import MlflowClient

from tests.conftest import TINY_OVERRIDES, copy_repo, make_mirror, mirror_checksums, nested, run_in


def experiment_params(shown: list, name: str) -> dict:
    """The params.yaml values of experiment `name` in `dvc exp show --json`: each baseline commit
    lists its experiments, each with its revisions; the first revision holds the experiment's name."""
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            head = experiment["revs"][0]
            if head.get("name") == name:
                return head["data"]["params"]["params.yaml"]["data"]
    raise AssertionError(f"no experiment named {name!r} in `dvc exp show`: {json.dumps(shown)[:2000]}")


# One task x one model: the stage target and what it needs (fetch and prepare of ETTh1).
TARGET = "train@etth1-gru"


def test_dvc_exp_run_with_an_override_recomposes_params_and_logs_a_new_mlflow_run(tmp_path):
    mirror = make_mirror(tmp_path / "mirror")
    repo = copy_repo(tmp_path / "repo")
    tiny = nested([*TINY_OVERRIDES, *mirror_checksums(mirror)])
    (repo / "conf/tiny.yaml").write_text(yaml.safe_dump({"defaults": ["config", "_self_"], **tiny}))
    run_in(repo, "dvc", "config", "hydra.config_name", "tiny")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    run_in(repo, *git, "add", "-A")
    run_in(repo, *git, "commit", "-qm", "tiny")

    env = {"RB_OFFLINE_DIR": str(mirror)}
    run_in(repo, "dvc", "exp", "run", "-n", "wide-gru", "-S", "model.gru.forecaster.hidden_size=20", TARGET, env=env)

    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["model"]["gru"]["forecaster"]["hidden_size"] == 20      # the override
    assert params["model"]["lstm"]["forecaster"]["hidden_size"] == 16     # the rest: conf/tiny.yaml
    shown = json.loads(run_in(repo, "dvc", "exp", "show", "--json").stdout)
    assert experiment_params(shown, "wide-gru")["model"]["gru"]["forecaster"]["hidden_size"] == 20

    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    experiment = client.get_experiment_by_name("etth1")
    (gru,) = client.search_runs([experiment.experiment_id], filter_string="tags.`dvc.exp_name` = 'wide-gru'")
    assert gru.info.run_name == "gru" and gru.data.tags["dvc.stage"] == TARGET
    assert gru.data.params["model.forecaster.hidden_size"] == "20"

    # A queued sweep runs in temporary copies of the repo; its MLflow runs must still land here.
    queued = run_in(repo, "dvc", "exp", "run", "--queue", "-S", "task.etth1.train.lr=1e-3,3e-3", TARGET,
                    env=env).stdout
    names = re.findall(r"Queued experiment '([\w-]+)'", queued)
    assert len(names) == 2
    run_in(repo, "dvc", "queue", "start", env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run_in(repo, "dvc", "queue", "status", env=env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(run_in(repo, "dvc", "exp", "show", "--json").stdout)
    logged = {}
    for name in names:
        (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`dvc.exp_name` = '{name}'")
        assert run.info.run_name == "gru"
        assert float(run.data.params["train.lr"]) == experiment_params(shown, name)["task"]["etth1"]["train"]["lr"]
        logged[name] = float(run.data.params["train.lr"])
    assert sorted(logged.values()) == [1e-3, 3e-3]   # one value per member, both values across the two
