"""Stage `train@<task>-<model>`: train one baseline, evaluate it once on test, track it.

    python -m pipeline.stages.train <task> <model>        # e.g. imdb gru
    torchrun --nproc_per_node=N -m pipeline.stages.train <task> <model>   # DDP, N processes

- Device: CUDA (cuDNN) when present, else CPU. bf16 autocast when configured (train.precision,
  or a task's own task.<t>.train.precision), on CUDA and on CPUs with native bf16.
- Data-parallel (DDP) under torchrun, or with train.nproc_per_node > 1 (which re-launches
  this module through torchrun): NCCL on GPUs, one per process, gloo on the CPU. The
  task's batch size stays the *global* batch, split across the processes, so N processes
  follow one process's optimisation. Rank 0 alone evaluates, tracks, and writes
  checkpoints and outputs.
- AdamW with a one-cycle schedule (warm-up, cosine decay), gradient clipping, early
  stopping on the validation metric; the best weights are kept.
- Every epoch writes a resume checkpoint. A run killed at any point and started again
  resumes from it: each epoch's randomness is seeded by (seed, epoch), so the resumed run
  ends with the same metrics as an uninterrupted one.
- The best checkpoint is evaluated once on test, beside a naive baseline.

The stage reads top to bottom: `setup` builds everything a run needs (or restores it from
the resume checkpoint), `run_epochs` is the loop, `evaluate_best` the final test, and
`write_outputs` the files and the MLflow hand-off.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from pipeline.training.checkpoints import paths_of, save_checkpoint
from pipeline.config import Config, ConfigError, load_task, stage_args
from pipeline.training.datasets import TaskData, load_task_data
from pipeline.training.distributed import (
    Ranks,
    from_rank0,
    leave_process_group,
    pick_device,
    set_deterministic,
    start_distributed,
    summed,
    torchrun_command,
    torchrun_ranks,
    uses_bf16,
)
from pipeline.training.epochs import seed_epoch, train_epoch
from pipeline.files import write_json_atomic
from pipeline.hosts import host_kind
from pipeline.kinds.base import Kind, predictions
from pipeline.kinds.registry import kind_of
from pipeline.layout import RunPaths, run_name
from pipeline.nets.backbone import count_parameters
from pipeline.training.plots import write_train_plots
from pipeline.training.resume import Progress, fingerprint, load_resume, model_settings
from pipeline.tracking import (
    NullTracker,
    TrackingError,
    flatten,
    open_tracker,
    run_tags,
)

log = logging.getLogger(__name__)


# ---- the model of a run ----------------------------------------------------------------------


def model_args_for(config: Config, task_name: str, model_name: str, meta: dict) -> dict:
    """{head, args}: the plain arguments (stored in the checkpoint) that rebuild the run's model."""
    task, model = config.task[task_name], config.model[model_name]
    return kind_of(task.head).model_args(model.settings(task.head), model.cell, meta, (task_name, model_name))


# ---- the learning rate ------------------------------------------------------------------------


def learning_rate(config: Config, task) -> float:
    """The AdamW peak learning rate: the task's own (task.<t>.train.lr) where it sets one, else train.lr."""
    return task.train.lr or config.train.lr


# ---- set-up -----------------------------------------------------------------------------------------


@dataclass
class Training:
    """Everything one training run works with."""

    config: Config
    task_name: str
    model_name: str
    paths: RunPaths
    ranks: Ranks
    device: torch.device
    autocast: bool
    data: TaskData
    kind: Kind                 # the task's kind of head (pipeline/kinds/)
    model_args: dict           # {head, args}: what rebuilds the model
    model: nn.Module           # the model itself (evaluated, checkpointed)
    trained: nn.Module         # what the optimisation steps run through: DDP's wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    fingerprint: str
    progress: Progress
    tracker: NullTracker

    @property
    def task(self):
        return self.config.task[self.task_name]

    @property
    def monitor(self) -> str:
        return f"val/{self.task.metric}"

    def improved(self, value: float) -> bool:
        best = self.progress.best_metric
        return value > best if self.task.maximize else value < best


def setup(config: Config, task_name: str, model_name: str, stage: str) -> Training:
    """Data, model, optimizer, schedule and tracker of a run, restored from its resume
    checkpoint when one matches."""
    task = config.task[task_name]
    paths = paths_of(config, task_name, model_name)
    ranks = torchrun_ranks()
    device = pick_device(config.train.device, ranks.local_rank)
    if ranks.world_size > 1:
        start_distributed(ranks, device)
    set_deterministic(config.train.deterministic)
    data = load_task_data(task.data, task.paths.prepared, task.train, config.seed, config.train.num_workers,
                          ranks.rank, ranks.world_size)
    model_args = model_args_for(config, task_name, model_name, data.meta)
    run_fingerprint = fingerprint(config, task_name, model_name, data.digest, ranks.world_size)
    resume = from_rank0(load_resume(paths.resume, run_fingerprint) if ranks.is_main else None, ranks)

    torch.manual_seed(config.seed)
    kind = kind_of(task.head)
    model = kind.build(model_args["args"])
    kind.init_weights(model, config.model[model_name].settings(task.head), task, model_args["args"], (task_name, model_name))
    model = model.to(device)
    lr = learning_rate(config, task)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=task.train.epochs * len(data.train),
        pct_start=max(config.train.warmup_fraction, 1e-3), anneal_strategy="cos")
    progress = Progress.start(task.maximize)
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        progress = Progress(**resume["progress"])
        log.info("resuming %s from epoch %d (%s)", paths.name, progress.epoch, paths.resume)
    trained = model
    if ranks.world_size > 1:  # after the resume: DDP starts every rank from rank 0's weights
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    tracker = open_tracker(config.tracking, task_name, model_name, progress.run_id) if ranks.is_main else NullTracker()
    if resume is None:
        start_tracking(tracker, config, task_name, model_name, stage, device, ranks.world_size, data.digest,
                       data.meta)
    log.info("training %s on %s%s: %d parameters, %d epochs", paths.name, device,
             f" x {ranks.world_size} processes" if ranks.world_size > 1 else "", count_parameters(model),
             task.train.epochs)
    return Training(config, task_name, model_name, paths, ranks, device,
               autocast=uses_bf16(config.precision_of(task_name), device), data=data, kind=kind, model_args=model_args,
               model=model, trained=trained, optimizer=optimizer, scheduler=scheduler,
               loss_fn=kind.loss(), fingerprint=run_fingerprint, progress=progress, tracker=tracker)


def start_tracking(tracker, config: Config, task_name: str, model_name: str, stage: str, device: torch.device,
                   world_size: int, data_digest: str, meta: dict) -> None:
    """A new MLflow run's parameters, tags and datasets (a classifier's label names among the tags)."""
    task = config.task[task_name]
    # Keys without the task or model name (model.cell, model.forecaster.hidden_size, ...), so
    # that the runs of every cell line up column for column in MLflow's compare views; train.lr
    # is the one the run trained with (a task may set its own).
    run_config = {"task": {"name": task_name, **task.model_dump()},
                  "model": {"name": model_name, **model_settings(config, task_name, model_name)},
                  "train": {**config.train.model_dump(), "lr": learning_rate(config, task)}, "seed": config.seed}
    tracker.log_params(flatten(run_config))
    tracker.set_tags({**run_tags(stage), "device": device.type, "host": host_kind(device), "cudnn": str(torch.backends.cudnn.version()),
                      "world_size": str(world_size), **({"labels": json.dumps(meta["labels"])} if "labels" in meta else {})})
    for split, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
        tracker.log_dataset(f"{task_name}-{split}", f"{task.paths.prepared}/{split}.npz", data_digest, context)


# ---- the loop -----------------------------------------------------------------------------------------


def run_epochs(run: Training) -> None:
    """Train until the last epoch or until early stopping; every epoch is validated, logged
    and checkpointed (rank 0), so a killed run resumes after its last finished epoch."""
    config, ranks, progress = run.config, run.ranks, run.progress
    epochs = run.task.train.epochs
    for epoch in range(progress.epoch + 1, epochs + 1):
        if progress.bad_epochs >= config.train.patience:
            break
        seed_epoch(config.seed, epoch, ranks.rank)
        run.data.train.batch_sampler.set_epoch(epoch)
        tick = time.perf_counter()
        loss_sum, samples = train_epoch(run.trained, run.data.train, run.optimizer, run.scheduler, run.loss_fn,
                                        run.device, config.train.grad_clip, run.autocast,
                                        f"{run.paths.name} epoch {epoch}/{epochs}", ranks.is_main)
        loss_sum, samples = summed([loss_sum, samples], ranks, run.device)
        seconds = time.perf_counter() - tick
        row = None
        if ranks.is_main:
            row = {"epoch": epoch, "train/loss": loss_sum / samples,
                   **run.kind.evaluate(run.model, run.data.val, run.device, run.task, "val"),
                   "lr": run.scheduler.get_last_lr()[0], "epoch/samples_per_s": samples / seconds,
                   "epoch/seconds": seconds}
        row = from_rank0(row, ranks)  # every rank takes the same early-stopping decision

        progress.epoch = epoch
        progress.history.append(row)
        progress.train_seconds += seconds
        progress.samples += int(samples)
        if run.improved(row[run.monitor]):  # only rank 0 keeps the weights: it alone tests and writes outputs
            progress.best_metric, progress.best_epoch, progress.bad_epochs = row[run.monitor], epoch, 0
            progress.best_state = ({k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
                                   if ranks.is_main else None)
        else:
            progress.bad_epochs += 1
        run.tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        if ranks.is_main:
            log.info("%s epoch %d: %s", run.paths.name, epoch,
                     ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            text = run.kind.sample(run.model, run.data.meta, run.task, run.device)
            if text is not None:
                run.tracker.log_text(text, f"samples/epoch_{epoch:03d}.txt")
            progress.run_id = run.tracker.run_id
            save_checkpoint(run.paths.resume, {
                "fingerprint": run.fingerprint, "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                "progress": asdict(progress)})


# ---- the final test -------------------------------------------------------------------------------------


@dataclass
class FitResult:
    metrics: dict[str, float]
    history: list[dict[str, float]]
    model: nn.Module
    model_args: dict
    test_outputs: np.ndarray
    test_targets: np.ndarray
    sample: str | None = None   # a generator's final sample


def evaluate_best(run: Training) -> FitResult:
    """The best weights on test, beside the naive floor (rank 0)."""
    progress, kind = run.progress, run.kind
    run.model.load_state_dict(progress.best_state)
    outputs, targets = predictions(run.model, run.data.test, run.device)
    metrics = {
        **kind.test_metrics(run.model, run.data, run.device, run.task, outputs, targets),
        **kind.naive_floor(run.data),
        f"best/{run.monitor}": progress.best_metric,
        "best/epoch": progress.best_epoch,
        "epochs": len(progress.history),
        "train/seconds": round(progress.train_seconds, 2),
        "train/samples_per_s": round(progress.samples / progress.train_seconds, 2),
        "train/samples": progress.samples,
        "params/count": count_parameters(run.model),
    }
    final_sample = kind.sample(run.model, run.data.meta, run.task, run.device)
    return FitResult(metrics, progress.history, run.model.cpu(), run.model_args, outputs, targets, final_sample)


def fit(config: Config, task_name: str, model_name: str, stage: str) -> tuple[Training, FitResult | None]:
    """Train, then evaluate the best weights on test; no result on the ranks other than 0."""
    run = setup(config, task_name, model_name, stage)
    try:  # an exception marks the MLflow run FAILED; a SIGKILL leaves it to be resumed
        run.kind.check(run.task, run.data.meta, (run.task_name, run.model_name))
        run_epochs(run)
        return run, evaluate_best(run) if run.ranks.is_main else None
    except Exception:
        run.tracker.end("FAILED")
        raise


# ---- outputs -----------------------------------------------------------------------------------------------


def headline(metrics: dict[str, float], metric: str) -> dict[str, float]:
    """What DVC compares between experiments: the task's metric on test, and on validation for
    the weights it chose. The names are the same for every task (the metric is the task's:
    acc, mse, loss), so `dvc metrics show` stays a few columns wide; the rest of the test
    metrics, anchors, timings and floors stay in the full record."""
    return {"test": metrics[f"test/{metric}"], "val": metrics[f"best/val/{metric}"]}


def write_outputs(run: Training, result: FitResult) -> None:
    """Checkpoint, metrics, plots and the MLflow hand-off; then log them and drop the resume state."""
    config, paths = run.config, run.paths
    save_checkpoint(paths.checkpoint, {"state_dict": result.model.state_dict(), "model_args": result.model_args,
                                       "config": config.model_dump()})
    # The host kind beside the figures: another CPU kind sums fp32 in other orders (docs/results.md).
    write_json_atomic(paths.train_metrics, {**result.metrics, "host": host_kind(run.device)})
    write_json_atomic(paths.train_scores, headline(result.metrics, run.task.metric))
    figures = write_train_plots(paths, run.kind, result.history, result.test_outputs, result.test_targets,
                                run.data.meta, run.data.test.dataset, result.sample)

    tracker = run.tracker
    tracker.log_metrics(result.metrics)
    tracker.log_artifact("params.yaml", "config")
    tracker.log_artifact(run.task.paths.card, "data")
    for path in figures:
        tracker.log_artifact(path, "plots")
    if result.sample is not None:
        tracker.log_text(result.sample, "samples/final.txt")
    example = next(iter(run.data.val))[0][:2].numpy()
    tracker.log_torch_model(result.model.eval(), example)
    write_json_atomic(paths.handoff, tracker.handoff())
    tracker.end()
    paths.resume.unlink(missing_ok=True)
    log.info("%s: %s", paths.name, ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))


def main(argv: list[str] | None = None) -> int:
    task_name, model_name = stage_args("pipeline.stages.train", ["task", "model"], argv)
    stage = f"train@{run_name(task_name, model_name)}"
    ranks = torchrun_ranks()
    if not ranks.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one process reports progress
    try:
        config, _ = load_task(task_name)
        if model_name not in config.model:
            raise ConfigError(f"params.yaml: model.{model_name} not found; models are {sorted(config.model)}")
        if config.train.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
            command = torchrun_command(config.train.nproc_per_node, task_name, model_name)
            log.info("train.nproc_per_node=%d: %s", config.train.nproc_per_node, " ".join(command))
            sys.stdout.flush()
            os.execv(command[0], command)  # DVC keeps waiting on this same process
        try:
            run, result = fit(config, task_name, model_name, stage)
            if result is not None:
                write_outputs(run, result)
        finally:
            leave_process_group()
    except (ConfigError, TrackingError, FileNotFoundError) as exc:
        print(f"{stage}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
