"""The train stage's figures: CSV data that DVC renders (`dvc plots show`) and PNGs for MLflow
and the report.

- plots/curves/<run>.csv: loss per epoch (every head);
- plots/<head>/<run>.csv: the kind's own plot (confusion matrix, forecast against truth, a
  generator's loss by position in its window), written by the kind (pipeline/kinds/);
- plots/train/<run>/: the PNG figures, and the kind's own (a forecaster's error by horizon
  step, a generator's final sample).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.files import atomic_path, save_png
from pipeline.layout import RunPaths


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


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_train_plots(paths: RunPaths, kind, history: list[dict], outputs: np.ndarray, targets: np.ndarray,
                      meta: dict, test_dataset=None, sample: str | None = None) -> list[Path]:
    """Learning curves (every kind), then the kind's own plot and figures (`kind.write_plots`:
    a confusion matrix, forecasts against truth, a generator's loss by position and sample)."""
    files = [learning_curves(paths.curves_plot, history),
             curves_png(paths.figures / "curves.png", history, f"{paths.name}: learning curves")]
    return files + kind.write_plots(paths, outputs, targets, meta, test_dataset, sample)
