"""The forecaster kind on the pipeline's side: past values [B, L, C] -> the next H steps
[B, H, C], trained and scored on MSE (and MAE) beside repeating the last value, exported as
is, validated at batch 1 and 64; its figures show forecasts in the data's units. Its
torch-free half is forecaster_spec.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.files import read_json, save_png
from pipeline.training.flops import forecaster_train_flops
from pipeline.kinds import forecaster_spec
from pipeline.kinds.base import BatchKind
from pipeline.nets.forecaster import Forecaster as ForecasterModel
from pipeline.training.plots import pyplot, read_csv, write_csv
from pipeline.schema import ConfigError

FORECAST_EXAMPLES = 4


def forecast_metrics(forecast: np.ndarray, truth: np.ndarray, split: str) -> dict[str, float]:
    """MSE and MAE on the normalised scale, over every window, step and channel."""
    error = forecast - truth
    return {f"{split}/loss": float((error ** 2).mean()), f"{split}/mse": float((error ** 2).mean()),
            f"{split}/mae": float(np.abs(error).mean())}


# ---- figures ------------------------------------------------------------------------------------


def forecast_examples(count: int, windows: int) -> list[int]:
    """Evenly spaced test windows."""
    return np.linspace(0, windows - 1, count).astype(int).tolist()


def value_label(meta: dict, channel: int) -> str:
    """`OT (°C)`: the column and its unit, as configured (task.<t>.prepare.units)."""
    column = meta["columns"][channel]
    unit = meta.get("units", {}).get(column)
    return f"{column} ({unit})" if unit else f"{column} (data units)"


def forecast_png(path: Path, past: np.ndarray, outputs: np.ndarray, targets: np.ndarray, windows: list[int],
                 meta: dict, channel: int, title: str) -> Path:
    """Lookback, truth and forecast of one column, in the data's own units, hours on the x axis
    (0 = the first forecast step)."""
    mean, std = meta["mean"][channel], meta["std"][channel]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(windows), figsize=(4 * len(windows), 3.2), sharey=True)
    lookback, horizon = past.shape[1], targets.shape[1]
    before, after = np.arange(-lookback, 0), np.arange(horizon)
    for ax, (example, window) in zip(np.atleast_1d(axes), enumerate(windows)):
        ax.plot(before, past[example, :, channel] * std + mean, color="grey", label="lookback")
        ax.plot(after, targets[window, :, channel] * std + mean, color="black", label="truth")
        ax.plot(after, outputs[window, :, channel] * std + mean, label="forecast")
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_title(f"test window {window}")
        ax.set_xlabel("step (from the forecast start)")
    np.atleast_1d(axes)[0].set_ylabel(value_label(meta, channel))
    np.atleast_1d(axes)[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def scale_of(settings) -> dict:
    """What the forecast figure needs to show data units, from the committed data card (the
    prepared data is not in git): columns, train mean and std, and the configured units. The
    plotted column is the last target, as in the train stage's figures."""
    card = read_json(settings.paths.card)
    columns = card["columns"]
    return {"columns": columns, "target_index": [len(columns) - 1], "units": settings.prepare.units or {},
            "mean": [card["train_mean"][c] for c in columns], "std": [card["train_std"][c] for c in columns]}


def overlay_forecasts(task: str, runs: dict, meta: dict, out: Path) -> Path:
    """Every model's forecast of the target column beside the truth, in the data's units."""
    plt = pyplot()
    series = {model: read_csv(paths.head_plot) for model, paths in runs.items()}
    first = next(iter(series.values()))
    windows = sorted({r["window"] for r in first}, key=int)
    channel = meta["target_index"][-1]
    mean, std = meta["mean"][channel], meta["std"][channel]
    fig, axes = plt.subplots(1, len(windows), figsize=(4 * len(windows), 3.2), sharey=True)
    for ax, window in zip(axes, windows):
        rows = {m: [r for r in series[m] if r["window"] == window] for m in series}
        ax.plot([float(r["truth"]) * std + mean for r in next(iter(rows.values()))], color="black", label="truth")
        for model in series:
            ax.plot([float(r["forecast"]) * std + mean for r in rows[model]], label=model.upper())
        ax.set_title(f"test window {window}")
        ax.set_xlabel("step (from the forecast start)")
    axes[0].set_ylabel(value_label(meta, channel))
    axes[0].legend()
    fig.tight_layout()
    return save_png(fig, out)


class Forecaster(BatchKind):
    spec = forecaster_spec
    model_class = ForecasterModel
    quality = ("test/mse", "test/mae")
    floor = "repeat last value"

    def data_args(self, settings, meta, names):
        task_name, model_name = names
        if settings.segment_len and meta["lookback"] % settings.segment_len:
            raise ConfigError(f"model.{model_name}.forecaster.segment_len={settings.segment_len} must divide "
                              f"task.{task_name}.prepare.lookback={meta['lookback']}")
        if settings.decoder == "pmf" and not (settings.segment_len and meta["horizon"] % settings.segment_len == 0):
            raise ConfigError(f"model.{model_name}.forecaster.decoder=pmf decodes segments: segment_len="
                              f"{settings.segment_len} must be > 0 and divide task.{task_name}.prepare.horizon="
                              f"{meta['horizon']}")
        return {"n_channels": len(meta["columns"]), "horizon": meta["horizon"]}

    def loss(self):
        return nn.MSELoss()

    def metrics(self, outputs, targets, split):
        return forecast_metrics(outputs, targets, split)

    def naive_floor(self, data):
        past, future = zip(*(data.test.dataset[i] for i in range(len(data.test.dataset))))
        past, future = torch.stack(past).numpy(), torch.stack(future).numpy()
        repeated = np.repeat(past[:, -1:], future.shape[1], axis=1)
        metrics = forecast_metrics(repeated, future, "baseline")
        return {"baseline/mse": metrics["baseline/mse"], "baseline/mae": metrics["baseline/mae"]}

    def write_plots(self, paths, outputs, targets, meta, test_dataset, sample):
        """Forecast against truth on a few test windows (the DVC plot and a PNG, with each
        window's lookback), and the error by horizon step."""
        channel = meta["target_index"][-1]  # the last target column (OT for ETTh1)
        horizon = targets.shape[1]
        windows = forecast_examples(FORECAST_EXAMPLES, len(targets))
        rows = [(example * horizon + step, window, float(targets[window, step, channel]),
                 float(outputs[window, step, channel]))
                for example, window in enumerate(windows) for step in range(horizon)]
        files = [write_csv(paths.head_plot, ["t", "window", "truth", "forecast"], rows)]
        squared = ((outputs - targets) ** 2).mean(axis=(0, 2))
        absolute = np.abs(outputs - targets).mean(axis=(0, 2))
        files.append(write_csv(paths.figures / "horizon.csv", ["step", "mse", "mae"],
                               ((s + 1, float(squared[s]), float(absolute[s])) for s in range(horizon))))
        past = np.stack([test_dataset[w][0].numpy() for w in windows])
        files.append(forecast_png(paths.figures / "forecast.png", past, outputs, targets, windows, meta, channel,
                                  f"{paths.name}: forecast of {meta['columns'][channel]} on test windows"))
        return files

    def train_work(self, inputs, args, meta):
        return inputs.shape[0] * inputs.shape[1], forecaster_train_flops(args, inputs.shape[0], inputs.shape[1])

    # ---- export ---------------------------------------------------------------------------------

    def graph_interface(self, args, meta):
        example = torch.randn(2, meta["lookback"], args["n_channels"])
        return {"inputs": ["past"], "outputs": ["forecast"], "example": (example,),
                "dynamic_axes": {"past": {0: "batch", 1: "time"}, "forecast": {0: "batch"}}}

    def deployment_metadata(self, task, settings, cell, meta):
        return {"columns": json.dumps(meta["columns"]), "targets": json.dumps(meta["targets"]),
                "mean": json.dumps(meta["mean"]), "std": json.dumps(meta["std"]),
                "lookback": str(meta["lookback"]), "horizon": str(meta["horizon"]),
                "time_column": task.prepare.time_column}

    # ---- validation -----------------------------------------------------------------------------

    def latency_input(self, args, meta, batch):
        rng = np.random.default_rng(batch)
        return rng.standard_normal((batch, meta["lookback"], args["n_channels"])).astype(np.float32)

    def parity_inputs(self, args, meta, seed=0):
        rng = np.random.default_rng(seed)
        lookback, channels = meta["lookback"], args["n_channels"]
        unit = args["segment_len"] or 1
        short = max(unit, (lookback // 2) // unit * unit)
        return [rng.standard_normal((batch, length, channels)).astype(np.float32)
                for batch, length in ((1, lookback), (5, short), (33, lookback * 2))]

    def onnx_metric(self, outputs, targets):
        return float(((outputs - targets) ** 2).sum()), targets.size

    # ---- the report -----------------------------------------------------------------------------

    def report_sections(self, task_name, task, runs, out_dir):
        figure = overlay_forecasts(task_name, runs, scale_of(task), out_dir / f"{task_name}-forecasts.png")
        return [f"![{task_name} forecasts]({figure.name})"], [figure]


KIND = Forecaster()
