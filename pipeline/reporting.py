"""Plot data that DVC renders (CSV, `dvc plots show`) and the same figures as PNG for MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.files import atomic_path, save_png

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


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_png(path: Path, history: list[dict]) -> Path:
    plt = _figure()
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train/loss", "val/loss"):
        ax.plot(epochs, [row[key] for row in history], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def forecast_examples(forecast: np.ndarray, truth: np.ndarray, count: int = FORECAST_EXAMPLES) -> list[int]:
    """Evenly spaced test windows."""
    return np.linspace(0, len(truth) - 1, count).astype(int).tolist()


def write_train_plots(folder: Path, kind: str, history: list[dict], outputs: np.ndarray,
                      targets: np.ndarray, meta: dict) -> list[Path]:
    """Learning curves, plus a confusion matrix (classifier) or forecasts vs truth (forecaster)."""
    folder = Path(folder)
    files = [learning_curves(folder / "curves.csv", history), curves_png(folder / "curves.png", history)]
    if kind == "classifier":
        labels = meta["labels"]
        predicted = outputs.argmax(1)
        files.append(write_csv(folder / "confusion.csv", ["actual", "predicted"],
                               ((labels[a], labels[p]) for a, p in zip(targets, predicted))))
        return files

    channel = meta["target_index"][-1]  # the last target column (OT for ETTh1)
    horizon = targets.shape[1]
    rows = []
    for example, window in enumerate(forecast_examples(outputs, targets)):
        for step in range(horizon):
            rows.append((example * horizon + step, window, float(targets[window, step, channel]),
                         float(outputs[window, step, channel])))
    files.append(write_csv(folder / "forecast.csv", ["t", "window", "truth", "forecast"], rows))
    squared = ((outputs - targets) ** 2).mean(axis=(0, 2))
    absolute = np.abs(outputs - targets).mean(axis=(0, 2))
    files.append(write_csv(folder / "horizon.csv", ["step", "mse", "mae"],
                           ((s + 1, float(squared[s]), float(absolute[s])) for s in range(horizon))))

    plt = _figure()
    fig, axes = plt.subplots(1, FORECAST_EXAMPLES, figsize=(4 * FORECAST_EXAMPLES, 3), sharey=True)
    for ax, window in zip(np.atleast_1d(axes), forecast_examples(outputs, targets)):
        ax.plot(targets[window, :, channel], label="truth")
        ax.plot(outputs[window, :, channel], label="forecast")
        ax.set_title(f"test window {window}")
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    return files + [save_png(fig, folder / "forecast.png")]
