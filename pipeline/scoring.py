"""Metrics of a model's outputs, per head, and the naive floor each head is compared with.

Keys are `split/metric` (`val/acc`, `test/mse`, `test/bpc`), the same in DVC's files and in
MLflow. A generator is scored on whole splits read as contiguous streams with the state
carried (pipeline.generation.stream_loss), in nats and bits per character.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.datasets import TaskData
from pipeline.generation import bits, stream_loss


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


def torch_step(model, device: torch.device):
    """A generation.Step over a CharGenerator: numpy in, numpy out."""
    def step(ids: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        with torch.no_grad():
            logits, new = model.step(torch.from_numpy(ids).to(device),
                                     tuple(torch.from_numpy(s).to(device) for s in state))
        return logits.float().cpu().numpy(), tuple(s.float().cpu().numpy() for s in new)
    return step


def zero_state(model):
    """batch -> the zero state of a CharGenerator, as numpy arrays."""
    return lambda batch: tuple(s.numpy() for s in model.zero_state(batch))


def text_loss(model, ids: np.ndarray, device: torch.device, streams: int, block: int) -> float:
    model.eval()
    return stream_loss(torch_step(model, device), zero_state(model), ids, streams, block)


def generator_metrics(model, loader, device, streams: int, split: str) -> dict[str, float]:
    """Loss (nats per character) and bits per character over the whole split."""
    dataset = loader.dataset
    loss = text_loss(model, dataset.ids.numpy(), device, streams, dataset.block_size)
    return {f"{split}/loss": loss, f"{split}/bpc": bits(loss)}


def evaluate(model, loader, device, task, split: str) -> dict[str, float]:
    """The metrics of `task`'s head on one split."""
    if task.head == "generator":
        return generator_metrics(model, loader, device, task.train.eval_streams, split)
    return METRICS[task.head](*predictions(model, loader, device), split)


def bigram_loss(train_ids: np.ndarray, ids: np.ndarray, vocab_size: int) -> float:
    """Nats per character of a bigram model fitted on train (add-one smoothing)."""
    counts = np.ones((vocab_size, vocab_size))
    np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1)
    log_p = np.log(counts / counts.sum(1, keepdims=True))
    return float(-log_p[ids[:-1], ids[1:]].mean())


def naive_baseline(data: TaskData, head: str) -> dict[str, float]:
    """The sanity floor on test: majority class (classifier), repeat-last-value (forecaster),
    or a bigram model fitted on train (generator)."""
    if head == "generator":
        train_ids, test_ids = (loader.dataset.ids.numpy() for loader in (data.train, data.test))
        loss = bigram_loss(train_ids, test_ids, data.meta["vocab_size"])
        return {"baseline/loss": loss, "baseline/bpc": bits(loss)}
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
