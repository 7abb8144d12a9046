"""The champions in the browser: `python -m pipeline.deploy.web build` then `serve` on the tiny
pipeline, and headless Chromium drives each task's panel as a reader would. Each answer is
pipeline.deploy.predict's on the same model file: the label and the probabilities, the forecast
(within the CPU parity gate), the generated text for a seed (the same characters)."""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.deploy.web import ISOLATION, browser_tools, drive, server
from pipeline.parity import scaled_error
from tests.conftest import REPO_ROOT, run_in

NODE, CHROMIUM = browser_tools()
pytestmark = pytest.mark.skipif(NODE is None or CHROMIUM is None,
                                reason=f"needs Node.js and Chromium on PATH (node: {NODE}, chromium: {CHROMIUM})")

REVIEW = "An honest, moving film; the acting was superb, though the ending dragged."
PROMPT, SEED, CHARS = "ROMEO:", 3, 40


@pytest.fixture(scope="module")
def site(pipeline_repo, web_package, tmp_path_factory):
    """(repo, site folder, site.json, base URL): the site built from the tiny pipeline and served."""
    repo, *_ = pipeline_repo
    out = tmp_path_factory.mktemp("web") / "site"
    run_in(repo, sys.executable, "-m", "pipeline.deploy.web", "build", "--out", str(out), "--web", str(REPO_ROOT / "web"),
           timeout=600)
    httpd = server(out, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield repo, out, json.loads((out / "site.json").read_text()), f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def predict(repo, model, *args) -> dict:
    return json.loads(run_in(repo, sys.executable, "-m", "pipeline.deploy.predict", str(model), "--provider", "cpu",
                             *args).stdout)


def test_the_site_holds_each_tasks_champion_and_onnxruntime_web_from_the_pinned_package(site):
    repo, out, built, _ = site
    config = load_config(repo / "params.yaml")
    assert [t["name"] for t in built["tasks"]] == list(config.task)
    lock = json.loads((REPO_ROOT / "web/package-lock.json").read_text())
    assert built["onnxruntime_web"] == lock["packages"]["node_modules/onnxruntime-web"]["version"]
    for task in built["tasks"]:
        assert (out / task["name"] / "model.onnx").stat().st_size == task["bytes"]
        assert task["validation"] and all(k.startswith("best/val/") for k in task["validation"])
        assert task["meta"]["task"] == task["name"]
    assert not any("http" in line and "cdn" in line for line in (out / "app.mjs").read_text().splitlines())


def test_the_server_sends_the_isolation_headers_and_module_types(site):
    import urllib.request

    *_, url = site
    for path, kind in (("app.mjs", "text/javascript"), ("ort/ort-wasm-simd-threaded.wasm", "application/wasm")):
        with urllib.request.urlopen(url + path) as response:
            assert response.headers["Content-Type"] == kind
            assert all(response.headers[k] == v for k, v in ISOLATION.items())


def test_each_panel_in_chromium_answers_what_predict_answers(site, tmp_path):
    repo, out, built, url = site
    kinds = {t["kind"]: t for t in built["tasks"]}
    gates = load_config(repo / "params.yaml").export.gates.cpu.outputs
    plan = []
    for task in built["tasks"]:
        if task["kind"] == "classifier":
            plan.append({"task": task["name"], "fields": {"input": REVIEW}})
        elif task["kind"] == "forecaster":
            plan.append({"task": task["name"], "fields": {"file": str(out / task["name"] / task["sample"])}})
        else:
            plan.append({"task": task["name"], "fields": {"input": PROMPT, "max-chars": CHARS, "temperature": 0.8,
                                                          "seed": SEED, "top-k": ""}})
    page = drive(url, plan, tmp_path)
    assert page["ready"] == "true", page
    assert page["crossOriginIsolated"] is True
    outside = [u for u in page["requests"] if not u.startswith(url) and not u.startswith(("data:", "blob:"))]
    assert page["requests"] and not outside, outside   # nothing loads from outside the site
    answers = {r["task"]: r["result"] for r in page["results"]}
    assert set(answers) == {t["name"] for t in built["tasks"]} and not any("error" in a for a in answers.values()), answers

    classifier = kinds["classifier"]
    ours = answers[classifier["name"]]
    theirs = predict(repo, out / classifier["name"] / "model.onnx", "--text", REVIEW)["predictions"][0]
    assert ours["label"] == theirs["label"]
    labels = list(theirs["probabilities"])
    assert scaled_error(np.array([ours["probabilities"][k] for k in labels]), np.array(list(theirs["probabilities"].values())),
                        gates.rtol, gates.atol) <= 1

    forecaster = kinds["forecaster"]
    ours = answers[forecaster["name"]]
    theirs = predict(repo, out / forecaster["name"] / "model.onnx", "--csv",
                     str(out / forecaster["name"] / forecaster["sample"]))["predictions"]
    columns = theirs["columns"]
    assert ours["after"] == theirs["after"] and len(ours["forecast"]) == theirs["horizon"]
    assert scaled_error(np.array([[s[c] for c in columns] for s in ours["forecast"]]),
                        np.array([[s[c] for c in columns] for s in theirs["forecast"]]), gates.rtol, gates.atol) <= 1

    generator = kinds["generator"]
    ours = answers[generator["name"]]
    theirs = predict(repo, out / generator["name"] / "model.onnx", "--prompt", PROMPT, "--max-chars", str(CHARS),
                     "--temperature", "0.8", "--seed", str(SEED))["predictions"]
    assert ours["text"] == theirs["text"] and len(ours["text"]) == CHARS


def test_a_bad_csv_an_empty_review_and_requests_over_a_limit_are_refused_in_the_page(site, tmp_path):
    repo, out, built, url = site
    kinds = {t["kind"]: t for t in built["tasks"]}
    text_limit = json.loads(kinds["classifier"]["meta"]["serve_limits"])["max_text_chars"]
    limit = json.loads(kinds["generator"]["meta"]["serve_limits"])["max_generate_chars"]
    bad = tmp_path / "bad.csv"
    bad.write_text("date,nothing\n2020-01-01,1\n")
    page = drive(url, [{"task": kinds["forecaster"]["name"], "fields": {"file": str(bad)}},
                       {"task": kinds["generator"]["name"], "fields": {"input": PROMPT, "max-chars": limit + 1}},
                       {"task": kinds["classifier"]["name"], "fields": {"input": "é" * (text_limit + 1)}},
                       {"task": kinds["classifier"]["name"], "fields": {"input": " \n\t "}}],
                 tmp_path)
    csv_error, over_limit, long_review, empty_review = (r["result"].get("error", r["result"]) for r in page["results"])
    assert "column(s)" in csv_error and "not found" in csv_error and "nothing" in csv_error
    assert f"{limit + 1:,}" in over_limit and "serve.limits.max_generate_chars" in over_limit
    # counted in code points, as Python counts them (the UTF-16 length is the same here, the bytes twice it)
    assert f"{text_limit + 1:,}" in long_review and "serve.limits.max_text_chars" in long_review
    assert "empty" in empty_review
