"""The train stage's figures: CSV data that DVC renders (`dvc plots show`) and PNGs for MLflow
and the report.

- plots/curves/<run>.csv: loss per epoch (every head);
- plots/<head>/<run>.csv: the head's own plot (confusion matrix, forecast against truth, a
  generator's loss by position in its window);
- plots/train/<run>/: the PNG figures, the forecaster's error by horizon step, and the
  generator's final sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.files import atomic_path, save_png, write_text_atomic
from pipeline.generation import log_softmax
from pipeline.layout import RunPaths

FORECAST_EXAMPLES = 4


def write_csv(path: Path, header: list[str], rows) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(",".join(header) + "\n")
            for row in rows:
                out.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")
    return path


def learning_curves(path: Path, history: list[dict]) -> Path:
    keys = ["epoch"] + [k for k in history[0] if k != "epoch" and ("loss" in k or k.startswith("val/"))]
    return write_csv(path, keys, ([row[k] for k in keys] for row in history))


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display here, nor in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def epoch_axis(ax) -> None:
    """Epochs are whole numbers: no 1.5 on the axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def curves_png(path: Path, history: list[dict], title: str) -> Path:
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train/loss", "val/loss"):
        ax.plot(epochs, [row[key] for row in history], marker="o", label=key)
    epoch_axis(ax)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


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


def position_loss(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean loss (nats) at each position of windows read from a zero state: how much the
    characters before help."""
    return -np.take_along_axis(log_softmax(logits), targets[..., None], -1)[..., 0].mean(0)


def write_generator_plots(paths: RunPaths, outputs: np.ndarray, targets: np.ndarray, sample: str) -> list[Path]:
    loss = position_loss(outputs, targets)
    files = [write_csv(paths.head_plot, ["position", "loss"], ((p + 1, float(v)) for p, v in enumerate(loss)))]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(loss) + 1), loss)
    ax.set_xlabel("position in the window (characters read, from a zero state)")
    ax.set_ylabel("test loss (nats per character)")
    ax.set_title(f"{paths.name}: loss by context length")
    fig.tight_layout()
    files.append(save_png(fig, paths.figures / "position_loss.png"))
    sample_file = paths.figures / "sample.txt"
    write_text_atomic(sample_file, sample)
    return files + [sample_file]


def write_train_plots(paths: RunPaths, head: str, history: list[dict], outputs: np.ndarray, targets: np.ndarray,
                      meta: dict, test_dataset=None, sample: str | None = None) -> list[Path]:
    """Learning curves, plus a confusion matrix (classifier) or forecasts against truth
    (forecaster: `test_dataset` gives the lookback shown before each forecast)."""
    files = [learning_curves(paths.curves_plot, history),
             curves_png(paths.figures / "curves.png", history, f"{paths.name}: learning curves")]
    if head == "generator":
        return files + write_generator_plots(paths, outputs, targets, sample)
    if head == "classifier":
        labels = meta["labels"]
        predicted = outputs.argmax(1)
        files.append(write_csv(paths.head_plot, ["actual", "predicted"],
                               ((labels[a], labels[p]) for a, p in zip(targets, predicted))))
        return files

    channel = meta["target_index"][-1]  # the last target column (OT for ETTh1)
    horizon = targets.shape[1]
    windows = forecast_examples(FORECAST_EXAMPLES, len(targets))
    rows = []
    for example, window in enumerate(windows):
        for step in range(horizon):
            rows.append((example * horizon + step, window, float(targets[window, step, channel]),
                         float(outputs[window, step, channel])))
    files.append(write_csv(paths.head_plot, ["t", "window", "truth", "forecast"], rows))
    squared = ((outputs - targets) ** 2).mean(axis=(0, 2))
    absolute = np.abs(outputs - targets).mean(axis=(0, 2))
    files.append(write_csv(paths.figures / "horizon.csv", ["step", "mse", "mae"],
                           ((s + 1, float(squared[s]), float(absolute[s])) for s in range(horizon))))
    past = np.stack([test_dataset[w][0].numpy() for w in windows])
    files.append(forecast_png(paths.figures / "forecast.png", past, outputs, targets, windows, meta, channel,
                              f"{paths.name}: forecast of {meta['columns'][channel]} on test windows"))
    return files
