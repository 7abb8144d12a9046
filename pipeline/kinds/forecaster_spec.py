"""The forecaster, torch-free: how a deployed model reads a request and answers it
(pipeline.deploy.predict, the served model). Its name, metric and settings are
`forecaster_settings.py`; the rest of the kind, which needs torch, is `forecaster.py`."""

from __future__ import annotations

import collections
import csv
import json
import sys

import numpy as np

from pipeline.deploy.limits import PredictError
from pipeline.kinds.forecaster_settings import MAXIMIZE, METRIC, NAME, Settings  # noqa: F401  (the kind's names)

STRING_FIELD = None
ROW_LIMIT = ("max_series_rows", "rows in one request")


def example(meta: dict) -> str:
    columns = json.loads(meta["columns"])
    return (f'{{"dataframe_split": {{"columns": {json.dumps(columns)}, "data": [[...], ...]}}}}: at least '
            f'{meta["lookback"]} rows, oldest first')


# ---- reading a request ---------------------------------------------------------------------------


def read_window(path: str, meta: dict) -> tuple[np.ndarray, list[str]]:
    """The last L rows of the model's columns, in file order, from a CSV of any length: a user's
    whole history is read as a stream and only its last L rows are kept (no row limit here: that
    protects a server, not a user from their own file); stderr says which rows were read."""
    lookback = int(meta["lookback"])
    tail, total = collections.deque(maxlen=lookback), 0
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                tail.append(row)
                total += 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PredictError(f"{path}: cannot read as UTF-8 CSV ({exc})") from None
    skipped = total - len(tail)
    if skipped:
        print(f"predict: {path}: forecasting from its last {lookback:,} of {total:,} data rows "
              f"(lines {skipped + 2:,}-{total + 1:,}), the model's lookback", file=sys.stderr)
    return window_of(list(tail), meta, path, first_line=2 + skipped)


def window_of(rows: list[dict], meta: dict, source: str, first_line: int = 2, row_word: str = "line"):
    """(values, times) of the last L rows (dicts by column, oldest first); `source`, `first_line`
    and `row_word` name a bad cell (a CSV's data start on line 2; a served request's at row 0)."""
    columns, lookback = json.loads(meta["columns"]), int(meta["lookback"])
    header = list(rows[0]) if rows else []
    absent = [c for c in columns if c not in header]
    if absent:
        raise PredictError(f"{source}: column(s) {absent} not found; the model needs {columns}, the header has {header}")
    if len(rows) < lookback:
        raise PredictError(f"{source}: {len(rows)} data rows, but the model looks back {lookback} rows")
    first_line += len(rows) - lookback   # the line (or row) number of the first of the last L
    rows = rows[-lookback:]
    values = np.empty((lookback, len(columns)), dtype=np.float64)
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            try:
                values[r, c] = float(row[column])
            except (TypeError, ValueError):
                values[r, c] = np.nan
            if not np.isfinite(values[r, c]):
                raise PredictError(f"{source}: {row_word} {first_line + r}, column {column!r}: "
                                   f"{row[column]!r} is not a finite number")
    times = [str(row.get(meta.get("time_column", ""), "")) for row in rows]
    return values, times


def from_cli(args, meta: dict, limits: dict | None):
    """pipeline.deploy.predict's --csv: (values, times) of its last L rows, however long the file (the
    served model keeps its row limit: `from_records`)."""
    if not args.csv:
        raise PredictError(f"model {meta['task']} forecasts a series: pass --csv FILE")
    return read_window(args.csv, meta)


def from_array(values: np.ndarray, meta: dict) -> list[dict] | None:
    """A bare numeric matrix in the model's column order; None for anything else."""
    columns = json.loads(meta.get("columns", "[]"))
    if values.ndim == 2 and values.shape[1] == len(columns) and values.dtype.kind in "iuf":
        return [dict(zip(columns, map(float, row))) for row in values]
    return None


def from_records(records: list[dict], meta: dict, limits: dict | None):
    """A served request's rows: the model's columns, oldest first (row limit checked before)."""
    return window_of(records, meta, "request", first_line=0, row_word="row")


def rows(window) -> int:
    return 1   # one forecast


# ---- answering it -------------------------------------------------------------------------------


def context(meta: dict, tokenizer: str | None = None):
    return None


def answer(session, meta: dict, window, context=None) -> dict:
    """The forecast per step and column, in the data's own units; `after` names the last row read."""
    values, times = window
    mean, std = np.array(json.loads(meta["mean"])), np.array(json.loads(meta["std"]))
    past = ((values - mean) / std).astype(np.float32)[None]
    out = session.run(["forecast"], {"past": past})[0][0] * std + mean
    columns = json.loads(meta["columns"])
    return {"columns": columns, "horizon": int(meta["horizon"]),
            "forecast": [dict(zip(columns, map(float, step))) for step in out], "after": times[-1]}


# ---- the serving benchmark's requests (benchmarks/serving_load.py) ------------------------------


def request_material(task) -> dict:
    """The last 2 x lookback rows of the task's CSV, as a `dataframe_split` request's body."""
    with open(task.source_file, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header, rows_ = next(reader), list(reader)
    tail = rows_[-2 * task.prepare.lookback:]
    return {"columns": header, "data": [[row[0], *map(float, row[1:])] for row in tail]}


def longest_request(limits: dict) -> None:
    return None


def ordinary_request(window: dict) -> dict:
    return {"dataframe_split": window}


def refused_requests(limits: dict, window: dict) -> dict[str, tuple[dict, int, str]]:
    rows_ = window["data"]
    many = {**window, "data": [rows_[i % len(rows_)] for i in range(limits["max_series_rows"] + 1)]}
    return {"max_series_rows": ({"dataframe_split": many}, 400, "serve.limits.max_series_rows"),
            "too few rows": ({"dataframe_split": {**window, "data": rows_[:2]}}, 400, "looks back")}
