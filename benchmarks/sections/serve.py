"""(g) serve: each task's champion behind `mlflow models serve` on 127.0.0.1: throughput and
p50 / p95 / p99 under a bounded load from concurrent clients, and every over-limit or malformed
request sent during it refused with its 4xx (the load itself: benchmarks/serving_load.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import table
from pipeline.config import Config
from pipeline.kinds.specs import spec_of
from pipeline.markdown import number


def measure(config: Config, tasks: list[str], requests_total: int, clients: int) -> dict:
    """Per task: its champion served (one worker, serve.timeout_s), under load_test's bounded load."""
    from benchmarks.serving_load import at_limit, load_test, served
    from pipeline.tracking import resolve_uri

    uri = resolve_uri(config.tracking)   # the servers run elsewhere: a relative SQLite path, made absolute
    limits, timeout_s = config.serve.limits.model_dump(), config.serve.timeout_s
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in tasks:
            head = config.task[name].head
            spec = spec_of(head)   # the requests are the kind's (pipeline/kinds/*_spec.py)
            window, longest = spec.request_material(config.task[name]), spec.longest_request(limits)
            with served(Path.cwd(), f"models:/{name}@champion", Path(tmp) / f"{name}.log", uri, timeout_s) as base:
                result[name] = {"head": head, "timeout_s": timeout_s,
                                **load_test(base, spec, limits, window, requests_total, clients, timeout_s)}
                if longest is not None:
                    result[name]["at_limit"] = at_limit(base, longest, timeout_s)
    return result


def load_row(name: str, r: dict) -> list[str]:
    """One task's row: its load's figures, and which refusals came as they must."""
    refusals = r["refused"]
    ok = sum(v["ok"] for v in refusals.values())
    missed = [k for k, v in refusals.items() if not v["ok"]]
    percentiles = [number(r.get(f"p{q}_ms", float("nan")), 1) for q in (50, 95, 99)]  # none where all failed
    return [name, f"{r['requests']} × {r['clients']}", number(r["throughput_per_s"], 1), *percentiles,
            str(r["errors"]), f"{ok} of {len(refusals)}" + (f" (**not**: {', '.join(missed)})" if missed else ""),
            f"{max(v['seconds'] for v in refusals.values()) * 1000:.0f}"]


def at_limit_line(name: str, longest: dict) -> str:
    """The longest request a generator accepts, answered within the server's timeout or not."""
    return (f"\n{name} at the generation limit: {longest['chars']:,} characters in "
            f"{longest['seconds']:.1f} s (status {longest['status']}; the server's timeout is "
            f"{longest['timeout_s']} s)" + ("" if longest["within_bound"] else " **over the bound**"))


def render(results: dict) -> list[str]:
    lines = table("## (g) Serving under load (`mlflow models serve`, one worker, loopback)",
                  ["task", "requests × clients", "req/s", "p50", "p95", "p99", "errors", "refused as expected",
                   "slowest refusal (ms)"],
                  [load_row(name, r) for name, r in results["serve"].items()],
                  intro="One run per task: well-formed requests from concurrent clients (latency in ms, of the "
                        "answered ones); during the load, each over-limit and malformed request, which must get "
                        "its 4xx with the limit named.")
    return lines + [at_limit_line(name, r["at_limit"]) for name, r in results["serve"].items() if "at_limit" in r]
