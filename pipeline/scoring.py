"""Metrics of a model's outputs, per head, and the naive floor each head is compared with.

Keys are `split/metric` (`val/acc`, `test/mse`), the same in DVC's files and in MLflow.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.datasets import TaskData


def predictions(model: nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(outputs, targets) over a whole loader, in its order."""
    model.eval()
    outputs, targets = [], []
    with torch.no_grad():
        for inputs, target in loader:
            outputs.append(model(inputs.to(device)).float().cpu())
            targets.append(target)
    return torch.cat(outputs).numpy(), torch.cat(targets).numpy()


def classification_metrics(logits: np.ndarray, labels: np.ndarray, split: str) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    probabilities = torch.softmax(torch.from_numpy(logits), 1).numpy()
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    predicted = probabilities.argmax(1)
    return {f"{split}/loss": loss, f"{split}/acc": accuracy_score(labels, predicted),
            f"{split}/f1": f1_score(labels, predicted), f"{split}/auc": roc_auc_score(labels, probabilities[:, 1])}


def forecast_metrics(forecast: np.ndarray, truth: np.ndarray, split: str) -> dict[str, float]:
    """MSE and MAE on the normalised scale, over every window, step and channel."""
    error = forecast - truth
    return {f"{split}/loss": float((error ** 2).mean()), f"{split}/mse": float((error ** 2).mean()),
            f"{split}/mae": float(np.abs(error).mean())}


METRICS = {"classifier": classification_metrics, "forecaster": forecast_metrics}


def evaluate(model, loader, device, head: str, split: str) -> dict[str, float]:
    return METRICS[head](*predictions(model, loader, device), split)


def naive_baseline(data: TaskData, head: str) -> dict[str, float]:
    """The sanity floor: majority class (classifier) or repeat-last-value (forecaster), on test."""
    if head == "classifier":
        train_labels = data.train.dataset.labels.numpy()
        test_labels = data.test.dataset.labels.numpy()
        majority = np.bincount(train_labels).argmax()
        return {"baseline/acc": float((test_labels == majority).mean())}
    past, future = zip(*(data.test.dataset[i] for i in range(len(data.test.dataset))))
    past, future = torch.stack(past).numpy(), torch.stack(future).numpy()
    repeated = np.repeat(past[:, -1:], future.shape[1], axis=1)
    metrics = forecast_metrics(repeated, future, "baseline")
    return {"baseline/mse": metrics["baseline/mse"], "baseline/mae": metrics["baseline/mae"]}
