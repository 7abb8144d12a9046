"""Data preparation per task kind: one module per `kind` (imdb, timeseries, charlm)."""

from pipeline.data import charlm, imdb, timeseries

PREPARERS = {"imdb": imdb, "timeseries": timeseries, "charlm": charlm}  # task kind -> its module
