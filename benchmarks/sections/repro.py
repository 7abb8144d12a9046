"""(f) repro-full and repro-noop: `dvc repro` wall time, full (a fresh clone of HEAD, empty
cache) and no-op (all up to date; must be <= 5 s). The two share one table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import spread, stats, table, verdict
from pipeline.tracking import git_tags

NOOP_TARGET_S = 5.0


def timed(command: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} in {cwd} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def repro_env() -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # each clone tracks into its own store
    if env.get("RB_OFFLINE_DIR"):  # the clone lives elsewhere: a relative mirror path would not resolve there
        env["RB_OFFLINE_DIR"] = str(Path(env["RB_OFFLINE_DIR"]).resolve())
    return env


def measure_full(repeats: int) -> dict:
    """`dvc repro` of a fresh clone of HEAD with an empty DVC cache: every stage runs."""
    if not os.environ.get("RB_OFFLINE_DIR"):
        print("repro-full: RB_OFFLINE_DIR is not set, so fetch downloads the datasets", file=sys.stderr)
    seconds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "clone"
            subprocess.run(["git", "clone", "-q", str(Path.cwd()), str(clone)], check=True)
            seconds.append(timed(["dvc", "repro"], clone, repro_env()))
    return {"commit": git_tags()["git.commit"], "seconds": stats(seconds)}


def measure_noop(repeats: int) -> dict:
    """`dvc repro` here, where everything is up to date: DVC's own overhead."""
    env = repro_env()
    status = subprocess.run(["dvc", "status", "--json"], env=env, capture_output=True, text=True, check=False)
    if status.returncode != 0 or json.loads(status.stdout or "{}"):
        raise RuntimeError(f"repro-noop needs an up-to-date pipeline; `dvc status` says: {status.stdout.strip()}"
                           f"{status.stderr.strip()}")
    seconds = [timed(["dvc", "repro"], Path.cwd(), env) for _ in range(repeats)]
    noop = verdict(seconds, NOOP_TARGET_S, higher_is_better=False)
    return {"seconds": noop["stats"], "target_s": noop["target"], "target_met": noop["met"]}


def render(results: dict) -> list[str]:
    """One table for whichever of repro-full and repro-noop `results` has."""
    rows = []
    if "repro-full" in results:
        rows.append(["full (fresh clone, empty cache)", spread(results["repro-full"]["seconds"])])
    if "repro-noop" in results:
        r = results["repro-noop"]
        mark = "" if r["target_met"] else " **missed**"
        rows.append([f"no-op (up to date; ≤ {r['target_s']:g} s)", spread(r["seconds"], digits=2) + mark])
    return table("## (f) `dvc repro` wall time (s)", ["run", "seconds"], rows)
