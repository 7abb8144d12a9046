"""Data preparation per task kind: one module per `kind` (imdb, timeseries, charlm)."""
