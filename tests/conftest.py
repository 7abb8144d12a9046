"""Shared fixtures: small datasets the tests build themselves, and a throw-away repo copy.

Nothing here touches the network. The real datasets are only read by `slow` tests.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# What a copy of the repo needs to run the pipeline (tracked files, not data or venv).
REPO_FILES = ["conf", "pipeline", "hydra_plugins", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvc/config",
              ".dvc/.gitignore", ".dvcignore", ".gitignore"]

POS_WORDS = ["great", "wonderful", "superb", "loved", "brilliant"]
NEG_WORDS = ["awful", "boring", "terrible", "hated", "dull"]
FILLER = ["the", "movie", "film", "plot", "actor", "story", "scene", "and", "a", "of", "was", "it",
          "director", "music", "ending", "i", "this", "very", "not", "really"]
ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]

# The real conf/, shrunk to the fixtures: tiny vocabulary, short windows, small models.
TINY_OVERRIDES = [
    "task.imdb.prepare.vocab_size=50", "task.imdb.prepare.max_len=32", "task.imdb.prepare.val_fraction=0.25",
    "task.etth1.prepare.lookback=24", "task.etth1.prepare.horizon=12", "task.etth1.prepare.borders=[240,320,400]",
    "task.imdb.embeddings.dim=8", "task.imdb.embeddings.epochs=1",
    "task.imdb.train.epochs=2", "task.imdb.train.batch_size=8",
    "task.imdb.train.lr=null",   # IMDB on the shared train.lr here, as a task of one's own data is by default
    "task.etth1.train.epochs=2", "task.etth1.train.batch_size=32",
    "task.shakespeare.train.epochs=2", "task.shakespeare.train.steps_per_epoch=4",
    "task.shakespeare.train.batch_size=8", "task.shakespeare.train.block_size=32",
    "task.shakespeare.train.eval_batch_size=16", "task.shakespeare.train.eval_streams=4",
    # No peephole opt-ins on IMDB and Shakespeare: ETTh1 trains all three cells end to end, and the
    # peephole classifier and generator are covered by tests/test_peephole.py and tests/test_config.py.
    *(f"model.{m}.{key}" for m in ("lstm", "gru", "peephole") for key in (
        "classifier.embedding_dim=8", "classifier.hidden_size=8",
        "forecaster.hidden_size=16", "forecaster.segment_len=6",
        "generator.embedding_dim=8", "generator.hidden_size=16")),
]
SPEAKERS = ["ROMEO", "JULIET", "FIRST CITIZEN", "MENENIUS"]


def committed_files(repo: Path = REPO_ROOT, rev: str = "HEAD") -> dict[str, bytes]:
    """{path: content} of every file committed at `rev`: what the repository holds, never what a
    local `dvc repro` has just rewritten in the working tree (metrics/, plots/, reports/). Skips
    the test outside a git checkout."""
    found = subprocess.run(["git", "archive", "--format=tar", rev], cwd=repo, capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"{repo}: not a git checkout with a commit {rev} ({found.stderr.decode().strip()})")
    with tarfile.open(fileobj=io.BytesIO(found.stdout)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def committed_tree(dest: Path, repo: Path = REPO_ROOT, rev: str = "HEAD") -> Path:
    """The files committed at `rev`, written under `dest`."""
    for name, content in committed_files(repo, rev).items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(content)
    return dest


def synthetic_review(rng: np.random.Generator, label: str) -> str:
    words = list(rng.choice(FILLER, size=int(rng.integers(6, 40))))
    sentiment = POS_WORDS if label == "pos" else NEG_WORDS
    words += list(rng.choice(sentiment, size=3))
    rng.shuffle(words)
    middle = len(words) // 2
    return " ".join(words[:middle]) + ".<br /><br />" + " ".join(words[middle:]).capitalize() + "!"


def add_member(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def imdb_reviews(n_per_class: int = 12, n_unsup: int = 10, seed: int = 0) -> dict[str, str]:
    """{member name: review text} in the aclImdb layout, with marker words in known places."""
    rng = np.random.default_rng(seed)
    members = {}
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            for i in range(n_per_class):
                rating = int(rng.integers(7, 11) if label == "pos" else rng.integers(1, 5))
                # A word found only in test: it must never enter the vocabulary.
                marker = " testonlyword" if split == "test" and i < 3 else ""
                members[f"aclImdb/{split}/{label}/{i}_{rating}.txt"] = synthetic_review(rng, label) + marker
    for i in range(n_unsup):
        marker = " unsuponlyword" if i < 3 else ""  # enters the vocabulary only with vocab_from_unlabelled
        members[f"aclImdb/train/unsup/{i}_0.txt"] = synthetic_review(rng, "pos" if i % 2 else "neg") + marker
    return members


def synthetic_play(lines: int = 600, seed: int = 0) -> str:
    """A small play in Tiny Shakespeare's layout: `SPEAKER:` lines, then a line of words."""
    rng = np.random.default_rng(seed)
    words = FILLER + POS_WORDS + NEG_WORDS
    parts = []
    for _ in range(lines):
        sentence = " ".join(rng.choice(words, size=int(rng.integers(3, 9)))).capitalize()
        parts.append(f"{rng.choice(SPEAKERS)}:\n{sentence}{rng.choice(['.', '!', '?', ','])}\n\n")
    return "".join(parts)


def make_imdb_archive(path: Path, members: dict[str, str] | None = None) -> Path:
    members = imdb_reviews() if members is None else members
    # mtime=0 in the gzip header: the same members always give the same bytes (and checksum).
    with gzip.GzipFile(path, "wb", mtime=0) as packed, tarfile.open(fileobj=packed, mode="w") as tar:
        add_member(tar, "aclImdb/README", "Large Movie Review Dataset (test fixture)\n")
        for name, text in members.items():
            add_member(tar, name, text)
    return path


def synthetic_series(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=len(ETT_COLUMNS))
    return 5 + 3 * np.sin(2 * np.pi * t / 24 + phase) + rng.normal(0, 0.3, size=(rows, len(ETT_COLUMNS)))


def write_csv(path: Path, values: np.ndarray, columns: list[str] = ETT_COLUMNS,
              start: str = "2016-07-01 00:00:00") -> Path:
    import pandas as pd

    frame = pd.DataFrame(values, columns=columns)
    frame.insert(0, "date", pd.date_range(start, periods=len(values), freq="h").strftime("%Y-%m-%d %H:%M:%S"))
    frame.to_csv(path, index=False, float_format="%.6f")
    return path


@pytest.fixture
def imdb_archive(tmp_path: Path) -> Path:
    return make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")


@pytest.fixture
def ett_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "ETTh1.csv", synthetic_series(400))


def copy_repo(dest: Path) -> Path:
    """A throw-away copy of the project (code, conf, dvc.yaml) as its own git repository."""
    dest.mkdir(parents=True)
    for name in REPO_FILES:
        src = REPO_ROOT / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run_in(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
           timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a command in `repo` with this interpreter's environment first on PATH."""
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for name in ("RB_OFFLINE_DIR", "MLFLOW_TRACKING_URI", "DVC_EXP_NAME"):  # only what the test passes
        full_env.pop(name, None)
    full_env.update(env or {})
    result = subprocess.run(list(args), cwd=repo, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def sha256_spec(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def make_mirror(folder: Path, series_seed: int = 0) -> Path:
    """The source files, as an offline mirror (RB_OFFLINE_DIR) would hold them."""
    folder.mkdir(parents=True, exist_ok=True)
    make_imdb_archive(folder / MIRROR_FILES["imdb"])
    write_csv(folder / MIRROR_FILES["etth1"], synthetic_series(400, seed=series_seed))
    (folder / MIRROR_FILES["shakespeare"]).write_text(synthetic_play(), encoding="utf-8")
    return folder


MIRROR_FILES = {"imdb": "aclImdb_v1.tar.gz", "etth1": "ETTh1.csv", "shakespeare": "tinyshakespeare.txt"}


def mirror_checksums(mirror: Path) -> list[str]:
    """Overrides that point each task's offline checksum at the mirror's fixture file."""
    return [f"task.{task}.source.offline.checksum={sha256_spec(mirror / name)}" for task, name in MIRROR_FILES.items()]


def nested(overrides: list[str]) -> dict:
    """["a.b=1", ...] -> {"a": {"b": 1}}: the tiny settings as a config file DVC can compose."""
    tree: dict = {}
    for override in overrides:
        key, value = override.split("=", 1)
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return tree


def compose_params(repo: Path, mirror: Path, *extra: str) -> None:
    """params.yaml of `repo`: the tiny settings, and the mirror's checksums."""
    run_in(repo, sys.executable, "-m", "pipeline.config", *TINY_OVERRIDES, *mirror_checksums(mirror), *extra)


def reproduced_repo(root: Path, *targets: str):
    """(repo, mirror, env, result): a repo copy in `root` with the tiny settings, whose
    `dvc repro [targets]` (everything when none) ran offline from a mirror of the fixtures."""
    mirror = make_mirror(root / "mirror")
    repo = copy_repo(root / "repo")
    compose_params(repo, mirror)
    env = {"RB_OFFLINE_DIR": str(mirror)}
    result = run_in(repo, "dvc", "repro", *targets, env=env)
    return repo, mirror, env, result


def is_scratch(relative: Path) -> bool:
    """What DVC, Python and MLflow write for themselves while a repo is only read: DVC's state and
    locks, bytecode, and the `registered_model_meta` that MLflow writes beside a registered model's
    artifacts whenever a `models:/` URI is loaded from a local store."""
    return (relative.parts[:2] == (".dvc", "tmp") or "__pycache__" in relative.parts
            or (relative.parts[0] == "mlruns" and relative.name == "registered_model_meta"))


def snapshot(repo: Path) -> dict[str, str]:
    """{relative path: sha256} of every file in `repo` but the scratch ones."""
    import hashlib

    return {str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in repo.rglob("*") if path.is_file() and not is_scratch(path.relative_to(repo))
            and path.relative_to(repo).parts[0] != ".git"}   # git's own index and logs change on a read


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def rebase_mlflow_store(database: Path, old_root: Path, new_root: Path) -> None:
    """Point a copied SQLite MLflow store at the copy: experiments, runs and logged models hold
    absolute artifact paths, and a run logged in the copy must not write into the original."""
    import sqlite3

    with sqlite3.connect(database) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            columns = [row[1] for row in db.execute(f"PRAGMA table_info('{table}')") if "CHAR" in row[2].upper()
                       or "TEXT" in row[2].upper()]
            for column in columns:
                db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE "{column}" LIKE ?',
                           (str(old_root), str(new_root), f"%{old_root}%"))


def copy_pipeline(source: Path, dest: Path) -> Path:
    """A writable copy of a reproduced repo: its outputs, DVC cache and MLflow store, rebased."""
    shutil.copytree(source, dest, symlinks=True, ignore=lambda folder, names: [
        name for name in names if is_scratch((Path(folder) / name).relative_to(source))])
    if (dest / "mlflow.db").is_file():
        rebase_mlflow_store(dest / "mlflow.db", source, dest)
    return dest


def shared_root(config, tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this session sees (the session's base temp folder's
    parent under xdist; the base temp folder itself without it, or with -p no:xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


@pytest.fixture(scope="session")
def pipeline_repo(request, tmp_path_factory):
    """(repo, mirror, env, result): a repo copy whose whole pipeline ran once through `dvc repro`
    in offline mode, once per session however many xdist workers share it (the first to get
    the lock builds it; the others wait and reuse it). Read-only: a test that changes it takes
    `pipeline_copy`. Each worker checks at its end that no file changed since the build."""
    from filelock import FileLock

    root = shared_root(request.config, tmp_path_factory)
    built = root / "pipeline" / "built.json"
    failed = root / "pipeline-failed.txt"
    with FileLock(str(root / "pipeline.lock")):
        if failed.is_file():
            pytest.fail(f"the shared pipeline failed to build in another worker:\n{failed.read_text()}")
        if not built.is_file():
            try:
                repo, mirror, env, result = reproduced_repo(root / "pipeline")
            except BaseException as exc:
                failed.write_text(str(exc))
                raise
            record = {"repo": str(repo), "mirror": str(mirror), "env": env, "stdout": result.stdout,
                      "snapshot": snapshot(repo)}
            built.write_text(json.dumps(record))
        record = json.loads(built.read_text())
    repo = Path(record["repo"])
    yield repo, Path(record["mirror"]), record["env"], subprocess.CompletedProcess(["dvc", "repro"], 0, record["stdout"])
    changed = changed_files(record["snapshot"], snapshot(repo))
    assert not changed, f"tests changed the shared pipeline repo (a test that writes takes pipeline_copy): {changed}"


@pytest.fixture(scope="session")
def web_package(request, tmp_path_factory):
    """web/'s npm packages (onnxruntime-web, puppeteer-core), installed once per session from the
    lockfile where missing: the first xdist worker to get the lock runs `npm ci`, the others wait."""
    from filelock import FileLock

    from pipeline.deploy.web import onnxruntime_web

    with FileLock(str(shared_root(request.config, tmp_path_factory) / "web.lock")):
        return onnxruntime_web(REPO_ROOT / "web")


@pytest.fixture
def pipeline_copy(pipeline_repo, tmp_path):
    """(repo, mirror, env): a writable copy of the shared pipeline, every stage up to date."""
    source, mirror, env, _ = pipeline_repo
    return copy_pipeline(source, tmp_path / "repo"), mirror, env


def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests in reverse order (shows that no test depends on another)")


def pipeline_first_then_last(items: list) -> list:
    """The tests that need the shared tiny pipeline (`pipeline_repo`, minutes to build) moved last,
    but for the first of them, moved first: one xdist worker builds the pipeline while the other
    runs the tests that do not need it, instead of both waiting on its lock (xdist hands each free
    worker the next test in this order). Stable: the order within each part is kept."""
    needs = [item for item in items if "pipeline_repo" in item.fixturenames]
    if not needs:
        return items
    return [needs[0], *(item for item in items if "pipeline_repo" not in item.fixturenames), *needs[1:]]


def pytest_collection_modifyitems(config, items):
    """--reverse reverses the order (then the pipeline's tests are put first and last as above);
    `gpu` tests skip, with the reason, where torch sees no CUDA device."""
    import torch

    if config.getoption("--reverse"):
        items.reverse()
    items[:] = pipeline_first_then_last(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; torch.cuda.is_available() is False here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
