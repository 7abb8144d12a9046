"""Any CSV time series (ETTh1 by default) under the standard long-horizon protocol.

- Borders: train [0, b1), val [b1 - L, b2), test [b2 - L, b3): each split after the first
  starts L rows early, so that its first window has a full lookback and no target is shared.
- Scaling: z-score with statistics of the train rows only.
- Windows: sliding, stride 1, none dropped: rows - L - H + 1 per split.

Every bad input is a `CsvError` naming the file, the line (header = line 1) and the column.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
import pandas as pd

from pipeline.data.timeseries_settings import TimeseriesPrepare
from pipeline.data import SplitData, single_file
from pipeline.files import atomic_dir, file_digest, write_json_atomic

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MISSING_TOKENS = ("", "nan", "na", "null", "none")
MAX_REPORTED = 5


class CsvError(ValueError):
    """A CSV series that does not fit the configuration or the protocol."""


def line_of(row: int) -> int:
    """1-based line in the file of a 0-based data row (line 1 is the header)."""
    return row + 2


@dataclass
class Series:
    time: np.ndarray     # datetime64[ns], strictly increasing
    values: np.ndarray   # float64 [rows, columns]
    columns: list[str]
    filled: int          # cells filled by the missing-value policy


# ---- reading and checking -------------------------------------------------------------


def selected_columns(header: list[str], settings: TimeseriesPrepare) -> list[str]:
    """The value columns the task uses, in order: all configured (M) or only the target (S)."""
    columns = settings.columns if settings.columns is not None else [
        c for c in header if c != settings.time_column]
    if settings.target not in columns:
        raise CsvError(f"target {settings.target!r} is not among the columns {columns}")
    return columns if settings.features == "M" else [settings.target]


def _cells_report(mask: pd.DataFrame, raw: pd.DataFrame) -> str:
    rows, cols = np.nonzero(mask.to_numpy())
    shown = [f"line {line_of(r)}, column {mask.columns[c]!r} ({raw.iat[r, c]!r})"
             for r, c in zip(rows[:MAX_REPORTED], cols[:MAX_REPORTED])]
    more = f" and {len(rows) - MAX_REPORTED} more" if len(rows) > MAX_REPORTED else ""
    return "; ".join(shown) + more


def parse_values(path: Path, raw: pd.DataFrame, missing: str) -> tuple[np.ndarray, int]:
    """Numbers from text cells: a non-numeric cell is an error; empty cells follow `missing`."""
    text = raw.apply(lambda col: col.str.strip())
    empty = text.apply(lambda col: col.str.lower().isin(MISSING_TOKENS))
    numbers = text.mask(empty).apply(pd.to_numeric, errors="coerce")
    non_numeric = numbers.isna() & ~empty
    if non_numeric.to_numpy().any():
        raise CsvError(f"{path}: non-numeric value at {_cells_report(non_numeric, raw)}; expected a number")
    if empty.to_numpy().any():
        if missing == "error":
            raise CsvError(f"{path}: empty or NaN cell at {_cells_report(empty, raw)}; "
                           "set prepare.missing=ffill to forward-fill")
        filled = numbers.ffill()
        leading = filled.isna()
        if leading.to_numpy().any():
            raise CsvError(f"{path}: cannot forward-fill a missing value with nothing before it, at "
                           f"{_cells_report(leading, raw)}")
        return filled.to_numpy(dtype=np.float64), int(empty.to_numpy().sum())
    return numbers.to_numpy(dtype=np.float64), 0


def parse_time(path: Path, raw: pd.Series, column: str) -> np.ndarray:
    """Timestamps, strictly increasing: unparseable, duplicate or unsorted ones are errors."""
    time = pd.to_datetime(raw.str.strip(), errors="coerce", format="mixed")
    bad = np.flatnonzero(time.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise CsvError(f"{path}: line {line_of(row)}, column {column!r}: cannot parse "
                       f"{raw.iat[row]!r} as a timestamp")
    values = time.to_numpy(dtype="datetime64[ns]")
    step = np.diff(values)
    for problem, rows in (("duplicate", np.flatnonzero(step == np.timedelta64(0))),
                          ("unsorted", np.flatnonzero(step < np.timedelta64(0)))):
        if len(rows):
            row = int(rows[0]) + 1
            raise CsvError(f"{path}: line {line_of(row)}, column {column!r}: {problem} timestamp "
                           f"{raw.iat[row]!r} after {raw.iat[row - 1]!r} on line {line_of(row - 1)}; "
                           "timestamps must strictly increase")
    return values


def read_series(path: str | Path, settings: TimeseriesPrepare) -> Series:
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CsvError(f"{path}: cannot read as CSV ({exc})") from None
    header = list(raw.columns)
    try:
        columns = selected_columns(header, settings)
    except CsvError as exc:
        raise CsvError(f"{path}: {exc}") from None
    absent = [c for c in [settings.time_column, *columns] if c not in header]
    if absent:
        raise CsvError(f"{path}: column(s) {absent} not found; the header has {header}")
    if raw.empty:
        raise CsvError(f"{path}: no data rows after the header")
    time = parse_time(path, raw[settings.time_column], settings.time_column)
    values, filled = parse_values(path, raw[columns], settings.missing)
    return Series(time=time, values=values, columns=columns, filled=filled)


# ---- protocol -------------------------------------------------------------------------


def n_windows(rows: int, lookback: int, horizon: int) -> int:
    """Sliding windows of stride 1, none dropped."""
    return max(rows - lookback - horizon + 1, 0)


def split_bounds(n_rows: int, settings: TimeseriesPrepare, path: str | Path = "<csv>") -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of train, val and test; val and test start `lookback` rows early."""
    if settings.borders is not None:
        ends = list(settings.borders)
        if ends[-1] > n_rows:
            raise CsvError(f"{path}: has {n_rows} data rows but borders {ends} need {ends[-1]}")
    else:
        cumulative = np.cumsum(settings.ratios)
        ends = [int(n_rows * c + 1e-9) for c in cumulative]
    lookback, horizon = settings.lookback, settings.horizon
    starts = [0, ends[0] - lookback, ends[1] - lookback]
    bounds = {name: (max(start, 0), end) for name, start, end in zip(SPLITS, starts, ends)}
    for name, (start, end) in bounds.items():
        if end - start < lookback + horizon:
            raise CsvError(f"{path}: split {name!r} has {end - start} rows (lines {line_of(start)}-"
                           f"{line_of(end - 1)}) but lookback+horizon = {lookback + horizon} "
                           "rows are needed for one window")
    return bounds


def fit_scaler(train_values: np.ndarray, columns: list[str], path: str | Path = "<csv>") -> tuple[np.ndarray, np.ndarray]:
    mean = train_values.mean(axis=0)
    std = train_values.std(axis=0)  # ddof=0, as sklearn's StandardScaler in the reference code
    constant = [c for c, s in zip(columns, std) if s == 0]
    if constant:
        raise CsvError(f"{path}: column(s) {constant} are constant over the train split; "
                       "a z-score is undefined; drop them from prepare.columns")
    return mean, std


def sliding_windows(series: np.ndarray, lookback: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Views (no copy): inputs [N, L, C] and targets [N, H, C] for every stride-1 window."""
    windows = np.lib.stride_tricks.sliding_window_view(series, lookback + horizon, axis=0)
    windows = np.moveaxis(windows, -1, 1)  # [N, L+H, C]
    return windows[:, :lookback], windows[:, lookback:]


# ---- the stage ------------------------------------------------------------------------


def prepare(raw: str | Path, settings: TimeseriesPrepare, out_dir: str | Path) -> dict:
    """Check, split, scale (train-only statistics) and save; returns the data card. `raw`: the
    CSV, or the task's raw folder holding it."""
    csv_path = single_file(raw)
    series = read_series(csv_path, settings)
    bounds = split_bounds(len(series.values), settings, csv_path)
    train_start, train_end = bounds["train"]
    mean, std = fit_scaler(series.values[train_start:train_end], series.columns, csv_path)
    scaled = ((series.values - mean) / std).astype(np.float32)
    target_index = list(range(len(series.columns)))  # M: every column; S: the one, the target
    windows = {name: n_windows(end - start, settings.lookback, settings.horizon)
               for name, (start, end) in bounds.items()}

    def iso(t: np.datetime64) -> str:
        return str(np.datetime_as_string(t, unit="s"))

    meta = {
        "columns": series.columns,
        "target_index": target_index,
        "targets": [series.columns[i] for i in target_index],
        "features": settings.features,
        "lookback": settings.lookback,
        "horizon": settings.horizon,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "units": {c: (settings.units or {}).get(c, "") for c in series.columns},  # for axis labels
        "bounds": {name: list(b) for name, b in bounds.items()},
        "windows": windows,
    }
    with atomic_dir(out_dir) as tmp:
        for name, (start, end) in bounds.items():
            np.savez(tmp / f"{name}.npz", series=scaled[start:end], time=series.time[start:end])
        write_json_atomic(tmp / "meta.json", meta)

    card = {
        "rows": len(series.values),
        "windows": windows,
        "splits": {name: {"start_row": start, "end_row": end, "rows": end - start,
                          "first": iso(series.time[start]), "last": iso(series.time[end - 1])}
                   for name, (start, end) in bounds.items()},
        "features": settings.features,
        "lookback": settings.lookback,
        "horizon": settings.horizon,
        "columns": series.columns,
        "train_mean": dict(zip(series.columns, np.round(mean, 6).tolist())),
        "train_std": dict(zip(series.columns, np.round(std, 6).tolist())),
        "filled_cells": series.filled,
        "source": {"file": Path(csv_path).name, "sha256": file_digest(csv_path, "sha256")},
    }
    log.info("prepared %s: %d rows, windows %s", csv_path, card["rows"], windows)
    return card


def items(card: dict) -> tuple[str, int]:
    """What the data card counts, for the benchmarks' prepare throughput: the series' rows."""
    return "rows", card["rows"]


# ---- the datasets a stage trains or scores on -------------------------------------------------


class WindowDataset(Dataset):
    """Stride-1 windows over a scaled series: (past [L, C], future [H, C])."""

    def __init__(self, series: np.ndarray, lookback: int, horizon: int):
        self.series = torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32))
        self.lookback, self.horizon = lookback, horizon
        self.count = n_windows(len(series), lookback, horizon)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        end = index + self.lookback
        return self.series[index:end], self.series[end:end + self.horizon]


def split_datasets(prepared_dir: Path, meta: dict, train) -> dict[str, SplitData]:
    """Stride-1 windows of each split's scaled series."""
    return {split: SplitData(WindowDataset(np.load(Path(prepared_dir) / f"{split}.npz")["series"],
                                           meta["lookback"], meta["horizon"]))
            for split in SPLITS}
