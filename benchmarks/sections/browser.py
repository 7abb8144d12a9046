"""(h) browser: each task's champion in headless Chromium on onnxruntime-web, against Python
onnxruntime on the same model file with the same input. The site is built as
`python -m pipeline.deploy.web build` builds it and served on 127.0.0.1 with the isolation
headers; web/drive.mjs clicks each panel's button --timing-runs times. A figure is the
answer's whole time as the page and pipeline.deploy.predict each compute it (tokenising and the
session's run for the classifier; reading the CSV, scaling and the run for the forecaster; every
step and draw of the generator), after one untimed answer; and the time to create the session
(in the page, fetching the model too)."""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import spread, stats, table
from pipeline.config import Config

# A review of IMDB's median length (about 200 tokens), the same for every run of the benchmark.
REVIEW = " ".join(["The first hour is slow, but the performances are honest and the score is lovely;",
                   "I did not expect the ending, which some will find too neat, to move me as much as it did."] * 6)
PROMPT, CHARS, SEED = "ROMEO:", 200, 1
RUNS = 20   # timed answers per task, unless --timing-runs says otherwise


def inputs(task: dict, site: Path) -> tuple[dict, dict]:
    """(the page's fields, predict's arguments) for one task of site.json, the same input on both
    sides, by what its example holds (no kind named here): a series' sample CSV, a generator's
    sampling settings, else a text to classify."""
    if "sample" in task:
        sample = str(site / task["name"] / task["sample"])
        return {"file": sample}, {"csv": sample}
    if task["sampling"]:
        return ({"input": PROMPT, "max-chars": CHARS, "seed": SEED, "temperature": 0.8, "top-k": ""},
                {"prompt": PROMPT, "max_chars": CHARS, "seed": SEED, "temperature": 0.8})
    return {"input": REVIEW}, {"text": [REVIEW]}


def python_ms(model: Path, arguments: dict, runs: int) -> dict:
    """pipeline.deploy.predict's steps in-process on the CPU provider: the session's creation, then
    `runs` answers (after one untimed), each reading its request and answering it, with the session
    and the tokenizer made once, as in the page."""
    from pipeline.deploy.limits import limits_of
    from pipeline.deploy.predict import open_model, workload_session
    from pipeline.kinds.specs import spec_of

    args = argparse.Namespace(**{"text": None, "file": None, "csv": None, "tokenizer": None, "prompt": None,
                                 "max_chars": None, "temperature": None, "seed": None, "top_k": None, **arguments})
    started = time.perf_counter()
    session, meta = open_model(model, "cpu")
    session_ms = (time.perf_counter() - started) * 1000
    spec = spec_of(meta["head"])
    context = spec.context(meta, None)   # the tokenizer, read once as the page reads it once
    session = workload_session(session, model, meta, rows=spec.rows(spec.from_cli(args, meta, limits_of(meta))))

    def answer():
        return spec.answer(session, meta, spec.from_cli(args, meta, limits_of(meta)), context)

    answer()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer()
        times.append((time.perf_counter() - started) * 1000)
    return {"session_ms": session_ms, "ms": stats(times)}


def drive(url: str, plan: list[dict], folder: Path) -> dict:
    from pipeline.deploy.web import drive as drive_page

    page = drive_page(url, plan, folder, timeout=1800)
    if page.get("ready") != "true":
        raise RuntimeError(f"the page did not start: {page.get('status')}; console: {page.get('console')}")
    return page


def measure(config: Config, runs: int) -> dict:
    from pipeline.deploy.web import build, server

    with tempfile.TemporaryDirectory() as tmp:
        site_dir = Path(tmp) / "site"
        site = build(config, site_dir)
        httpd = server(site_dir, 0)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            fields = {task["name"]: inputs(task, site_dir) for task in site["tasks"]}
            plan = [{"task": name, "fields": page_fields, "repeat": runs + 1} for name, (page_fields, _) in fields.items()]
            page = drive(f"http://127.0.0.1:{httpd.server_address[1]}/", plan, Path(tmp))
        finally:
            httpd.shutdown()
        results = {"onnxruntime_web": site["onnxruntime_web"], "page_threads": page["threads"], "tasks": {}}
        for task, answered in zip(site["tasks"], page["results"]):
            if "error" in answered["result"]:
                raise RuntimeError(f"{task['name']}: the page answered {answered['result']['error']}")
            results["tasks"][task["name"]] = {
                "kind": task["kind"], "run": task["run"], "int8": task["int8"], "bytes": task["bytes"],
                "tokens": len(answered["result"]["ids"]) if "probabilities" in answered["result"] else None,
                "browser": {"session_ms": page["sessionMs"][task["name"]], "ms": stats(answered["ms"][1:])},
                "python": python_ms(site_dir / task["name"] / "model.onnx", fields[task["name"]][1], runs)}
    return results


def render(results: dict) -> list[str]:
    found = results["browser"]
    tokens = next((r["tokens"] for r in found["tasks"].values() if r["tokens"]), "–")
    rows = []
    for name, r in found["tasks"].items():
        browser, python = r["browser"], r["python"]
        rows.append([name, f"{r['run']} ({'INT8' if r['int8'] else 'fp32'}, {r['bytes'] / 1e6:.1f} MB)",
                     spread(browser["ms"], digits=2), spread(python["ms"], digits=2),
                     f"{browser['ms']['median'] / python['ms']['median']:.2f}",
                     f"{browser['session_ms']:.0f}", f"{python['session_ms']:.0f}"])
    return table("## (h) The champions in the browser: onnxruntime-web in Chromium against Python onnxruntime",
                 ["task", "model", "Chromium ms", "Python ms", "ratio", "Chromium session ms", "Python session ms"],
                 rows, intro=f"One answer per task, the same input on both sides: a review of {tokens} tokens, the "
                             f"series' bundled window, {CHARS} generated characters (seed {SEED}, temperature 0.8). Median "
                             f"(min–max) of the timed answers after one untimed. Chromium: headless, "
                             f"onnxruntime-web {found['onnxruntime_web']}, wasm, {found['page_threads']} thread(s); "
                             "Python: onnxruntime's CPU provider as pipeline.deploy.predict opens it. A session's "
                             "time in Chromium includes fetching the model from the local server.")
