"""The typed schema of the configuration, its composition from conf/, and params.yaml.

conf/ is the one hand-edited config. It is composed by Hydra into params.yaml, which DVC
stages read. Regenerate params.yaml with:

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

from pipeline.kinds import (
    SPECS,
    classifier_spec,
    forecaster_spec,
    generator_spec,
    spec_of,
)
from pipeline.layout import run_name
from pipeline.schema import Checksum, ConfigError, Dropout, PositiveInt, Section  # noqa: F401  (re-exported)

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


# ---- data sources ---------------------------------------------------------------------


class OfflineSource(Section):
    filename: str = Field(min_length=1)
    checksum: Checksum


class SourceConfig(Section):
    url: str = Field(min_length=1, description="http(s) URL, file:// URL or local path")
    checksum: Checksum
    offline: OfflineSource | None = None


class TaskPaths(Section):
    raw: str
    prepared: str
    card: str
    embeddings: str | None = None  # text tasks: pretrained word vectors (stage embed)


class ImdbPrepare(Section):
    vocab_size: int = Field(ge=3, description="including [PAD] and [UNK]")
    min_freq: PositiveInt
    vocab_from_unsup: bool
    max_len: PositiveInt
    truncation_side: Literal["left", "right"]
    val_fraction: float = Field(gt=0, lt=1)
    split_seed: int = Field(ge=0)


class TimeseriesPrepare(Section):
    time_column: str
    columns: list[str] | None = Field(min_length=1)
    target: str
    features: Literal["M", "S"]
    missing: Literal["error", "ffill"]
    lookback: PositiveInt
    horizon: PositiveInt
    borders: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)] | None
    ratios: Annotated[list[Annotated[float, Field(gt=0, lt=1)]],
                      Field(min_length=3, max_length=3)] | None
    units: dict[str, str] | None = None   # column -> unit, for figure labels only

    @model_validator(mode="after")
    def _one_split_rule(self) -> "TimeseriesPrepare":
        if (self.borders is None) == (self.ratios is None):
            raise ValueError("set exactly one of borders ([train_end, val_end, test_end]) "
                             "and ratios ([train, val, test])")
        if self.borders is not None and not self.borders[0] < self.borders[1] < self.borders[2]:
            raise ValueError(f"borders must increase, found {self.borders}")
        if self.ratios is not None and sum(self.ratios) > 1 + 1e-9:
            raise ValueError(f"ratios must sum to at most 1, found {self.ratios}")
        return self


class TaskTrain(Section):
    epochs: PositiveInt
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    precision: Literal["fp32", "bf16"] | None = None   # this task's own train.precision
    lr: float | None = Field(None, gt=0)                # this task's own train.lr (AdamW peak learning rate)


class CharLmPrepare(Section):
    train_fraction: float = Field(gt=0, lt=1, description="the first part of the text (nanoGPT: 0.9)")
    val_fraction: float = Field(gt=0, lt=1, description="of the rest: its first part is val, the remainder test")


class CharLmTrain(TaskTrain):
    block_size: Annotated[int, Field(ge=2)]   # characters per training window (random offsets)
    steps_per_epoch: PositiveInt             # an epoch is this many batches of random windows
    lr: float = Field(gt=0)                  # required here: character models want their own
    eval_streams: PositiveInt                # val/test are read as this many contiguous streams
    sample_prompt: str = Field(min_length=1)  # the fixed prompt of the samples logged every epoch


class EmbeddingsConfig(Section):
    dim: PositiveInt
    window: PositiveInt
    epochs: PositiveInt
    skip_gram: bool
    seed: int = Field(ge=0)


class Anchors(Section):
    """Published figures on a task's dataset under one protocol (conf/task/<name>.yaml): the
    report prints them beside the task's runs when the task's prepare settings match `protocol`."""

    dataset: str | None = None   # the checksum of the source they are about (task.<name>.source.checksum)
    protocol: dict[str, Any] = Field(default_factory=dict)   # prepare settings the figures hold for
    source: str = Field(min_length=1)                          # where the figures are published
    figures: dict[str, dict[str, float]] = Field(min_length=1)  # model -> {metric key: value}


class TaskBase(Section):
    source: SourceConfig
    paths: TaskPaths
    anchors: list[Anchors] = Field(default_factory=list)  # none for a dataset without published figures
    # The models this task trains (names under model:); all of them when left out. Opting a
    # slow task out of a model keeps the full `dvc repro` inside its time budget.
    models: list[str] | None = Field(default=None, min_length=1)
    # The model head it trains (a kind, pipeline/kinds/); each data kind has its own default.
    head: str

    @property
    def metric(self) -> str:
        """The metric that picks the best epoch and the champion: the head's."""
        return spec_of(self.head).METRIC

    @property
    def maximize(self) -> bool:
        return spec_of(self.head).MAXIMIZE


class ImdbTask(TaskBase):
    kind: Literal["imdb"]
    prepare: ImdbPrepare
    embeddings: EmbeddingsConfig
    train: TaskTrain
    head: str = classifier_spec.NAME


class TimeseriesTask(TaskBase):
    kind: Literal["timeseries"]
    prepare: TimeseriesPrepare
    train: TaskTrain
    head: str = forecaster_spec.NAME


class CharLmTask(TaskBase):
    kind: Literal["charlm"]
    prepare: CharLmPrepare
    train: CharLmTrain
    head: str = generator_spec.NAME


TASK_TYPES = {"imdb": ImdbTask, "timeseries": TimeseriesTask, "charlm": CharLmTask}  # task kind -> its schema
TaskConfig = Annotated[Union[tuple(TASK_TYPES.values())], Field(discriminator="kind")]
TASK_KINDS = tuple(TASK_TYPES)

# ---- model, training, export, tracking ------------------------------------------------


class ModelBase(Section):
    """model.<name>: the cell, and one section of settings per kind of head (its spec's
    `Settings`, pipeline/kinds/*_spec.py). A section may be left out where no task trains
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
    """onnxruntime SessionOptions for one workload (pipeline/sessions.py applies them). Only
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
    relative to the fp32 figure, at most `limit`."""

    change: Literal["absolute", "relative"]
    limit: float = Field(gt=0)


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
    """One (task, model) pair: one train, export and validate stage each in dvc.yaml."""

    task: str
    model: str
    head: str


def default_head(kind: str) -> str:
    return TASK_TYPES[kind].model_fields["head"].default


def derive_runs(tasks: dict[str, Any], models: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Every task x model pair (a task's own `models` when it names them), keyed
    `<task>-<model>` (the stage suffix in dvc.yaml).

    conf/config.yaml writes it into params.yaml through the `runs` resolver, because DVC's
    `foreach` needs the pairs as data: tasks and models are listed nowhere by hand.
    """
    pairs = {}
    for task_name, task in tasks.items():
        kind = task["kind"]
        if kind not in TASK_TYPES:  # left to the schema, which names the key and the kinds
            continue
        for model_name in task.get("models") or models:
            pairs[run_name(task_name, model_name)] = {"task": task_name, "model": model_name,
                                                  "head": task.get("head") or default_head(kind)}
    return pairs


def register_resolvers() -> None:
    """`${runs:${task},${model}}` in conf/; Hydra's plugin discovery calls this for DVC too
    (hydra_plugins/pipeline_resolvers.py)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(
        "runs", lambda tasks, models: OmegaConf.create(derive_runs(OmegaConf.to_container(tasks, resolve=True),
                                                                   OmegaConf.to_container(models, resolve=True))),
        replace=True)


class Config(Section):
    """The whole configuration. Its `model` sections follow the registered kinds, so the class
    that validates is `schema()`, built from this one and pipeline.kinds.SPECS."""

    paths: PathsConfig
    task: dict[str, TaskConfig] = Field(min_length=1)
    model: dict[str, ModelBase] = Field(min_length=1)
    runs: dict[str, Run]
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
    def _runs_are_derived(self) -> "Config":
        for name, task in self.task.items():
            unknown = sorted(set(task.models or []) - set(self.model))
            if unknown:
                raise ValueError(f"task.{name}.models: {unknown} are not models; "
                                 f"expected some of {sorted(self.model)}")
        for name, task in self.task.items():
            if task.head not in SPECS:
                raise ValueError(f"task.{name}.head: no kind {task.head!r}; the kinds are {sorted(SPECS)}")
        expected = derive_runs({n: t.model_dump() for n, t in self.task.items()}, self.model)
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
def _schema(kinds: tuple[tuple[str, type], ...]) -> type[Config]:
    model = create_model("ModelConfig", __base__=ModelBase,
                         **{name: (settings | None, None) for name, settings in kinds})
    return create_model("Config", __base__=Config, model=(dict[str, model], Field(min_length=1)))


def schema() -> type[Config]:
    """The Config class for the kinds registered now."""
    return _schema(tuple((name, spec.Settings) for name, spec in SPECS.items()))


# ---- composition and loading ----------------------------------------------------------


def compose(overrides: list[str] | None = None, config_dir: Path = CONF_DIR) -> dict[str, Any]:
    """Compose conf/ with Hydra, resolved, exactly as DVC's Hydra support does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register_resolvers()
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    return OmegaConf.to_container(cfg)  # type: ignore[return-value]


def to_yaml(container: dict[str, Any]) -> str:
    """The text DVC writes for a composed config (OmegaConf's YAML dump)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(container))


def _describe(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    # A tagged union puts the tag into the location (task.imdb.imdb.prepare...); drop it.
    if len(loc) > 2 and loc[0] == "task" and loc[2] in TASK_KINDS:
        del loc[2]
    key = ".".join(loc) or "<root>"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (found {error['input']!r}); remove it or fix its spelling"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
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


def _override_error(overrides: list[str], exc: Exception) -> str:
    """One line for overrides that Hydra rejects; a misspelt key gets the nearest valid keys."""
    import difflib
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    text = str(exc).split("\nConfig search path:")[0].strip()  # Hydra's message, in one line
    text = re.sub(r"\n[ \t]+", ", ", re.sub(r":\s*\n[ \t]+", ": ", text))  # indented lists
    message = re.sub(r"([.?!]); ", r"\1 ", re.sub(r"\s*\n\s*", "; ", text))
    if exc.__cause__ is not None and str(exc.__cause__).splitlines()[0] not in message:
        message += f" ({str(exc.__cause__).splitlines()[0]})"
    parser, parsed = OverridesParser.create(), []
    for line in overrides:
        try:
            parsed.append(parser.parse_override(line))
        except HydraException:  # then exc is this syntax error
            return f"conf/: override {line}: {message}"
    bad = next((o for o in parsed if o.input_line in str(exc) or re.search(
        rf"(?<![\w.@/+~]){re.escape(o.key_or_group)}(?![\w@/]|\.\w)", str(exc))), None)
    if bad is None:
        return f"conf/: {message}"
    head = f"conf/: override {bad.input_line}"
    try:  # the valid keys: the composition without the bad override
        node = compose([o for o in overrides if o != bad.input_line])
    except (HydraException, OmegaConfBaseException):
        return f"{head}: {message}"
    seen: list[str] = []
    for part in bad.key_or_group.split("."):
        if not isinstance(node, dict) or part not in node:
            break
        node, seen = node[part], [*seen, part]
    else:  # the key exists: some other mistake, in Hydra's words
        return f"{head}: {message}"
    if not isinstance(node, dict):
        kind = type(node).__name__
        return f"{head}: no such key {part!r}: {'.'.join(seen)} holds a {kind}, not keys"
    keys = sorted(str(key) for key in node)
    near = difflib.get_close_matches(part, keys, n=3)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    where = f"under {'.'.join(seen)}" if seen else "at the top level"
    return f"{head}: no such key {part!r} {where}{hint} (valid keys: {', '.join(keys)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compose conf/ into params.yaml (validated). Pass Hydra overrides.")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.lr=0.001")
    parser.add_argument("-o", "--output", default=PARAMS_FILE, help="where to write")
    parser.add_argument("--check", action="store_true",
                        help="only check that the output equals a fresh composition")
    args = parser.parse_args(argv)

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        container = compose(args.overrides)
    except (HydraException, OmegaConfBaseException) as exc:  # an override that Hydra rejects
        print(_override_error(args.overrides, exc), file=sys.stderr)
        return 2
    try:
        validate(container, source="conf/ (composed)")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    text = to_yaml(container)
    output = Path(args.output)
    if args.check:
        if not output.is_file() or output.read_text(encoding="utf-8") != text:
            print(f"{output} differs from conf/; run `python -m pipeline.config`", file=sys.stderr)
            return 1
        print(f"{output} is up to date with conf/")
        return 0
    from pipeline.files import write_text_atomic

    write_text_atomic(output, text)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
