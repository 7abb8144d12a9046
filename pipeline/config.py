"""The typed schema of the configuration, and params.yaml loaded through it.

conf/ is the one hand-edited config. It is composed by Hydra into params.yaml, which DVC
stages read (pipeline/compose.py). Regenerate params.yaml with:

    python -m pipeline.config [override ...]      # e.g. task.etth1.prepare.horizon=192

Every stage loads params.yaml through `load_config`, so an unknown key, a wrong type or an
out-of-range value fails at start-up with a message naming the key and what is allowed.
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, create_model, model_validator

from pipeline.data import SETTINGS as DATA_SETTINGS
from pipeline.kinds import SETTINGS as HEAD_SETTINGS
from pipeline.layout import run_name, task_paths
from pipeline.schema import ConfigError, PositiveInt, Section  # noqa: F401  (ConfigError: re-exported)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
PARAMS_FILE = "params.yaml"


# ---- paths ----------------------------------------------------------------------------


class PathsConfig(Section):
    data: str
    raw: str
    prepared: str
    models: str
    onnx: str
    metrics: str
    scores: str
    plots: str
    reports: str
    checkpoints: str


# ---- tasks: each data kind's schema (pipeline/data/*_settings.py) -------------------------


TaskConfig = Any   # one data kind's `Task` (pipeline/data/<kind>_settings.py); `schema()` builds the union

# ---- model, training, export, tracking ------------------------------------------------


class ModelBase(Section):
    """model.<name>: the cell, and one section of settings per kind of head (its
    `Settings`, pipeline/kinds/*_settings.py). A section may be left out where no task trains
    that head with this model."""

    cell: Literal["lstm", "gru", "lstm_peephole"]

    def settings(self, head: str) -> Section:
        return getattr(self, head)


class TrainConfig(Section):
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["fp32", "bf16"]
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_fraction: float = Field(ge=0, lt=1)
    grad_clip: float = Field(gt=0)
    patience: PositiveInt
    deterministic: bool
    num_workers: int = Field(ge=0)
    nproc_per_node: PositiveInt


class SessionSettings(Section):
    """onnxruntime SessionOptions for one workload (pipeline/deploy/sessions.py applies them). Only
    the thread count: the execution mode and optimisation level made no consistent
    difference, or only a loss, when measured (benchmarks/session_settings.py)."""

    intra_op_num_threads: int = Field(ge=0, description="0 = onnxruntime's default (one per physical core)")


class SessionConfig(Section):
    latency: SessionSettings      # batch 1: validate's b1 timing, predict's one forecast or text, each generated character
    throughput: SessionSettings   # batch 64: validate's b64 timing, the test metric, predict with several texts


class Tolerance(Section):
    """|ONNX - PyTorch| <= rtol * |PyTorch| + atol * rms(PyTorch), elementwise (pipeline/parity.py)."""

    rtol: float = Field(gt=0)
    atol: float = Field(ge=0, description="in units of the reference's root-mean-square")


class ParityGates(Section):
    """One execution provider's parity with PyTorch."""

    outputs: Tolerance   # what a user reads: probabilities (and logits), log-probabilities, forecasts
    states: Tolerance    # what a stateful graph carries to its next call (the generator's h, c)


class Int8Rule(Section):
    """The INT8 model's test metric against the fp32 ONNX model's: the change, absolute or
    relative to the fp32 figure, at most `limit`. With `noise_z` (a head whose metric counts
    predictions: accuracy), a change that the test set cannot tell from chance passes too:
    within noise_z standard errors of the paired difference, sqrt(predictions that differ) / n
    (McNemar's), so that a small test set does not fail on two or three flipped predictions."""

    change: Literal["absolute", "relative"]
    limit: float = Field(gt=0)
    noise_z: float | None = Field(None, gt=0)


class Gates(Section):
    """validate's gates (docs/validation.md). Each is a decision about the model: loosening one
    accepts an export that differs more from the model trained; it fixes nothing."""

    cpu: ParityGates
    cuda: ParityGates
    metric_rtol: float = Field(gt=0, description="the test metric on ONNX against PyTorch's, relative")
    int8: dict[str, Int8Rule]   # per model head (its metric): only the heads some task trains are needed


class ExportConfig(Section):
    opset: int = Field(ge=17)
    dynamo: bool
    required_providers: list[Literal["CPUExecutionProvider", "CUDAExecutionProvider"]]
    int8: bool                    # also write model.int8.onnx (onnxruntime dynamic quantisation), validated by its own gate
    session: SessionConfig
    gates: Gates


class ReportConfig(Section):
    """The report stage's choice of each task's champion (pipeline/selection.py)."""

    tie_rtol: float = Field(ge=0, lt=1, description="validation metrics this close (relative) tie")


class ServeLimits(Section):
    """Request limits of a deployed model; export stamps them into the model's metadata."""

    max_texts: PositiveInt
    max_text_chars: PositiveInt
    max_series_rows: PositiveInt
    max_prompt_chars: PositiveInt
    max_generate_chars: PositiveInt


class ServeConfig(Section):
    limits: ServeLimits
    timeout_s: PositiveInt        # mlflow models serve --timeout


class TrackingConfig(Section):
    enabled: bool
    uri: str = Field(min_length=1)
    experiment_prefix: str


class Run(Section):
    """One (task, model) pair: one train, export and validate stage each in dvc.yaml. `head`
    and `data` (the task's data kind) name the modules the run's stages import, and list as deps."""

    task: str
    model: str
    head: str
    data: str


def default_head(data: str) -> str:
    return DATA_SETTINGS[data].Task.model_fields["head"].default


def derive_runs(tasks: dict[str, Any], models: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Every task x model pair (a task's own `models` when it names them), keyed
    `<task>-<model>` (the stage suffix in dvc.yaml).

    conf/config.yaml writes it into params.yaml through the `runs` resolver, because DVC's
    `foreach` needs the pairs as data: tasks and models are listed nowhere by hand.
    """
    pairs = {}
    for task_name, task in tasks.items():
        data = task.get("data")
        if data not in DATA_SETTINGS:  # left to the schema, which names the key and the data kinds
            continue
        for model_name in task.get("models") or models:
            pairs[run_name(task_name, model_name)] = {"task": task_name, "model": model_name,
                                                  "head": task.get("head") or default_head(data), "data": data}
    return pairs


def derive_embeds(tasks: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The tasks that ask for pretrained word vectors (`embeddings` set): one embed stage each
    in dvc.yaml (`foreach: ${embeds}`), written into params.yaml as `runs` is."""
    return {name: {"task": name, "data": task.get("data")} for name, task in tasks.items()
            if isinstance(task, dict) and task.get("embeddings")}


class Config(Section):
    """The whole configuration. Its `model` and `task` sections follow the registered kinds of
    head and of data, so the class that validates is `schema()`, built from this one and every
    kind's settings (pipeline.kinds.SETTINGS, pipeline.data.SETTINGS)."""

    paths: PathsConfig
    task: dict[str, TaskConfig] = Field(min_length=1)
    model: dict[str, ModelBase] = Field(min_length=1)
    runs: dict[str, Run]
    embeds: dict[str, dict[str, str]]
    train: TrainConfig
    export: ExportConfig
    report: ReportConfig
    serve: ServeConfig
    tracking: TrackingConfig
    seed: int = Field(ge=0)

    def precision_of(self, task_name: str) -> str:
        """The precision a task trains in: its own train.precision, else the shared one."""
        return self.task[task_name].train.precision or self.train.precision

    @model_validator(mode="after")
    def _tasks_know_their_names(self) -> "Config":
        for name, task in self.task.items():
            task.named(name, task_paths(self.paths, name))
        return self

    @model_validator(mode="after")
    def _runs_are_derived(self) -> "Config":
        for name, task in self.task.items():
            unknown = sorted(set(task.models or []) - set(self.model))
            if unknown:
                raise ValueError(f"task.{name}.models: {unknown} are not models; "
                                 f"expected some of {sorted(self.model)}")
        for name, task in self.task.items():
            if task.head not in HEAD_SETTINGS:
                raise ValueError(f"task.{name}.head: no kind {task.head!r}; the kinds are {sorted(HEAD_SETTINGS)}")
        tasks = {n: t.model_dump() for n, t in self.task.items()}
        if self.embeds != derive_embeds(tasks):
            raise ValueError(f"embeds must be the tasks that set embeddings {sorted(derive_embeds(tasks))}, found "
                             f"{sorted(self.embeds)}; it is derived: recompose params.yaml with `python -m pipeline.config`")
        expected = derive_runs(tasks, self.model)
        found = {name: run.model_dump() for name, run in self.runs.items()}
        if found != expected:
            raise ValueError(f"runs must be every task x model pair {sorted(expected)}, found {sorted(found)}; "
                             "it is derived: recompose params.yaml with `python -m pipeline.config`")
        for run in self.runs.values():
            if self.model[run.model].settings(run.head) is None:
                raise ValueError(f"model.{run.model}.{run.head}: required, since task.{run.task} trains the "
                                 f"{run.head} head with model {run.model}")
            if self.export.int8 and run.head not in self.export.gates.int8:
                raise ValueError(f"export.gates.int8.{run.head}: required, since export.int8 is true and "
                                 f"task.{run.task} trains the {run.head} head; expected {{change: absolute|relative, "
                                 f"limit: <number>}} (found rules for {sorted(self.export.gates.int8)})")
        return self


@lru_cache(maxsize=None)
def _schema(heads: tuple[tuple[str, type], ...], tasks: tuple[type, ...]) -> type[Config]:
    model = create_model("ModelConfig", __base__=ModelBase,
                         **{name: (settings | None, None) for name, settings in heads})
    task = Annotated[Union[tasks], Field(discriminator="data")] if len(tasks) > 1 else tasks[0]
    return create_model("Config", __base__=Config, model=(dict[str, model], Field(min_length=1)),
                        task=(dict[str, task], Field(min_length=1)))


def schema() -> type[Config]:
    """The Config class for the kinds of head and of data registered now."""
    return _schema(tuple((name, settings.Settings) for name, settings in HEAD_SETTINGS.items()),
                   tuple(settings.Task for settings in DATA_SETTINGS.values()))


# ---- loading -----------------------------------------------------------------------------


def _describe(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    # A tagged union puts the tag into the location (task.imdb.texts.prepare...); drop it.
    if len(loc) > 2 and loc[0] == "task" and loc[2] in DATA_SETTINGS:
        del loc[2]
    loc = [part for part in loc if not part.startswith("<")]   # the tag of a union's form (schema.Sources)
    key = ".".join(loc) or "<root>"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (found {error['input']!r}); remove it or fix its spelling"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    if key == "<root>":   # a check across sections: its message names the keys; the input is everything
        return f"{key}: {error['msg']}"
    return f"{key}: {error['msg']} (found {error['input']!r})"


def validate(container: dict[str, Any], source: str = PARAMS_FILE) -> Config:
    try:
        return schema().model_validate(container)
    except ValidationError as exc:
        lines = "\n".join(f"  - {_describe(e)}" for e in exc.errors())
        raise ConfigError(f"{source}: invalid configuration\n{lines}") from None


def load_config(path: str | Path = PARAMS_FILE) -> Config:
    """Load and validate params.yaml (the composed config that DVC stages depend on)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found; compose it with `python -m pipeline.config`")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return validate(data, source=str(path))


def load_task(name: str, path: str | Path = PARAMS_FILE) -> tuple[Config, TaskConfig]:
    """The validated config and its task section `task.<name>`."""
    config = load_config(path)
    if name not in config.task:
        raise ConfigError(f"{path}: task.{name} not found; tasks are {sorted(config.task)}")
    return config, config.task[name]


def setup_logging() -> None:
    """Every stage's log lines: level, module, message."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def stage_args(module: str, names: list[str], argv: list[str] | None) -> list[str]:
    """A stage's positional arguments (logging set up first); a wrong count exits (2) with usage."""
    setup_logging()
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != len(names):
        print(f"usage: python -m {module} " + " ".join(f"<{n}>" for n in names), file=sys.stderr)
        raise SystemExit(2)
    return args


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.config`: compose conf/ into params.yaml (pipeline/compose.py)."""
    parser = argparse.ArgumentParser(
        description="Compose conf/ into params.yaml (validated). Pass Hydra overrides.")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.lr=0.001")
    parser.add_argument("-o", "--output", default=PARAMS_FILE, help="where to write")
    parser.add_argument("--check", action="store_true",
                        help="only check that the output equals a fresh composition")
    args = parser.parse_args(argv)
    from pipeline.compose import write_params

    return write_params(args.overrides, Path(args.output), args.check)


if __name__ == "__main__":
    sys.exit(main())
