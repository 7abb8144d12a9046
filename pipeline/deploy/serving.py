"""HTTP serving through MLflow's own scoring server: a pyfunc model over the ONNX file and
pipeline.deploy.predict. Never torch, never training code.

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
  (the generator's SAMPLING defaults, as on pipeline.deploy.predict's command line), or a bare
  prompt: `{"inputs": "ROMEO:"}`.
Each kind reads its own requests (`from_records`, `STRING_FIELD`, `from_array`, pipeline/kinds/*_spec.py).
The answer is `{"predictions": X}`, X being exactly the JSON that pipeline.deploy.predict prints for
the same input. Bad input is MLflow's INVALID_PARAMETER_VALUE: HTTP 400 with the message of
pipeline.deploy.predict, and an example of a request that works. The model's request limits
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

from pipeline.deploy import predict
from pipeline.deploy.limits import LimitError, PredictError, within  # noqa: F401  (the served model's errors)
from pipeline.kinds.specs import spec_of

ONNX_ARTIFACT = "onnx_model"
# This module's whole local import closure, with every kind's spec that it looks up by name (a
# test holds it to the imports): what the logged model carries under code/, torch-free.
SERVED_CODE = ("pipeline/__init__.py", "pipeline/deploy/__init__.py", "pipeline/deploy/limits.py",
               "pipeline/deploy/predict.py", "pipeline/deploy/serving.py", "pipeline/deploy/sessions.py",
               "pipeline/kinds/__init__.py", "pipeline/kinds/classifier_settings.py",
               "pipeline/kinds/classifier_spec.py", "pipeline/kinds/forecaster_settings.py",
               "pipeline/kinds/forecaster_spec.py", "pipeline/kinds/generator_settings.py",
               "pipeline/kinds/generator_spec.py", "pipeline/kinds/specs.py", "pipeline/layout.py",
               "pipeline/schema.py")
# The distributions the served model imports, pinned to the versions that validated it; the
# same names as the `deploy` dependency group of pyproject.toml (a test keeps them in step).
REQUIREMENTS = ("mlflow", "onnxruntime-gpu", "numpy", "pandas", "tokenizers")


def pip_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


@contextlib.contextmanager
def staged_code() -> Iterator[str]:
    """A temporary `pipeline` folder holding SERVED_CODE only, for `code_paths` (MLflow copies
    a folder under code/ by its name, so `pipeline.deploy.serving` imports from there)."""
    root = Path(__file__).resolve().parents[2]   # the repository: pipeline/deploy/serving.py
    with tempfile.TemporaryDirectory() as tmp:
        for name in SERVED_CODE:
            target = Path(tmp) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, target)
        yield str(Path(tmp) / "pipeline")


@contextlib.contextmanager
def served_form(onnx_model: str | Path) -> Iterator[dict]:
    """What tracking's `log_served_model` logs for an ONNX model: this module's pyfunc model, the
    file as its artifact, SERVED_CODE as its code and the pinned requirements."""
    with staged_code() as code:
        yield {"python_model": OnnxModel(), "artifacts": {ONNX_ARTIFACT: str(onnx_model)}, "code_paths": [code],
               "pip_requirements": pip_requirements()}


# ---- requests -> pipeline.deploy.predict ---------------------------------------------------------------


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
    one row), a list of such rows, or bare values: strings, one row each, for a kind that reads a
    string field (`STRING_FIELD`: a classifier's texts, a generator's prompt), else as the kind
    reads them (`from_array`: a numeric matrix in the model's column order for a forecaster)."""
    spec = spec_of(meta["head"])
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        try:
            frame = pd.DataFrame({key: np.atleast_1d(np.asarray(value)) for key, value in model_input.items()})
        except ValueError as exc:
            raise PredictError(f"input fields of different lengths ({exc}); e.g. {spec.example(meta)}") from None
        return frame.to_dict(orient="records")
    if isinstance(model_input, list) and model_input and all(isinstance(row, dict) for row in model_input):
        return [{key: np.asarray(value).item() if np.ndim(value) == 0 else value for key, value in row.items()}
                for row in model_input]
    if isinstance(model_input, np.ndarray):
        values = np.atleast_1d(model_input)
        if spec.STRING_FIELD and values.ndim == 1 and values.dtype.kind == "U":   # bare strings, one row each
            return [{spec.STRING_FIELD: str(v)} for v in values]
        records = spec.from_array(values, meta) if hasattr(spec, "from_array") else None
        if records is not None:
            return records
    found = type(model_input).__name__ + (f" of shape {np.shape(model_input)}" if np.ndim(model_input) else "")
    raise PredictError(f"the {meta['head']} cannot read this request ({found}); send e.g. {spec.example(meta)}")


def answer(sessions: dict, meta: dict, context, model_input, limits: dict) -> dict:
    """What pipeline.deploy.predict prints for the same input; `sessions` holds the model's sessions
    for one row and for several (predict.workload_session), `context` what the kind needs
    besides (a classifier's tokenizer). The limits are checked on the request's sizes first,
    before its rows are even converted."""
    spec = spec_of(meta["head"])
    if spec.ROW_LIMIT is not None:
        setting, what = spec.ROW_LIMIT
        within(limits, setting, row_count(model_input), what)
    inputs = spec.from_records(records_of(model_input, meta), meta, limits)
    session = sessions[min(spec.rows(inputs), 2)]
    return {"task": meta["task"], "model": meta["model"], "provider": session.get_providers()[0],
            "predictions": spec.answer(session, meta, inputs, context)}


class OnnxModel(mlflow.pyfunc.PythonModel):
    """The pyfunc model: the ONNX file (artifact `onnx_model`) behind pipeline.deploy.predict. Its
    `predict` has no type hints (MLflow warns): a hinted model would be handed the raw `inputs`
    only, not the dataframe formats, and the checks here are pipeline.deploy.predict's."""

    def load_context(self, context):
        path = Path(context.artifacts[ONNX_ARTIFACT])
        session, self.meta = predict.open_model(path)
        self.limits = predict.limits_of(self.meta)
        if self.limits is None:  # a server must be able to refuse what it cannot serve in time
            raise MlflowException(f"{path}: the model carries no request limits (serve.limits); re-export it with "
                                  "`python -m pipeline.stages.export <task> <model>` and validate it before serving")
        self.sessions = {rows: predict.workload_session(session, path, self.meta, rows) for rows in (1, 2)}
        self.context = spec_of(self.meta["head"]).context(self.meta)   # a classifier's tokenizer

    def predict(self, context, model_input, params=None):
        try:
            return answer(self.sessions, self.meta, self.context, model_input, self.limits)
        except PredictError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
