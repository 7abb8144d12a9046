"""HTTP serving through MLflow's own scoring server: a pyfunc model over the ONNX file and
pipeline.predict. Never torch, never training code.

    mlflow models serve -m models:/imdb@champion --env-manager local -h 127.0.0.1 -p 5001
    curl -s localhost:5001/invocations -H 'Content-Type: application/json' \\
        -d '{"dataframe_records": [{"text": "A wonderful film."}, {"text": "Dull."}]}'

`POST /invocations` takes MLflow's JSON formats (`dataframe_records`, `dataframe_split`,
`inputs` or `instances` with named fields or bare values, CSV):
- classifier: a field `text`, one review per row, or bare strings: `{"inputs": ["...", "..."]}`;
- forecaster: rows with the model's columns, oldest first (the last L rows are used; a time
  column, when present, names the last one in `after`), or a bare matrix in the model's
  column order;
- generator: one row with `prompt` and optionally `max_chars`, `temperature`, `seed`, `top_k`
  (defaults as on pipeline.predict's command line), or a bare prompt: `{"inputs": "ROMEO:"}`.
The answer is `{"predictions": X}`, X being exactly the JSON that pipeline.predict prints for
the same input. Bad input is MLflow's INVALID_PARAMETER_VALUE: HTTP 400 with the message of
pipeline.predict, and an example of a request that works. The model's request limits
(serve.limits, stamped into the ONNX model at export) are checked on the request's sizes
before any conversion, tokenising or inference, so that no request inside them holds a worker
for long; the scoring server's --timeout (serve.timeout_s) answers 504 after it, but cannot
stop the thread it started.

Validate logs the model (`served-model` in the run, a version of the task's registered
model) with the ONNX file as its artifact and `SERVED_CODE` as its code, so that a registry
version serves with the code it was validated with; the package need not be installed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Iterator

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from pipeline import predict

ONNX_ARTIFACT = "onnx_model"
# This module's whole local import closure (a test holds it to the imports): what the logged
# model carries under code/, torch-free.
SERVED_CODE = ("pipeline/__init__.py", "pipeline/generation.py", "pipeline/layout.py", "pipeline/predict.py",
               "pipeline/serving.py", "pipeline/sessions.py")
# The distributions the served model imports, pinned to the versions that validated it; the
# same names as the `deploy` dependency group of pyproject.toml (a test keeps them in step).
REQUIREMENTS = ("mlflow", "onnxruntime-gpu", "numpy", "pandas", "tokenizers")
GENERATION_DEFAULTS = {"max_chars": 500, "temperature": 0.8, "seed": 0, "top_k": None}  # pipeline.predict's CLI


def pip_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


@contextlib.contextmanager
def staged_code() -> Iterator[str]:
    """A temporary `pipeline` folder holding SERVED_CODE only, for `code_paths` (MLflow copies
    a folder under code/ by its name, so `pipeline.serving` imports from there)."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        for name in SERVED_CODE:
            target = Path(tmp) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, target)
        yield str(Path(tmp) / "pipeline")


# ---- requests -> pipeline.predict ---------------------------------------------------------------


def example(meta: dict) -> str:
    """A request this model answers, for the messages that refuse one."""
    if meta["head"] == "classifier":
        return '{"inputs": ["A wonderful film.", "Dull."]} or {"dataframe_records": [{"text": "A wonderful film."}]}'
    if meta["head"] == "generator":
        return '{"inputs": "ROMEO:"} or {"dataframe_records": [{"prompt": "ROMEO:", "max_chars": 200}]}'
    columns = json.loads(meta["columns"])
    return (f'{{"dataframe_split": {{"columns": {json.dumps(columns)}, "data": [[...], ...]}}}}: at least '
            f'{meta["lookback"]} rows, oldest first')


# The field a bare string (or a list of them) fills, by head: `{"inputs": ["text", ...]}`.
STRING_FIELD = {"classifier": "text", "generator": "prompt"}
# The limit on a request's rows, by head (a generator takes one row).
ROW_LIMIT = {"classifier": ("max_texts", "reviews in one request"),
             "forecaster": ("max_series_rows", "rows in one request")}


def row_count(model_input) -> int:
    """How many rows the request holds, read off its shape before anything is converted."""
    if isinstance(model_input, dict):
        return max((len(np.atleast_1d(value)) for value in model_input.values()), default=0)
    if isinstance(model_input, np.ndarray):
        return 1 if model_input.ndim == 0 else len(model_input)
    return len(model_input)


def records_of(model_input, meta: dict) -> list[dict]:
    """The request's rows as dicts, from any of MLflow's JSON forms: a DataFrame (dataframe_records,
    dataframe_split, CSV), named fields (`inputs` or `instances` as a dict, a scalar field being
    one row), a list of such rows, or bare values: strings for a classifier's texts or a generator's
    prompt, a numeric matrix in the model's column order for a forecaster."""
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        try:
            frame = pd.DataFrame({key: np.atleast_1d(np.asarray(value)) for key, value in model_input.items()})
        except ValueError as exc:
            raise predict.PredictError(f"input fields of different lengths ({exc}); e.g. {example(meta)}") from None
        return frame.to_dict(orient="records")
    if isinstance(model_input, list) and model_input and all(isinstance(row, dict) for row in model_input):
        return [{key: np.asarray(value).item() if np.ndim(value) == 0 else value for key, value in row.items()}
                for row in model_input]
    if isinstance(model_input, np.ndarray):
        values = np.atleast_1d(model_input)
        field = STRING_FIELD.get(meta["head"])
        if field and values.ndim == 1 and values.dtype.kind == "U":
            return [{field: str(value)} for value in values]
        columns = json.loads(meta.get("columns", "[]"))
        if meta["head"] == "forecaster" and values.ndim == 2 and values.shape[1] == len(columns) \
                and values.dtype.kind in "iuf":
            return [dict(zip(columns, map(float, row))) for row in values]
    found = type(model_input).__name__ + (f" of shape {np.shape(model_input)}" if np.ndim(model_input) else "")
    raise predict.PredictError(f"the {meta['head']} cannot read this request ({found}); send e.g. {example(meta)}")


def absent(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def texts_of(records: list[dict], limits: dict | None = None) -> list[str]:
    if not records or "text" not in records[0]:
        found = sorted(records[0]) if records else []
        raise predict.PredictError(f"the classifier takes a field 'text', one review per row; found fields {found}; "
                                   f"e.g. {example({'head': 'classifier'})}")
    texts = [row["text"] for row in records]
    wrong = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if wrong:
        raise predict.PredictError(f"text #{wrong[0]} is {texts[wrong[0]]!r}, not a string")
    return predict.read_texts(texts, None, limits)  # refuses an empty review, and one over the limits


def whole_number(row: dict, field: str, minimum: int | None) -> int | None:
    value = row.get(field, GENERATION_DEFAULTS[field])
    if absent(value):
        return GENERATION_DEFAULTS[field]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not float(value).is_integer():
        raise predict.PredictError(f"{field} must be a whole number, found {value!r}")
    if minimum is not None and value < minimum:
        raise predict.PredictError(f"{field} must be at least {minimum}, found {int(value)}")
    return int(value)


def generation_args(records: list[dict], limits: dict | None = None) -> dict:
    """prompt, max_chars, temperature, seed, top_k of a one-row request, defaults filled in."""
    if len(records) != 1:
        raise predict.PredictError(f"a generator takes one row (prompt, and optionally {', '.join(GENERATION_DEFAULTS)}), "
                                   f"found {len(records)} rows")
    row = records[0]
    unknown = sorted(set(row) - {"prompt", *GENERATION_DEFAULTS})
    if unknown:
        raise predict.PredictError(f"unknown field(s) {unknown}; a generator takes prompt, {', '.join(GENERATION_DEFAULTS)}")
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        raise predict.PredictError(f"a generator needs a field 'prompt' with text, found {prompt!r}")
    temperature = row.get("temperature", GENERATION_DEFAULTS["temperature"])
    if absent(temperature):
        temperature = GENERATION_DEFAULTS["temperature"]
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise predict.PredictError(f"temperature must be a number (0 = greedy), found {temperature!r}")
    args = {"prompt": prompt, "max_chars": whole_number(row, "max_chars", None), "temperature": float(temperature),
            "seed": whole_number(row, "seed", 0), "top_k": whole_number(row, "top_k", None)}
    predict.check_generation_args(prompt, args["max_chars"], args["temperature"], args["top_k"], limits)
    return args


def answer(sessions: dict, meta: dict, tokenizer, model_input, limits: dict) -> dict:
    """What pipeline.predict prints for the same input; `sessions` holds the model's sessions
    for one row and for several (predict.workload_session). The limits are checked on the
    request's sizes first, before its rows are even converted."""
    if meta["head"] in ROW_LIMIT:
        setting, what = ROW_LIMIT[meta["head"]]
        predict.within(limits, setting, row_count(model_input), what)
    records = records_of(model_input, meta)
    if meta["head"] == "classifier":
        texts = texts_of(records, limits)
        session = sessions[min(len(texts), 2)]
        result = predict.classify(session, meta, texts, tokenizer)
    elif meta["head"] == "forecaster":
        values, times = predict.window_of(records, meta, "request", first_line=0, row_word="row")
        session = sessions[1]
        result = {**predict.forecast(session, meta, values), "after": times[-1]}
    else:
        args = generation_args(records, limits)
        session = sessions[1]
        result = predict.generate_text(session, meta, args["prompt"], args["max_chars"], args["temperature"],
                                       args["seed"], args["top_k"])
    return {"task": meta["task"], "model": meta["model"], "provider": session.get_providers()[0],
            "predictions": result}


class OnnxModel(mlflow.pyfunc.PythonModel):
    """The pyfunc model: the ONNX file (artifact `onnx_model`) behind pipeline.predict. Its
    `predict` has no type hints (MLflow warns): a hinted model would be handed the raw `inputs`
    only, not the dataframe formats, and the checks here are pipeline.predict's."""

    def load_context(self, context):
        path = Path(context.artifacts[ONNX_ARTIFACT])
        session, self.meta = predict.open_model(path)
        self.limits = predict.limits_of(self.meta)
        if self.limits is None:  # a server must be able to refuse what it cannot serve in time
            raise MlflowException(f"{path}: the model carries no request limits (serve.limits); re-export it with "
                                  "`python -m pipeline.export <task> <model>` and validate it before serving")
        self.sessions = {rows: predict.workload_session(session, path, self.meta, rows) for rows in (1, 2)}
        self.tokenizer = predict.load_tokenizer(self.meta, None) if self.meta["head"] == "classifier" else None

    def predict(self, context, model_input, params=None):
        try:
            return answer(self.sessions, self.meta, self.tokenizer, model_input, self.limits)
        except predict.PredictError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
