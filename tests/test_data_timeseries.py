"""Time series: the long-horizon protocol (borders, train-only scaling, windows) and bad CSVs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import validate
from pipeline.compose import compose
from pipeline.data.timeseries_settings import TimeseriesPrepare
from pipeline.data.timeseries import (CsvError, n_windows, prepare, read_series, sliding_windows,
                                      split_bounds)
from tests.conftest import ETT_COLUMNS, synthetic_series, write_csv

SMALL = dict(time_column="date", columns=ETT_COLUMNS, target="OT", features="M", missing="error",
             lookback=24, horizon=12, borders=[240, 320, 400], ratios=None)


def settings(**changes) -> TimeseriesPrepare:
    return TimeseriesPrepare(**{**SMALL, **changes})


@pytest.mark.parametrize("rows, lookback, horizon", [(10, 3, 2), (192, 96, 96), (500, 1, 1), (7, 4, 4)])
def test_window_count_formula_matches_the_windows(rows, lookback, horizon):
    series = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    count = n_windows(rows, lookback, horizon)
    assert count == max(rows - lookback - horizon + 1, 0)
    if count:
        x, y = sliding_windows(series, lookback, horizon)
        assert x.shape == (count, lookback, 2) and y.shape == (count, horizon, 2)
        assert np.array_equal(x[-1, -1], series[rows - horizon - 1])  # last lookback row
        assert np.array_equal(y[-1, -1], series[-1])                   # last target is the last row


def test_etth1_default_protocol_gives_the_published_window_counts():
    etth1 = validate(compose()).task["etth1"].prepare
    bounds = split_bounds(17420, etth1)
    assert bounds == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}
    windows = {name: n_windows(end - start, 96, 96) for name, (start, end) in bounds.items()}
    assert windows == {"train": 8449, "val": 2785, "test": 2785}


def test_splits_share_no_target_rows():
    bounds = split_bounds(400, settings())
    # The first target row of each later split is the first row after the previous split.
    assert bounds["val"][0] + 24 == bounds["train"][1]
    assert bounds["test"][0] + 24 == bounds["val"][1]


def test_ratios_follow_the_custom_dataset_convention():
    bounds = split_bounds(1000, settings(borders=None, ratios=[0.7, 0.1, 0.2]))
    assert bounds == {"train": (0, 700), "val": (676, 800), "test": (776, 1000)}


def test_scaler_is_fit_on_train_rows_only(tmp_path):
    values = synthetic_series(400)
    first = prepare(write_csv(tmp_path / "a.csv", values), settings(), tmp_path / "a")
    changed = values.copy()
    changed[240:] *= 100  # val and test rows only
    second = prepare(write_csv(tmp_path / "b.csv", changed), settings(), tmp_path / "b")
    assert first["train_mean"] == second["train_mean"] and first["train_std"] == second["train_std"]
    train = np.load(tmp_path / "a" / "train.npz")["series"]
    assert np.allclose(train.mean(axis=0), 0, atol=1e-5) and np.allclose(train.std(axis=0), 1, atol=1e-4)


def test_outputs_and_card(tmp_path, ett_csv):
    card = prepare(ett_csv, settings(), tmp_path / "out")
    assert card["windows"] == {"train": 205, "val": 69, "test": 69}
    assert card["rows"] == 400 and card["splits"]["val"]["first"] == "2016-07-10T00:00:00"  # row 216
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["columns"] == ETT_COLUMNS and meta["target_index"] == list(range(7))
    assert len(meta["mean"]) == len(meta["std"]) == 7
    test = np.load(tmp_path / "out" / "test.npz")
    assert test["series"].shape == (400 - 296, 7) and test["series"].dtype == np.float32
    assert test["time"].dtype == np.dtype("datetime64[ns]")


def test_univariate_mode_keeps_only_the_target(tmp_path, ett_csv):
    prepare(ett_csv, settings(features="S"), tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["columns"] == ["OT"] and meta["targets"] == ["OT"] and meta["target_index"] == [0]
    assert np.load(tmp_path / "out" / "train.npz")["series"].shape == (240, 1)


def test_columns_null_takes_every_column_but_time(tmp_path, ett_csv):
    assert read_series(ett_csv, settings(columns=None)).columns == ETT_COLUMNS


# ---- bad CSVs ---------------------------------------------------------------------------


def edit_csv(path, line: int, column: str, value: str):
    """Set one cell; `line` counts from 1 with the header as line 1."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_column(ett_csv):
    with pytest.raises(CsvError, match=r"ETTh1\.csv: column\(s\) \['MUFL'\] not found; the header has"):
        read_series(_drop_column(ett_csv, "MUFL"), settings())


def _drop_column(path, column):
    import pandas as pd
    pd.read_csv(path).drop(columns=[column]).to_csv(path, index=False)
    return path


def test_missing_target_column(ett_csv):
    with pytest.raises(CsvError, match=r"target 'load' is not among the columns"):
        read_series(ett_csv, settings(target="load"))


def test_non_numeric_value_names_line_and_column(ett_csv):
    edit_csv(ett_csv, 7, "HULL", "abc")
    with pytest.raises(CsvError, match=r"ETTh1\.csv: non-numeric value at line 7, column 'HULL' \('abc'\)"):
        read_series(ett_csv, settings())


@pytest.mark.parametrize("value", ["", "NaN", "nan"])
def test_empty_or_nan_cell_is_an_error_by_default(ett_csv, value):
    edit_csv(ett_csv, 12, "OT", value)
    with pytest.raises(CsvError, match=r"ETTh1\.csv: empty or NaN cell at line 12, column 'OT'.*missing=ffill"):
        read_series(ett_csv, settings())


def test_forward_fill_policy_fills_from_the_previous_row(ett_csv):
    edit_csv(ett_csv, 12, "OT", "")
    series = read_series(ett_csv, settings(missing="ffill"))
    assert series.filled == 1
    assert series.values[10, -1] == series.values[9, -1]  # data row 10 is line 12


def test_forward_fill_cannot_fill_the_first_row(ett_csv):
    edit_csv(ett_csv, 2, "LULL", "")
    with pytest.raises(CsvError, match=r"nothing before it, at line 2, column 'LULL'"):
        read_series(ett_csv, settings(missing="ffill"))


def test_duplicate_timestamp(ett_csv):
    edit_csv(ett_csv, 5, "date", "2016-07-01 02:00:00")
    with pytest.raises(CsvError, match=r"line 5, column 'date': duplicate timestamp '2016-07-01 02:00:00' "
                                       r"after '2016-07-01 02:00:00' on line 4"):
        read_series(ett_csv, settings())


def test_unsorted_timestamp(ett_csv):
    edit_csv(ett_csv, 9, "date", "2016-06-30 00:00:00")
    with pytest.raises(CsvError, match=r"line 9, column 'date': unsorted timestamp '2016-06-30 00:00:00'"):
        read_series(ett_csv, settings())


def test_unparseable_timestamp(ett_csv):
    edit_csv(ett_csv, 3, "date", "yesterday")
    with pytest.raises(CsvError, match=r"line 3, column 'date': cannot parse 'yesterday' as a timestamp"):
        read_series(ett_csv, settings())


def test_split_shorter_than_lookback_plus_horizon(ett_csv):
    with pytest.raises(CsvError, match=r"ETTh1\.csv: split 'val' has 34 rows \(lines 218-251\) but "
                                       r"lookback\+horizon = 36"):
        prepare(ett_csv, settings(borders=[240, 250, 400]), ett_csv.parent / "out")
    assert not (ett_csv.parent / "out").exists()


def test_borders_beyond_the_file(ett_csv):
    with pytest.raises(CsvError, match=r"has 400 data rows but borders \[240, 320, 500\] need 500"):
        prepare(ett_csv, settings(borders=[240, 320, 500]), ett_csv.parent / "out")


def test_constant_train_column_cannot_be_scaled(tmp_path):
    values = synthetic_series(400)
    values[:, 2] = 1.0
    with pytest.raises(CsvError, match=r"\['MUFL'\] are constant over the train split"):
        prepare(write_csv(tmp_path / "c.csv", values), settings(), tmp_path / "out")
