"""The data stages through real `dvc repro`, in a throw-away copy of the repo, on fixtures."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from tests.conftest import copy_repo, make_imdb_archive, run_in, synthetic_series, write_csv

# Shrink the real config to the fixtures; everything else is the committed conf/.
FIXTURE_OVERRIDES = [
    "task.imdb.prepare.vocab_size=50", "task.imdb.prepare.max_len=32", "task.imdb.prepare.val_fraction=0.25",
    "task.etth1.prepare.lookback=24", "task.etth1.prepare.horizon=12", "task.etth1.prepare.borders=[240,320,400]",
]


def sha256(path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def compose_params(repo, mirror, extra=()):
    overrides = [*FIXTURE_OVERRIDES,
                 f"task.imdb.source.offline.checksum={sha256(mirror / 'aclImdb_v1.tar.gz')}",
                 f"task.etth1.source.offline.checksum={sha256(mirror / 'ETTh1.csv')}", *extra]
    run_in(repo, sys.executable, "-m", "pipeline.config", *overrides)


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory):
    """A repo copy whose data stages ran once through `dvc repro` in offline mode."""
    root = tmp_path_factory.mktemp("dvc")
    mirror = root / "mirror"
    mirror.mkdir()
    make_imdb_archive(mirror / "aclImdb_v1.tar.gz")
    write_csv(mirror / "ETTh1.csv", synthetic_series(400))
    repo = copy_repo(root / "repo")
    compose_params(repo, mirror)
    env = {"RB_OFFLINE_DIR": str(mirror)}
    result = run_in(repo, "dvc", "repro", env=env)
    return repo, mirror, env, result


def test_dvc_dag_lists_the_data_stages(pipeline_repo):
    repo, *_ = pipeline_repo
    dag = run_in(repo, "dvc", "dag", "--mermaid").stdout
    for stage in ("fetch@imdb", "fetch@etth1", "prepare@imdb", "prepare@etth1"):
        assert stage in dag


def test_repro_fetches_prepares_and_writes_the_data_cards(pipeline_repo):
    repo, mirror, _, result = pipeline_repo
    for stage in ("fetch@imdb", "fetch@etth1", "prepare@imdb", "prepare@etth1"):
        assert f"Running stage '{stage}'" in result.stdout
    assert (repo / "data/raw/aclImdb_v1.tar.gz").read_bytes() == (mirror / "aclImdb_v1.tar.gz").read_bytes()
    imdb = json.loads((repo / "metrics/data/imdb.json").read_text())
    etth1 = json.loads((repo / "metrics/data/etth1.json").read_text())
    assert [imdb["splits"][s]["count"] for s in ("train", "val", "test")] == [18, 6, 24]
    assert etth1["windows"] == {"train": 205, "val": 69, "test": 69}
    assert sorted(p.name for p in (repo / "data/prepared/etth1").iterdir()) == [
        "meta.json", "test.npz", "train.npz", "val.npz"]
    lock = (repo / "dvc.lock").read_text()
    assert "prepare@imdb" in lock and "metrics/data/imdb.json" in lock
    # DVC metrics sees the cards.
    shown = json.loads(run_in(repo, "dvc", "metrics", "show", "--json").stdout)
    assert "metrics/data/etth1.json" in json.dumps(shown)


def test_a_changed_source_reruns_only_what_depends_on_it(pipeline_repo):
    repo, mirror, env, _ = pipeline_repo
    assert "up to date" in run_in(repo, "dvc", "status").stdout

    write_csv(mirror / "ETTh1.csv", synthetic_series(400, seed=1))  # a new version of the series
    compose_params(repo, mirror)
    status = run_in(repo, "dvc", "status").stdout
    assert "fetch@etth1" in status and "imdb" not in status

    result = run_in(repo, "dvc", "repro", env=env)
    assert "Running stage 'fetch@etth1'" in result.stdout
    assert "Running stage 'prepare@etth1'" in result.stdout
    assert "Running stage 'fetch@imdb'" not in result.stdout
    assert "Running stage 'prepare@imdb'" not in result.stdout


def test_a_wrong_mirror_checksum_fails_the_stage_and_leaves_no_output(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    make_imdb_archive(mirror / "aclImdb_v1.tar.gz")
    write_csv(mirror / "ETTh1.csv", synthetic_series(400))
    repo = copy_repo(tmp_path / "repo")
    compose_params(repo, mirror, extra=["task.etth1.source.offline.checksum=sha256:" + "0" * 64])
    result = run_in(repo, "dvc", "repro", "fetch@etth1", env={"RB_OFFLINE_DIR": str(mirror)}, check=False)
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr + result.stdout
    assert not (repo / "data/raw/ETTh1.csv").exists()
    assert list((repo / "data/raw").glob("*")) in ([], [repo / "data/raw/.gitignore"])
