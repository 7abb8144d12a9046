"""A bounded load test of the served champions: `mlflow models serve` on 127.0.0.1, a fixed
number of well-formed requests from a few concurrent clients, and, while that load runs, the
requests a served model must refuse (each limit exceeded, and malformed bodies) with their 4xx.

    python -m benchmarks.run --only serve          # every task's models:/<task>@champion

Loopback only, bounded in count (`--serve-requests` per task) and time (each request's client
timeout is the server's serve.timeout_s plus a margin). Reported per task: throughput, p50 /
p95 / p99 latency of the well-formed requests, their error count, and for each refused request
the status, the time to the answer and whether the message names its limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

START_TIMEOUT_S = 180  # a cold start imports mlflow and onnxruntime and loads the model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(repo: Path, uri: str, log_path: Path, tracking_uri: str, timeout_s: int, workers: int = 1
           ) -> Iterator[str]:
    """`mlflow models serve -m <uri> --env-manager local` on a free loopback port, with the
    scoring server's request timeout; yields its base URL and stops the server (and its uvicorn
    workers: the whole process group) on the way out."""
    import requests

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env.pop("RB_OFFLINE_DIR", None)
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", str(workers), "-t", str(timeout_s)],
            cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"`mlflow models serve -m {uri}` exited:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no /ping answer from {uri} in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, 15)   # the server and its uvicorn workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()


# ---- the requests --------------------------------------------------------------------------------


def refused(kind, limits: dict, window: dict | None) -> dict[str, tuple[dict | str, int, str]]:
    """{name: (body, expected status, text the answer must hold)}: malformed bodies, and the
    kind's own (`refused_requests`: one over each of its limits, each answer naming its setting)."""
    return {"not JSON": ("{not json", 400, ""), "no known form": ({"rows": [1, 2]}, 400, ""),
            **kind.refused_requests(limits, window)}


def post(base: str, body: dict | str, timeout_s: float):
    """(status, seconds, text) of one POST /invocations."""
    import requests

    data = body if isinstance(body, str) else json.dumps(body)
    start = time.perf_counter()
    response = requests.post(f"{base}/invocations", data=data, headers={"Content-Type": "application/json"},
                             timeout=timeout_s)
    return response.status_code, time.perf_counter() - start, response.text


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000.0
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def load_test(base: str, kind, limits: dict, window: dict | None, requests_total: int, clients: int,
              timeout_s: int) -> dict:
    """`requests_total` well-formed requests from `clients` threads; halfway through, every
    refused case is sent too, from its own thread, while the load goes on."""
    body, client_timeout = kind.ordinary_request(window), timeout_s + 10
    post(base, body, client_timeout)  # warm-up: the first request pays for lazy initialisation
    cases = refused(kind, limits, window)
    with ThreadPoolExecutor(max_workers=clients + 1) as pool:
        start = time.perf_counter()
        load = [pool.submit(post, base, body, client_timeout) for _ in range(requests_total // 2)]
        bad = {name: pool.submit(post, base, case, client_timeout) for name, (case, _, _) in cases.items()}
        load += [pool.submit(post, base, body, client_timeout) for _ in range(requests_total - len(load))]
        answers = [future.result() for future in load]
        wall = time.perf_counter() - start
        refusals = {}
        for name, future in bad.items():
            status, seconds, text = future.result()
            expected_status, says = cases[name][1], cases[name][2]
            refusals[name] = {"status": status, "expected": expected_status, "seconds": seconds,
                              "named": says in text, "ok": status == expected_status and says in text}
    good = [seconds for status, seconds, _ in answers if status == 200]
    return {"requests": requests_total, "clients": clients, "seconds": wall,
            "throughput_per_s": len(good) / wall, "errors": len(answers) - len(good),
            **(percentiles(good) if good else {}), "refused": refusals,
            "all_refused": all(r["ok"] for r in refusals.values())}


def at_limit(base: str, body: dict, timeout_s: int) -> dict:
    """The longest request the kind serves (its `longest_request`), timed against the bound."""
    status, seconds, text = post(base, body, timeout_s + 10)
    chars = len(json.loads(text)["predictions"]["predictions"]["text"]) if status == 200 else 0
    return {"status": status, "chars": chars, "seconds": seconds, "timeout_s": timeout_s,
            "within_bound": status == 200 and seconds < timeout_s}
