"""Stage `train@<task>-<model>`: train one baseline, evaluate it once on test, track it.

    python -m pipeline.train <task> <model>        # e.g. imdb gru
    torchrun --nproc_per_node=N -m pipeline.train <task> <model>   # DDP, N processes

- Device: CUDA (cuDNN) when present, else CPU; bf16 autocast on CUDA when configured.
- Data-parallel (DDP) under torchrun, or with train.nproc_per_node > 1 (which re-launches
  this module through torchrun): NCCL on GPUs, one per process, gloo on the CPU. The
  task's batch size stays the *global* batch, split across the processes, so N processes
  follow one process's optimisation. Rank 0 alone evaluates, tracks, and writes
  checkpoints and outputs.
- AdamW with a one-cycle schedule (warm-up, cosine decay), gradient clipping, early
  stopping on the validation metric; the best weights are kept.
- Every epoch writes a resume checkpoint under paths.checkpoints. A run killed at any
  point and started again resumes from it: each epoch's randomness is seeded by
  (seed, epoch), so the resumed run ends with the same metrics as an uninterrupted one.
- The best checkpoint is evaluated once on test, beside a naive baseline.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.config import Config, ConfigError, ImdbTask, load_task, stage_args
from pipeline.datasets import TaskData, load_task_data
from pipeline.files import atomic_path, write_json_atomic
from pipeline.models import build_model, count_parameters
from pipeline.reporting import write_train_plots
from pipeline.tracking import NullTracker, TrackingError, flatten, open_tracker, run_tags

log = logging.getLogger(__name__)


# ---- what differs between the two task kinds ---------------------------------------------


@dataclass(frozen=True)
class Objective:
    """Loss, the validation metric that early stopping watches, and its direction."""

    loss: nn.Module
    monitor: str
    maximize: bool


def objective_for(task) -> Objective:
    if isinstance(task, ImdbTask):
        return Objective(nn.CrossEntropyLoss(), "val/acc", maximize=True)
    return Objective(nn.MSELoss(), "val/mse", maximize=False)


def model_args_for(config: Config, task_name: str, model_name: str, meta: dict) -> dict:
    """Plain arguments (stored in the checkpoint) that rebuild the model."""
    task, model = config.task[task_name], config.model[model_name]
    if isinstance(task, ImdbTask):
        head = model.classifier
        args = dict(vocab_size=meta["vocab_size"], num_classes=len(meta["labels"]), cell=model.cell,
                    embedding_dim=head.embedding_dim, hidden_size=head.hidden_size,
                    num_layers=head.num_layers, bidirectional=head.bidirectional,
                    dropout=head.dropout, embedding_dropout=head.embedding_dropout,
                    pooling=list(head.pooling), pad_id=meta["pad_id"])
        return {"kind": "classifier", "args": args}
    head = model.forecaster
    if head.segment_len and meta["lookback"] % head.segment_len:
        raise ConfigError(f"model.{model_name}.forecaster.segment_len={head.segment_len} must divide "
                          f"task.{task_name}.prepare.lookback={meta['lookback']}")
    args = dict(n_channels=len(meta["columns"]), horizon=meta["horizon"], cell=model.cell,
                hidden_size=head.hidden_size, num_layers=head.num_layers, dropout=head.dropout,
                revin=head.revin, segment_len=head.segment_len,
                channel_independent=head.channel_independent)
    return {"kind": "forecaster", "args": args}


def pretrained_vectors(task: ImdbTask, model_name: str, args: dict) -> torch.Tensor:
    path = Path(task.paths.embeddings) / "vectors.npy"
    vectors = torch.from_numpy(np.load(path))
    expected = (args["vocab_size"], args["embedding_dim"])
    if tuple(vectors.shape) != expected:
        raise ConfigError(f"{path}: vectors of shape {tuple(vectors.shape)} do not fit the embedding layer "
                          f"{expected}; set task.imdb.embeddings.dim = model.{model_name}.classifier.embedding_dim "
                          f"or model.{model_name}.classifier.pretrained_embeddings=false")
    return vectors


# ---- evaluation -----------------------------------------------------------------------------


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    outputs, targets = [], []
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


def evaluate(model, loader, device, kind: str, split: str) -> dict[str, float]:
    outputs, targets = predict(model, loader, device)
    return (classification_metrics if kind == "classifier" else forecast_metrics)(outputs, targets, split)


def naive_baseline(data: TaskData, kind: str) -> dict[str, float]:
    """The sanity floor: majority class (IMDB) or repeat-last-value (forecasting), on test."""
    if kind == "classifier":
        train_labels = data.train.dataset.labels.numpy()
        test_labels = data.test.dataset.labels.numpy()
        majority = np.bincount(train_labels).argmax()
        return {"baseline/acc": float((test_labels == majority).mean())}
    past, future = zip(*(data.test.dataset[i] for i in range(len(data.test.dataset))))
    past, future = torch.stack(past).numpy(), torch.stack(future).numpy()
    repeated = np.repeat(past[:, -1:], future.shape[1], axis=1)
    metrics = forecast_metrics(repeated, future, "baseline")
    return {"baseline/mse": metrics["baseline/mse"], "baseline/mae": metrics["baseline/mae"]}


# ---- training ------------------------------------------------------------------------------


def pick_device(setting: str, local_rank: int = 0) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but torch sees no CUDA device; use auto or cpu")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device("cuda", local_rank) if setting == "cuda" else torch.device("cpu")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job; the defaults are a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_ranks() -> Ranks:
    """The ranks that torchrun hands over in the environment (one process without it)."""
    return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def start_distributed(ranks: Ranks, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU."""
    import datetime

    import torch.distributed as dist

    if device.type == "cuda":
        if torch.cuda.device_count() <= ranks.local_rank:
            raise ConfigError(f"local rank {ranks.local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                              "start at most that many processes per node")
        torch.cuda.set_device(device)
    # Rank 0 evaluates while the others wait at the next collective: allow for a long evaluation.
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=1))


def from_rank0(value, ranks: Ranks):
    """Rank 0's value, on every rank (a no-op for one process)."""
    if ranks.world_size == 1:
        return value
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def summed(values: list[float], ranks: Ranks, device: torch.device) -> list[float]:
    """Element-wise sum over all ranks."""
    if ranks.world_size == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Dropout and data order of an epoch depend on (seed, epoch) only: resumable exactly.
    Each rank draws its own dropout masks."""
    torch.manual_seed(seed * 100_003 + epoch + 7_919 * rank)


def train_epoch(model, loader, optimizer, scheduler, loss_fn, device, grad_clip, autocast, desc,
                show_progress: bool = True) -> tuple[float, int]:
    """One pass over `loader`; returns the summed per-sample loss and the number of samples."""
    model.train()
    total_loss, samples = 0.0, 0
    start = time.perf_counter()
    with tqdm(loader, desc=desc, leave=False, disable=None if show_progress else True) as bar:
        for inputs, target in bar:
            inputs, target = inputs.to(device, non_blocking=True), target.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(model(inputs).float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(target)
            samples += len(target)
            bar.set_postfix(loss=f"{total_loss / samples:.4f}",
                            samples_per_s=f"{samples / (time.perf_counter() - start):.0f}")
    return total_loss, samples


def fingerprint(config: Config, task_name: str, model_name: str, data_digest: str, world_size: int = 1) -> str:
    """What a resume checkpoint must match: this run's settings, its data, and its number of
    processes (each rank draws its own dropout masks, so another count is another run)."""
    import hashlib
    import json

    train = config.train.model_dump(exclude={"nproc_per_node"})  # how it is launched: world_size says it
    relevant = {"task": config.task[task_name].model_dump(), "model": config.model[model_name].model_dump(),
                "train": train, "seed": config.seed, "data": data_digest}
    if world_size > 1:
        relevant["world_size"] = world_size
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def load_resume(path: Path, expected: str) -> dict | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != expected:
        log.warning("ignoring %s: it belongs to other settings or data", path)
        return None
    return state


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def fit(config: Config, task_name: str, model_name: str, stage: str) -> "FitResult | None":
    """Train, then evaluate the best weights on test; None on the ranks other than 0."""
    task = config.task[task_name]
    kind = "classifier" if isinstance(task, ImdbTask) else "forecaster"
    name = f"{task_name}-{model_name}"
    ranks = torchrun_ranks()
    device = pick_device(config.train.device, ranks.local_rank)
    if ranks.world_size > 1:
        start_distributed(ranks, device)
    autocast = config.train.precision == "bf16" and device.type == "cuda"
    torch.use_deterministic_algorithms(config.train.deterministic, warn_only=True)
    data = load_task_data(task.kind, task.paths.prepared, task.train.batch_size, task.train.eval_batch_size,
                          config.seed, config.train.num_workers, ranks.rank, ranks.world_size)
    spec = model_args_for(config, task_name, model_name, data.meta)
    objective = objective_for(task)

    resume_path = Path(config.paths.checkpoints) / name / "last.pt"
    run_fingerprint = fingerprint(config, task_name, model_name, data.digest, ranks.world_size)
    resume = from_rank0(load_resume(resume_path, run_fingerprint) if ranks.is_main else None, ranks)

    torch.manual_seed(config.seed)
    model = build_model(spec["kind"], spec["args"])
    if kind == "classifier" and config.model[model_name].classifier.pretrained_embeddings:
        model.embedding.weight.data.copy_(pretrained_vectors(task, model_name, spec["args"]))
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    trained = model  # what the optimisation steps run through: DDP's wrapper under torchrun
    epochs = task.train.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.train.lr, total_steps=epochs * len(data.train),
        pct_start=max(config.train.warmup_fraction, 1e-3), anneal_strategy="cos")
    history: list[dict[str, float]] = []
    best = {"metric": -math.inf if objective.maximize else math.inf, "epoch": 0, "state": None}
    start_epoch, train_seconds, samples_seen, bad_epochs, run_id = 1, 0.0, 0, 0, None
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        history, best = resume["history"], resume["best"]
        start_epoch, train_seconds, samples_seen = resume["epoch"] + 1, resume["train_seconds"], resume["samples"]
        bad_epochs, run_id = resume["bad_epochs"], resume["run_id"]
        log.info("resuming %s from epoch %d (%s)", name, resume["epoch"], resume_path)
    if ranks.world_size > 1:  # after the resume: DDP starts every rank from rank 0's weights
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    tracker = open_tracker(config.tracking, task_name, model_name, run_id) if ranks.is_main else NullTracker()
    if resume is None:
        # Keys without the task or model name (model.cell, model.classifier.hidden_size, ...), so
        # that LSTM and GRU runs line up column for column in MLflow's compare views.
        run_config = {"task": {"name": task_name, **task.model_dump()},
                      "model": {"name": model_name, **config.model[model_name].model_dump()},
                      "train": config.train.model_dump(), "seed": config.seed}
        tracker.log_params(flatten(run_config))
        tracker.set_tags({**run_tags(stage), "device": device.type, "cudnn": str(torch.backends.cudnn.version()),
                          "world_size": str(ranks.world_size)})
        for split in ("train", "val", "test"):
            tracker.log_dataset(f"{task_name}-{split}", f"{task.paths.prepared}/{split}.npz", data.digest,
                                {"train": "training", "val": "validation", "test": "testing"}[split])
    log.info("training %s on %s%s: %d parameters, %d epochs", name, device,
             f" x {ranks.world_size} processes" if ranks.world_size > 1 else "", count_parameters(model), epochs)
    try:  # an exception marks the MLflow run FAILED; a SIGKILL leaves it to be resumed
        for epoch in range(start_epoch, epochs + 1):
            if bad_epochs >= config.train.patience:
                break
            seed_epoch(config.seed, epoch, ranks.rank)
            data.train.batch_sampler.set_epoch(epoch)
            tick = time.perf_counter()
            loss_sum, samples = train_epoch(trained, data.train, optimizer, scheduler, objective.loss, device,
                                              config.train.grad_clip, autocast, f"{name} epoch {epoch}/{epochs}",
                                              ranks.is_main)
            loss_sum, samples = summed([loss_sum, samples], ranks, device)
            epoch_seconds = time.perf_counter() - tick
            train_seconds += epoch_seconds
            samples_seen += int(samples)
            row = None
            if ranks.is_main:
                row = {"epoch": epoch, "train/loss": loss_sum / samples, **evaluate(model, data.val, device, kind, "val"),
                       "lr": scheduler.get_last_lr()[0], "epoch/samples_per_s": samples / epoch_seconds,
                       "epoch/seconds": epoch_seconds}
            row = from_rank0(row, ranks)  # every rank takes the same early-stopping decision
            history.append(row)
            improved = row[objective.monitor] > best["metric"] if objective.maximize else row[objective.monitor] < best["metric"]
            if improved:  # only rank 0 keeps the weights: it alone evaluates test and writes outputs
                best = {"metric": row[objective.monitor], "epoch": epoch,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                        if ranks.is_main else None}
                bad_epochs = 0
            else:
                bad_epochs += 1
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            if not ranks.is_main:
                continue
            log.info("%s epoch %d: %s", name, epoch, ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            save_checkpoint(resume_path, {
                "fingerprint": run_fingerprint, "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": history, "best": best, "train_seconds": train_seconds,
                "samples": samples_seen, "bad_epochs": bad_epochs, "run_id": tracker.run_id})

        if not ranks.is_main:
            return None
        model.load_state_dict(best["state"])
        test_outputs, test_targets = predict(model, data.test, device)
        metrics_fn = classification_metrics if kind == "classifier" else forecast_metrics
        final = {
            **metrics_fn(test_outputs, test_targets, "test"),
            **naive_baseline(data, kind),
            f"best/{objective.monitor}": best["metric"],
            "best/epoch": best["epoch"],
            "epochs": len(history),
            "train/seconds": round(train_seconds, 2),
            "train/samples_per_s": round(samples_seen / train_seconds, 2),
            "train/samples": samples_seen,  # over all epochs and processes (DDP: padding rows included)
            "params/count": count_parameters(model),
        }
        return FitResult(final, history, model.cpu(), spec, tracker, test_outputs, test_targets, data, resume_path)
    except Exception:
        tracker.end("FAILED")
        raise


@dataclass
class FitResult:
    metrics: dict[str, float]
    history: list[dict[str, float]]
    model: nn.Module
    spec: dict
    tracker: object
    test_outputs: np.ndarray
    test_targets: np.ndarray
    data: TaskData
    resume_path: Path


def write_outputs(config: Config, task_name: str, model_name: str, result: FitResult) -> None:
    """Checkpoint, metrics, plots and the MLflow hand-off; then log them and drop the resume state."""
    task = config.task[task_name]
    name = f"{task_name}-{model_name}"
    model_dir = Path(config.paths.models) / name
    checkpoint = model_dir / "model.pt"
    save_checkpoint(checkpoint, {"state_dict": result.model.state_dict(), "model_args": result.spec,
                                 "config": config.model_dump()})
    metrics_path = Path(config.paths.metrics) / "train" / f"{name}.json"
    write_json_atomic(metrics_path, result.metrics)
    plot_files = write_train_plots(Path(config.paths.plots) / "train" / name, result.spec["kind"], result.history,
                                   result.test_outputs, result.test_targets, result.data.meta)

    tracker = result.tracker
    tracker.log_metrics(result.metrics)
    tracker.log_artifact("params.yaml", "config")
    tracker.log_artifact(task.paths.card, "data")
    for path in plot_files:
        tracker.log_artifact(path, "plots")
    example = next(iter(result.data.val))[0][:2].numpy()
    tracker.log_torch_model(result.model.eval(), example)
    write_json_atomic(model_dir / "mlflow.json", tracker.handoff())
    tracker.end()
    result.resume_path.unlink(missing_ok=True)
    log.info("%s: %s", name, ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))


def leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_command(nproc_per_node: int, task_name: str, model_name: str) -> list[str]:
    """This stage again, as N local DDP processes under torchrun (rendezvous on this host)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            "-m", "pipeline.train", task_name, model_name]


def main(argv: list[str] | None = None) -> int:
    task_name, model_name = stage_args("pipeline.train", ["task", "model"], argv)
    stage = f"train@{task_name}-{model_name}"
    ranks = torchrun_ranks()
    if not ranks.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one process reports progress
    try:
        config, task = load_task(task_name)
        if model_name not in config.model:
            raise ConfigError(f"params.yaml: model.{model_name} not found; models are {sorted(config.model)}")
        if config.train.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
            command = torchrun_command(config.train.nproc_per_node, task_name, model_name)
            log.info("train.nproc_per_node=%d: %s", config.train.nproc_per_node, " ".join(command))
            sys.stdout.flush()
            os.execv(command[0], command)  # DVC keeps waiting on this same process
        try:
            result = fit(config, task_name, model_name, stage)
            if result is not None:
                write_outputs(config, task_name, model_name, result)
        finally:
            leave_process_group()
    except (ConfigError, TrackingError, FileNotFoundError) as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
