"""The classifier kind on the pipeline's side: token ids [B, T] -> class logits, trained with
cross-entropy, scored on accuracy and macro-F1 (and AUC where binary) beside the majority class, exported with its
softmax, validated at batch 1 and 64. Its torch-free half is classifier_spec.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.files import file_digest, read_json, save_png
from pipeline.training.flops import classifier_train_flops
from pipeline.kinds import classifier_spec
from pipeline.kinds.base import BatchKind
from pipeline.latency import LATENCY_SEQUENCE
from pipeline.nets.classifier import SequenceClassifier
from pipeline.training.plots import pyplot, read_csv, write_csv
from pipeline.schema import ConfigError


class WithProbabilities(nn.Module):
    """Classifier logits plus their softmax, so deployers need no post-processing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor):
        logits = self.model(input_ids)
        return logits, torch.softmax(logits, dim=-1)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, split: str) -> dict[str, float]:
    """Loss, accuracy and macro-F1 (every class weighs the same) for any number of classes; the
    positive class's F1 and the ROC AUC where there are two."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    probabilities = torch.softmax(torch.from_numpy(logits), 1).numpy()
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    predicted = probabilities.argmax(1)
    classes = list(range(logits.shape[1]))
    found = {f"{split}/loss": loss, f"{split}/acc": accuracy_score(labels, predicted),
             f"{split}/macro_f1": f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)}
    if len(classes) == 2:
        found |= {f"{split}/f1": f1_score(labels, predicted, zero_division=0),
                  f"{split}/auc": roc_auc_score(labels, probabilities[:, 1]) if len(set(labels.tolist())) == 2
                  else float("nan")}
    return found


def pretrained_vectors(task, args: dict, names: tuple[str, str]) -> torch.Tensor:
    task_name, model_name = names
    path = Path(task.paths.embeddings) / "vectors.npy"
    vectors = torch.from_numpy(np.load(path))
    expected = (args["vocab_size"], args["embedding_dim"])
    if tuple(vectors.shape) != expected:
        raise ConfigError(f"{path}: vectors of shape {tuple(vectors.shape)} do not fit the embedding layer "
                          f"{expected}; set task.{task_name}.embeddings.dim = model.{model_name}.classifier.embedding_dim "
                          f"or model.{model_name}.classifier.pretrained_embeddings=false")
    return vectors


def confusion_counts(rows: list[dict], labels: list[str]) -> np.ndarray:
    """[actual, predicted] counts from the rows of a run's confusion plot data (label names)."""
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for row in rows:
        counts[index[row["actual"]], index[row["predicted"]]] += 1
    return counts


def confusion_png(runs: dict, labels: list[str], out: Path) -> Path:
    """Each model's test confusion matrix, side by side: the share of each actual class (rows)
    predicted as each class (columns), with the counts written in where the classes are few."""
    plt = pyplot()
    size = 1.2 + 0.45 * len(labels)
    fig, axes = plt.subplots(1, len(runs), figsize=(size * len(runs) + 0.6, size + 0.6), squeeze=False)
    for ax, (model, paths) in zip(axes[0], runs.items()):
        counts = confusion_counts(read_csv(paths.head_plot), labels)
        shares = counts / counts.sum(1, keepdims=True).clip(min=1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        if len(labels) <= 12:
            for (i, j), n in np.ndenumerate(counts):
                ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 3 else 0, ha="right"
                      if len(labels) > 3 else "center")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_title(model.upper())
    axes[0][0].set_ylabel("actual")
    fig.tight_layout()
    return save_png(fig, out)


class Classifier(BatchKind):
    spec = classifier_spec
    model_class = SequenceClassifier
    training_only = frozenset({"pretrained_embeddings"})
    quality = ("test/acc", "test/macro_f1", "test/auc")   # AUC where binary
    floor = "majority class"
    step_unit = "valid tokens"

    def data_args(self, settings, meta, names):
        return {"vocab_size": meta["vocab_size"], "num_classes": len(meta["labels"]), "pad_id": meta["pad_id"]}

    def init_weights(self, model, settings, task, args, names):
        if settings.pretrained_embeddings and getattr(task, "embeddings", None) is not None:   # where embed ran
            model.embedding.weight.data.copy_(pretrained_vectors(task, args, names))

    def loss(self):
        return nn.CrossEntropyLoss()

    def metrics(self, outputs, targets, split):
        return classification_metrics(outputs, targets, split)

    def naive_floor(self, data):
        train_labels = data.train.dataset.labels.numpy()
        test_labels = data.test.dataset.labels.numpy()
        majority = np.bincount(train_labels).argmax()
        return {"baseline/acc": float((test_labels == majority).mean())}

    def write_plots(self, paths, outputs, targets, meta, test_dataset, sample):
        labels, predicted = meta["labels"], outputs.argmax(1)
        return [write_csv(paths.head_plot, ["actual", "predicted"],
                          ((labels[a], labels[p]) for a, p in zip(targets, predicted)))]

    def train_work(self, inputs, args, meta):
        return int((inputs != meta["pad_id"]).sum()), classifier_train_flops(args, inputs.shape[0], inputs.shape[1])

    # ---- export ---------------------------------------------------------------------------------

    def graph_interface(self, args, meta):
        example = torch.randint(2, args["vocab_size"], (2, 16))
        example[1, 10:] = meta["pad_id"]
        return {"inputs": ["input_ids"], "outputs": ["logits", "probabilities"], "example": (example,),
                "dynamic_axes": {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"},
                                 "probabilities": {0: "batch"}}}

    def export_module(self, model):
        return WithProbabilities(model)

    def deployment_metadata(self, task, settings, cell, meta):
        tokenizer = Path(task.paths.prepared) / meta["tokenizer"]
        return {"labels": json.dumps(meta["labels"]), "tokenizer_file": str(tokenizer),
                "tokenizer_sha256": file_digest(tokenizer), "tokenizer_json": tokenizer.read_text(encoding="utf-8"),
                "pad_id": str(meta["pad_id"]), "max_len": str(meta["max_len"]),
                "truncation_side": meta["truncation_side"]}

    # ---- validation -----------------------------------------------------------------------------

    def latency_input(self, args, meta, batch):
        rng = np.random.default_rng(batch)
        return rng.integers(2, args["vocab_size"], (batch, LATENCY_SEQUENCE)).astype(np.int64)

    def parity_inputs(self, args, meta, seed=0):
        rng = np.random.default_rng(seed)
        cases = []
        for batch, length in ((1, 7), (3, 61), (17, meta["max_len"])):
            ids = rng.integers(2, args["vocab_size"], (batch, length))
            for row in range(1, batch, 2):  # every other row right-padded to a random length
                ids[row, rng.integers(1, length):] = meta["pad_id"]
            cases.append(ids.astype(np.int64))
        return cases

    def torch_outputs(self, model, x, device):
        logits, = super().torch_outputs(model, x, device)
        return [logits, torch.softmax(torch.from_numpy(logits), -1).numpy()]

    def onnx_metric(self, outputs, targets):
        return float((outputs.argmax(1) == targets).sum()), len(targets)

    def paired_noise(self, fp32_batches, int8_batches):
        """McNemar's: accuracy's difference between two models on the same texts has the standard
        error sqrt(texts they classify differently) / n under no real difference."""
        ours, theirs = (np.concatenate([o.argmax(1) for o, _ in b]) for b in (fp32_batches, int8_batches))
        return float(np.sqrt((ours != theirs).sum()) / len(ours))

    # ---- the report -----------------------------------------------------------------------------

    def report_sections(self, task_name, task, runs, out_dir):
        rows = read_csv(next(iter(runs.values())).head_plot)
        labels = read_json(task.paths.card).get("labels") or sorted({r["actual"] for r in rows})
        figure = confusion_png(runs, labels, out_dir / f"{task_name}-confusion.png")
        return [f"![{task_name} confusion matrices on test]({figure.name})"], [figure]


KIND = Classifier()
