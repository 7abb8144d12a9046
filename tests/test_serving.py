"""Serving: `mlflow models serve` over the registry's champion answers what pipeline.predict
prints; bad input is a 400 with pipeline.predict's message; the deployers' install has no torch."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from importlib.metadata import PackageNotFoundError, distribution

import pytest
import requests
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline import serving
from tests.conftest import REPO_ROOT, run_in
from tests.imports import import_closure

# ---- what the served model carries, and the deployers' install ----------------------------------


def test_the_served_code_is_the_serving_modules_whole_import_closure():
    assert sorted(serving.SERVED_CODE) == sorted(str(p) for p in import_closure(REPO_ROOT, "pipeline.serving"))


def test_predict_and_serving_import_without_torch_or_training_code():
    probe = ("import sys, pipeline.predict, pipeline.serving; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sklearn', 'gensim') "
             "or m in ('pipeline.train', 'pipeline.models', 'pipeline.tracking')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def deploy_group() -> list[str]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["dependency-groups"]["deploy"]


def test_the_deploy_group_pins_what_the_project_pins_and_what_serving_imports():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {Requirement(r).name: str(Requirement(r).specifier) for r in project}
    group = {Requirement(r).name: str(Requirement(r).specifier) for r in deploy_group()}
    assert all(spec.startswith("==") for spec in group.values())
    assert {name: pins[name] for name in group if name in pins} == {n: s for n, s in group.items() if n in pins}
    assert set(group) == set(serving.REQUIREMENTS)
    assert serving.pip_requirements() == [f"{name}{group[name]}" for name in serving.REQUIREMENTS]


def requirement_closure(roots: list[str]) -> set[str]:
    """Every distribution that installing `roots` pulls in, followed through the installed
    distributions' own metadata (Requires-Dist, markers evaluated here, extras honoured).
    Offline and in a second, unlike a resolver run against the index (`pip install --dry-run
    --report - --group deploy` took 37 s with network); the installed set is the project's
    pinned environment, so the versions are the ones the group pins."""
    seen: dict[str, set[str]] = {}
    pending = [Requirement(r) for r in roots]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            raise AssertionError(f"{name} (needed by the deploy group) is not installed here; cannot follow it") from None
        for line in requires:
            child = Requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in {"", *seen[name]}):
                pending.append(child)
    return set(seen)


def test_the_deployers_install_pulls_no_torch():
    pulled = requirement_closure(deploy_group())
    assert {"mlflow-skinny", "huggingface-hub", "onnxruntime-gpu"} <= pulled   # it really follows the tree
    assert not {name for name in pulled if name == "torch" or name.startswith(("nvidia-", "torch"))}


# ---- requests that never reach a model ------------------------------------------------------


@pytest.mark.parametrize("records, message", [
    ([{"prompt": "ROMEO:", "temperature": -1}], "--temperature must be >= 0"),
    ([{"prompt": "ROMEO:", "temp": 0.5}], "unknown field(s) ['temp']"),
    ([{"prompt": "ROMEO:", "max_chars": 2.5}], "max_chars must be a whole number, found 2.5"),
    ([{"prompt": "ROMEO:", "seed": -3}], "seed must be at least 0, found -3"),
    ([{"prompt": "A"}, {"prompt": "B"}], "a generator takes one row"),
    ([{"max_chars": 10}], "a generator needs a field 'prompt'"),
], ids=["negative-temperature", "unknown-field", "fractional-max-chars", "negative-seed", "two-rows", "no-prompt"])
def test_bad_generation_requests_name_the_field(records, message):
    with pytest.raises(serving.predict.PredictError) as raised:
        serving.generation_args(records)
    assert message in str(raised.value)


def test_generation_requests_fill_in_the_command_lines_defaults():
    assert serving.generation_args([{"prompt": "ROMEO:"}]) == {"prompt": "ROMEO:", **serving.GENERATION_DEFAULTS}


@pytest.mark.parametrize("records, message", [
    ([], "the classifier takes a field 'text', one review per row; found fields []"),
    ([{"review": "fine"}], "found fields ['review']"),
    ([{"text": "fine"}, {"text": "  "}], "text #1 is empty"),
    ([{"text": 3}], "text #0 is 3, not a string"),
])
def test_bad_classification_requests_say_what_is_missing(records, message):
    with pytest.raises(serving.predict.PredictError) as raised:
        serving.texts_of(records)
    assert message in str(raised.value)


def test_named_inputs_and_a_single_prompt_become_rows():
    assert serving.records_of({"text": ["a", "b"]}) == [{"text": "a"}, {"text": "b"}]
    assert serving.records_of({"prompt": "ROMEO:", "seed": 2}) == [{"prompt": "ROMEO:", "seed": 2}]
    with pytest.raises(serving.predict.PredictError, match="expected named fields"):
        serving.records_of(["just", "a", "list"])


# ---- `mlflow models serve` over the fixture pipeline's registry -------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(repo, uri: str, log_path):
    """`mlflow models serve -m <uri> --env-manager local` on a free port; stopped on the way out."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"}
    env.pop("RB_OFFLINE_DIR", None)
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"the server exited:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no /ping answer in 180 s:\n{log_path.read_text()[-3000:]}"
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        yield base
    finally:
        os.killpg(server.pid, 15)   # the server and its uvicorn worker
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()


def post(base: str, body: dict) -> requests.Response:
    return requests.post(f"{base}/invocations", json=body, timeout=120)


def predict_cli(repo, *args: str) -> dict:
    result = run_in(repo, sys.executable, "-m", "pipeline.predict", *args,
                    env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"})
    return json.loads(result.stdout)


def assert_refused(response: requests.Response, message: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and message in body["message"], body


def test_the_served_champions_answer_what_predict_prints_and_refuse_bad_input(pipeline_repo, tmp_path):
    repo, mirror, *_ = pipeline_repo
    lines = (mirror / "ETTh1.csv").read_text().splitlines()
    (tmp_path / "slice.csv").write_text("\n".join(lines[:41]) + "\n")
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:41]]
    window = {"columns": header, "data": [[row[0], *map(float, row[1:])] for row in rows]}
    with contextlib.ExitStack() as stack:   # the three servers start side by side
        imdb, etth1, shakespeare = (stack.enter_context(served(repo, f"models:/{task}@champion", tmp_path / f"{task}.log"))
                                    for task in ("imdb", "etth1", "shakespeare"))

        reviews = ["a superb and wonderful film", "dull, awful and boring"]
        answer = post(imdb, {"dataframe_records": [{"text": text} for text in reviews]})
        assert answer.status_code == 200, answer.text
        expected = predict_cli(repo, "models:/imdb@champion", "--text", reviews[0], "--text", reviews[1])
        assert answer.json() == {"predictions": expected}
        assert post(imdb, {"inputs": {"text": reviews}}).json() == {"predictions": expected}
        assert_refused(post(imdb, {"dataframe_records": [{"review": "fine"}]}), "the classifier takes a field 'text'")
        assert_refused(post(imdb, {"dataframe_records": [{"text": ""}]}), "text #0 is empty")

        answer = post(etth1, {"dataframe_split": window})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": predict_cli(repo, "models:/etth1@champion", "--csv",
                                                            str(tmp_path / "slice.csv"))}
        assert_refused(post(etth1, {"dataframe_split": {**window, "columns": [header[0], "X", *header[2:]]}}),
                       f"column(s) ['{header[1]}'] not found")
        assert_refused(post(etth1, {"dataframe_split": {**window, "data": window["data"][:5]}}),
                       "5 data rows, but the model looks back 24 rows")

        request = {"prompt": "ROMEO:", "max_chars": 40, "temperature": 0.5, "seed": 3}
        answer = post(shakespeare, {"dataframe_records": [request]})
        assert answer.status_code == 200, answer.text
        expected = predict_cli(repo, "models:/shakespeare@champion", "--prompt", "ROMEO:", "--max-chars", "40",
                               "--temperature", "0.5", "--seed", "3")
        assert answer.json() == {"predictions": expected}
        defaults = post(shakespeare, {"dataframe_records": [{"prompt": "ROMEO:"}]})
        assert defaults.json() == {"predictions": predict_cli(repo, "models:/shakespeare@champion", "--prompt", "ROMEO:")}
        assert_refused(post(shakespeare, {"dataframe_records": [{**request, "temperature": -1}]}),
                       "--temperature must be >= 0")
        assert_refused(post(shakespeare, {"dataframe_records": [{"max_chars": 5}]}), "needs a field 'prompt'")
