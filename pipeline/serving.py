"""HTTP serving through MLflow's own scoring server: a pyfunc model over the ONNX file and
pipeline.predict. Never torch, never training code.

    mlflow models serve -m models:/imdb@champion --env-manager local -h 127.0.0.1 -p 5001
    curl -s localhost:5001/invocations -H 'Content-Type: application/json' \\
        -d '{"dataframe_records": [{"text": "A wonderful film."}, {"text": "Dull."}]}'

`POST /invocations` takes MLflow's JSON formats (`dataframe_records`, `dataframe_split`,
`inputs` with named fields):
- classifier: a field `text`, one review per row;
- forecaster: rows with the model's columns, oldest first (the last L rows are used; a time
  column, when present, names the last one in `after`);
- generator: one row with `prompt` and optionally `max_chars`, `temperature`, `seed`, `top_k`
  (defaults as on pipeline.predict's command line).
The answer is `{"predictions": X}`, X being exactly the JSON that pipeline.predict prints for
the same input. Bad input is MLflow's INVALID_PARAMETER_VALUE: HTTP 400 with the message of
pipeline.predict.

Validate logs the model (`served-model` in the run, a version of the task's registered
model) with the ONNX file as its artifact and `SERVED_CODE` as its code, so that a registry
version serves with the code it was validated with; the package need not be installed.
"""

from __future__ import annotations

import contextlib
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


def records_of(model_input) -> list[dict]:
    """The request's rows as dicts: a DataFrame (dataframe_records / dataframe_split) or a dict
    of named fields (`inputs`; a scalar field is one row)."""
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        try:
            frame = pd.DataFrame({key: np.atleast_1d(np.asarray(value)) for key, value in model_input.items()})
        except ValueError as exc:
            raise predict.PredictError(f"input fields of different lengths ({exc})") from None
        return frame.to_dict(orient="records")
    raise predict.PredictError(f"expected named fields (e.g. dataframe_records), found {type(model_input).__name__}")


def absent(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def texts_of(records: list[dict]) -> list[str]:
    if not records or "text" not in records[0]:
        found = sorted(records[0]) if records else []
        raise predict.PredictError(f"the classifier takes a field 'text', one review per row; found fields {found}")
    texts = [row["text"] for row in records]
    wrong = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if wrong:
        raise predict.PredictError(f"text #{wrong[0]} is {texts[wrong[0]]!r}, not a string")
    return predict.read_texts(texts, None)  # refuses an empty review


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


def generation_args(records: list[dict]) -> dict:
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
    predict.check_generation_args(prompt, args["max_chars"], args["temperature"], args["top_k"])
    return args


def answer(sessions: dict, meta: dict, tokenizer, records: list[dict]) -> dict:
    """What pipeline.predict prints for the same input; `sessions` holds the model's sessions
    for one row and for several (predict.workload_session)."""
    session = sessions[1]
    if meta["head"] == "classifier":
        texts = texts_of(records)
        session = sessions[min(len(texts), 2)]
        result = predict.classify(session, meta, texts, tokenizer)
    elif meta["head"] == "forecaster":
        values, times = predict.window_of(records, meta, "request", first_line=0, row_word="row")
        result = {**predict.forecast(session, meta, values), "after": times[-1]}
    else:
        args = generation_args(records)
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
        self.sessions = {rows: predict.workload_session(session, path, self.meta, rows) for rows in (1, 2)}
        self.tokenizer = predict.load_tokenizer(self.meta, None) if self.meta["head"] == "classifier" else None

    def predict(self, context, model_input, params=None):
        try:
            return answer(self.sessions, self.meta, self.tokenizer, records_of(model_input))
        except predict.PredictError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
