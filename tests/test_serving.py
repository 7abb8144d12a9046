"""Serving: `mlflow models serve` over the registry's champion answers what pipeline.deploy.predict
prints; bad input is a 400 with pipeline.deploy.predict's message; the deployers' install has no torch."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import tomllib
from importlib.metadata import PackageNotFoundError, distribution

import pytest
import requests
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks.serving_load import at_limit, load_test, refused, served
from pipeline.deploy import serving
from pipeline.kinds import classifier_spec, generator_spec
from pipeline.kinds.generator_spec import SAMPLING
from pipeline.kinds import SETTINGS as HEAD_SETTINGS
from pipeline.kinds.specs import spec_of
from pipeline.config import load_config
from tests.conftest import REPO_ROOT, run_in
from tests.imports import lookup_closure

# ---- what the served model carries, and the deployers' install ----------------------------------


def test_the_served_code_is_the_serving_modules_whole_import_closure():
    """Its static imports, and the spec of every kind of head, which it looks up by name."""
    closure = lookup_closure(REPO_ROOT, "pipeline.deploy.serving", {"head": set(HEAD_SETTINGS)})
    assert sorted(serving.SERVED_CODE) == sorted(str(p) for p in closure)


def test_predict_and_serving_import_without_torch_or_training_code():
    probe = ("import sys, pipeline.deploy.predict, pipeline.deploy.serving; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sklearn', 'gensim') "
             "or m.startswith(('pipeline.stages', 'pipeline.nets', 'pipeline.training')) or m == 'pipeline.tracking'))")
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
        generator_spec.from_records(records)
    assert message in str(raised.value)


def test_generation_requests_fill_in_the_command_lines_defaults():
    assert generator_spec.from_records([{"prompt": "ROMEO:"}]) == {"prompt": "ROMEO:", **SAMPLING}


@pytest.mark.parametrize("records, message", [
    ([], "the classifier takes a field 'text', one review per row; found fields []"),
    ([{"review": "fine"}], "found fields ['review']"),
    ([{"text": "fine"}, {"text": "  "}], "text #1 is empty"),
    ([{"text": 3}], "text #0 is 3, not a string"),
])
def test_bad_classification_requests_say_what_is_missing(records, message):
    with pytest.raises(serving.predict.PredictError) as raised:
        classifier_spec.from_records(records)
    assert message in str(raised.value)


LIMITS = {"max_texts": 3, "max_text_chars": 10, "max_series_rows": 30, "max_prompt_chars": 8, "max_generate_chars": 50}
COLUMNS = ["HUFL", "OT"]


def meta_of(head: str) -> dict:
    """The metadata serving reads, for a model of `head` with the limits above."""
    meta = {"head": head, "task": "t", "model": "m", "serve_limits": json.dumps(LIMITS)}
    if head == "forecaster":
        meta.update(columns=json.dumps(COLUMNS), lookback="4", time_column="date")
    return meta


def parsed(body) -> object:
    """What MLflow's scoring server hands a model without a signature, for a JSON body."""
    from mlflow.models import Model
    from mlflow.pyfunc.scoring_server import _parse_json_data

    return _parse_json_data(json.dumps(body), Model(), None).data


@pytest.mark.parametrize("head, body, rows", [
    ("classifier", {"inputs": ["a", "b"]}, [{"text": "a"}, {"text": "b"}]),
    ("classifier", {"inputs": "a"}, [{"text": "a"}]),
    ("classifier", {"instances": ["a", "b"]}, [{"text": "a"}, {"text": "b"}]),
    ("classifier", {"inputs": {"text": ["a", "b"]}}, [{"text": "a"}, {"text": "b"}]),
    ("classifier", {"inputs": [{"text": "a"}]}, [{"text": "a"}]),
    ("classifier", {"dataframe_records": [{"text": "a"}]}, [{"text": "a"}]),
    ("generator", {"inputs": "ROMEO:"}, [{"prompt": "ROMEO:"}]),
    ("generator", {"inputs": {"prompt": "ROMEO:", "seed": 2}}, [{"prompt": "ROMEO:", "seed": 2}]),
    ("forecaster", {"inputs": [[1.0, 2.0], [3.0, 4.0]]}, [{"HUFL": 1.0, "OT": 2.0}, {"HUFL": 3.0, "OT": 4.0}]),
    ("forecaster", {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0]]}}, [{"HUFL": 1.0, "OT": 2.0}]),
], ids=["inputs-list", "inputs-string", "instances", "named-fields", "row-dicts", "records", "prompt-string",
        "prompt-fields", "matrix", "split"])
def test_every_form_the_scoring_server_parses_becomes_the_same_rows(head, body, rows):
    assert serving.records_of(parsed(body), meta_of(head)) == rows


@pytest.mark.parametrize("head, body, example", [
    ("classifier", {"inputs": [[1, 2]]}, '{"inputs": ["A wonderful film.", "Dull."]}'),
    ("classifier", {"inputs": 5}, '{"dataframe_records": [{"text": "A wonderful film."}]}'),
    ("forecaster", {"inputs": ["a", "b"]}, '{"dataframe_split": {"columns": ["HUFL", "OT"], "data": [[...], ...]}}'),
    ("forecaster", {"inputs": [[1.0, 2.0, 3.0]]}, "at least 4 rows, oldest first"),
    ("generator", {"inputs": [1.5]}, '{"inputs": "ROMEO:"}'),
], ids=["numbers-to-a-classifier", "a-number", "strings-to-a-forecaster", "wrong-width", "a-number-prompt"])
def test_a_form_a_model_cannot_read_is_refused_with_a_request_that_works(head, body, example):
    with pytest.raises(serving.predict.PredictError) as raised:
        serving.records_of(parsed(body), meta_of(head))
    assert f"the {head} cannot read this request" in str(raised.value) and example in str(raised.value)


class Untouchable:
    """Sessions or a tokenizer that fail the test if a request reaches them."""

    def __getitem__(self, key):
        raise AssertionError("the request reached the model")

    def encode_batch(self, texts):
        raise AssertionError("the request reached the tokenizer")


@pytest.mark.parametrize("head, body, setting, found", [
    ("classifier", {"inputs": ["ok"] * 4}, "max_texts", 4),
    ("classifier", {"dataframe_records": [{"text": "ok"}] * 4}, "max_texts", 4),
    ("classifier", {"inputs": ["ok", "a" * 11]}, "max_text_chars", 11),
    ("forecaster", {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0]] * 31}}, "max_series_rows", 31),
    ("generator", {"inputs": "a" * 9}, "max_prompt_chars", 9),
    ("generator", {"dataframe_records": [{"prompt": "ROMEO:", "max_chars": 51}]}, "max_generate_chars", 51),
], ids=["texts", "text-records", "text-chars", "series-rows", "prompt-chars", "generated-chars"])
def test_a_request_over_a_limit_is_refused_on_its_sizes_before_any_work(head, body, setting, found):
    with pytest.raises(serving.predict.LimitError) as raised:
        serving.answer(Untouchable(), meta_of(head), Untouchable(), parsed(body), LIMITS)
    message = str(raised.value)
    assert f"{found} is over the model's limit of {LIMITS[setting]}" in message
    assert f"serve.limits.{setting} in conf/serve/default.yaml" in message and "--no-limits" in message


def test_requests_at_the_limits_pass_the_checks():
    meta = meta_of("classifier")
    assert classifier_spec.from_records([{"text": "a" * 10}] * 3, limits=LIMITS) == ["a" * 10] * 3
    assert generator_spec.from_records([{"prompt": "a" * 8, "max_chars": 50}], limits=LIMITS)["max_chars"] == 50
    assert serving.row_count(parsed({"inputs": {"text": ["a", "b", "c"]}})) == 3 and meta["head"] == "classifier"


# ---- `mlflow models serve` over the fixture pipeline's registry -------------------------------


def post(base: str, body: dict) -> requests.Response:
    return requests.post(f"{base}/invocations", json=body, timeout=120)


def predict_cli(repo, *args: str) -> dict:
    result = run_in(repo, sys.executable, "-m", "pipeline.deploy.predict", *args,
                    env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db"})
    return json.loads(result.stdout)


def assert_refused(response: requests.Response, message: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and message in body["message"], body


def test_the_served_champions_answer_what_predict_prints_and_refuse_bad_input(pipeline_repo, tmp_path):
    repo, mirror, *_ = pipeline_repo
    config = load_config(repo / "params.yaml")
    limits, timeout_s = config.serve.limits.model_dump(), config.serve.timeout_s
    lines = (mirror / "ETTh1.csv").read_text().splitlines()
    (tmp_path / "slice.csv").write_text("\n".join(lines[:41]) + "\n")
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:41]]
    window = {"columns": header, "data": [[row[0], *map(float, row[1:])] for row in rows]}
    tracking = f"sqlite:///{repo}/mlflow.db"
    with contextlib.ExitStack() as stack:   # the three servers start side by side
        imdb, etth1, shakespeare = (
            stack.enter_context(served(repo, f"models:/{task}@champion", tmp_path / f"{task}.log", tracking, timeout_s))
            for task in ("imdb", "etth1", "shakespeare"))

        reviews = ["a superb and wonderful film", "dull, awful and boring"]
        answer = post(imdb, {"dataframe_records": [{"text": text} for text in reviews]})
        assert answer.status_code == 200, answer.text
        expected = predict_cli(repo, "models:/imdb@champion", "--text", reviews[0], "--text", reviews[1])
        assert answer.json() == {"predictions": expected}
        assert post(imdb, {"inputs": {"text": reviews}}).json() == {"predictions": expected}
        assert post(imdb, {"inputs": reviews}).json() == {"predictions": expected}   # the natural request
        assert post(imdb, {"inputs": reviews[0]}).json() == {
            "predictions": predict_cli(repo, "models:/imdb@champion", "--text", reviews[0])}
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
        assert post(shakespeare, {"inputs": "ROMEO:"}).json() == defaults.json()
        assert_refused(post(shakespeare, {"dataframe_records": [{**request, "temperature": -1}]}),
                       "--temperature must be >= 0")
        assert_refused(post(shakespeare, {"dataframe_records": [{"max_chars": 5}]}), "needs a field 'prompt'")

        # Every limit of every served kind: a 400 that names it, long before any timeout.
        for base, head in ((imdb, "classifier"), (etth1, "forecaster"), (shakespeare, "generator")):
            for name, (body, status, says) in refused(spec_of(head), limits, window).items():
                start = time.perf_counter()
                response = requests.post(f"{base}/invocations", data=body if isinstance(body, str) else json.dumps(body),
                                         headers={"Content-Type": "application/json"}, timeout=timeout_s)
                assert response.status_code == status and says in response.text, (head, name, response.text[:500])
                assert time.perf_counter() - start < 1.0, (head, name)

        # The longest generation the limits allow is answered inside the server's time bound.
        longest = at_limit(shakespeare, generator_spec.longest_request(limits), timeout_s)
        assert longest["status"] == 200 and longest["chars"] == limits["max_generate_chars"]
        assert longest["within_bound"], longest

        # A small load: concurrent well-formed requests all answered while refusals go on beside them.
        for base, head in ((imdb, "classifier"), (etth1, "forecaster"), (shakespeare, "generator")):
            load = load_test(base, spec_of(head), limits, window, requests_total=12, clients=3, timeout_s=timeout_s)
            assert load["errors"] == 0 and load["all_refused"], load
            assert load["p50_ms"] <= load["p95_ms"] <= load["p99_ms"] and load["throughput_per_s"] > 0


def test_predict_applies_the_models_limits_and_no_limits_lifts_them(pipeline_repo, capsys):
    from pipeline.deploy.predict import main

    repo, *_ = pipeline_repo
    model = str(repo / "onnx/shakespeare-gru/model.onnx")
    limit = load_config(repo / "params.yaml").serve.limits.max_generate_chars
    assert main([model, "--prompt", "ROMEO:", "--max-chars", str(limit + 1)]) == 2
    assert f"{limit + 1:,} is over the model's limit of {limit:,} (serve.limits.max_generate_chars" in capsys.readouterr().err
    assert main([model, "--prompt", "ROMEO:", "--max-chars", str(limit + 1), "--no-limits"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]["text"]) == limit + 1
