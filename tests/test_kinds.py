"""Kinds of head: each is its own modules (pipeline/kinds/), the stages look a kind up and never
branch on its name, so a fourth kind is a new Kind, its spec and its settings, with no stage edited."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import onnx
from pipeline.stages import export, prepare, train, validate
from pipeline.config import load_config
from pipeline.compose import compose, to_yaml
from pipeline.data import SETTINGS as DATA_SETTINGS
from pipeline.kinds import SETTINGS as HEAD_SETTINGS
from pipeline.data import registry as data_registry
from pipeline.data import timeseries
from pipeline.data.timeseries_settings import TimeseriesPrepare
from pipeline.kinds import forecaster_settings, registry, specs
from pipeline.kinds.base import BatchKind
from pipeline.kinds.forecaster import forecast_metrics
from pipeline.nets.backbone import RecurrentBackbone
from pipeline.training.plots import write_csv
from pipeline.schema import PositiveInt, Section, TaskBase, TaskTrain
from pipeline.tracking import flatten
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, copy_pipeline, mirror_checksums


def spelled(files: list[Path], names) -> list[str]:
    pattern = re.compile(rf"[\"']({'|'.join(names)})[\"']")
    return [f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()}" for path in files
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]


def test_no_module_outside_a_kinds_folder_spells_its_name():
    """Outside pipeline/kinds/, the code looks heads up by name; it never spells one
    (`"forecaster"`); outside pipeline/data/, the same for the data kinds (`"timeseries"`)."""
    plugins = ("pipeline/kinds", "pipeline/data")
    code = sorted(p for p in [*REPO_ROOT.glob("pipeline/**/*.py"), *REPO_ROOT.glob("benchmarks/**/*.py")]
                  if not str(p.relative_to(REPO_ROOT)).startswith(plugins))
    kinds, data = sorted(REPO_ROOT.glob("pipeline/kinds/**/*.py")), sorted(REPO_ROOT.glob("pipeline/data/**/*.py"))
    assert len(code) > 30 and spelled([*code, *data], HEAD_SETTINGS) == []
    assert spelled([*code, *kinds], DATA_SETTINGS) == []


def test_a_run_tracks_only_the_settings_of_its_own_kind():
    config = load_config(REPO_ROOT / "params.yaml")
    for task_name, head in (("etth1", "forecaster"), ("imdb", "classifier"), ("shakespeare", "generator")):
        keys = flatten({"model": train.model_settings(config, task_name, "gru")})
        assert keys and all(k == "model.cell" or k.startswith(f"model.{head}.") for k in keys), keys
        assert f"model.{head}.hidden_size" in keys


# ---- a toy fourth kind: a flat forecast (one value per channel, held over the horizon) ----------


class FlatSettings(Section):
    hidden_size: PositiveInt


FLAT_SPEC = SimpleNamespace(NAME="flat", METRIC="mse", MAXIMIZE=False, Settings=FlatSettings)


class FlatForecast(nn.Module):
    """The backbone's last state -> one value per channel, repeated over the horizon."""

    def __init__(self, n_channels: int, horizon: int, cell: str, hidden_size: int):
        super().__init__()
        self.horizon = horizon
        self.backbone = RecurrentBackbone(cell, n_channels, hidden_size)
        self.head = nn.Linear(hidden_size, n_channels)

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(past)[:, -1]).unsqueeze(1).repeat(1, self.horizon, 1)


class Flat(BatchKind):
    spec = FLAT_SPEC
    model_class = FlatForecast
    quality = ("test/mse",)
    floor = "zero"

    def data_args(self, settings, meta, names):
        return {"n_channels": len(meta["columns"]), "horizon": meta["horizon"]}

    def loss(self):
        return nn.MSELoss()

    def metrics(self, outputs, targets, split):
        return {k: v for k, v in forecast_metrics(outputs, targets, split).items() if not k.endswith("/mae")}

    def naive_floor(self, data):
        future = torch.stack([data.test.dataset[i][1] for i in range(len(data.test.dataset))]).numpy()
        return {"baseline/mse": float((future ** 2).mean())}

    def write_plots(self, paths, outputs, targets, meta, test_dataset, sample):
        return [write_csv(paths.head_plot, ["step", "mse"], enumerate(((outputs - targets) ** 2).mean((0, 2)).tolist()))]

    def train_work(self, inputs, args, meta):
        return inputs.shape[0] * inputs.shape[1], 0

    def graph_interface(self, args, meta):
        return {"inputs": ["past"], "outputs": ["flat_forecast"],
                "example": (torch.randn(2, meta["lookback"], args["n_channels"]),),
                "dynamic_axes": {"past": {0: "batch", 1: "time"}, "flat_forecast": {0: "batch"}}}

    def deployment_metadata(self, task, settings, cell, meta):
        return {"lookback": str(meta["lookback"]), "horizon": str(meta["horizon"])}

    def latency_input(self, args, meta, batch):
        return np.random.default_rng(batch).standard_normal((batch, meta["lookback"], args["n_channels"])).astype(np.float32)

    def parity_inputs(self, args, meta, seed=0):
        rng = np.random.default_rng(seed)
        return [rng.standard_normal((b, meta["lookback"], args["n_channels"])).astype(np.float32) for b in (1, 5)]

    def onnx_metric(self, outputs, targets):
        return float(((outputs - targets) ** 2).sum()), targets.size


@pytest.fixture
def flat_kind(monkeypatch):
    """The toy kind registered for one test, and unregistered after it."""
    monkeypatch.setitem(HEAD_SETTINGS, FLAT_SPEC.NAME, FLAT_SPEC)
    monkeypatch.setitem(specs.SPECS, FLAT_SPEC.NAME, FLAT_SPEC)
    monkeypatch.setitem(registry.KINDS, FLAT_SPEC.NAME, Flat())
    return registry.KINDS[FLAT_SPEC.NAME]


def test_a_fourth_kind_trains_exports_and_validates_with_no_stage_edited(flat_kind, pipeline_repo, tmp_path,
                                                                          monkeypatch):
    source, mirror, *_ = pipeline_repo
    repo = copy_pipeline(source, tmp_path / "repo")
    # Its conf: a task that trains the flat head over ETTh1's prepared windows, and the head's settings.
    overrides = [*TINY_OVERRIDES, *mirror_checksums(mirror), "+task.etth1.head=flat", "+task.etth1.models=[lstm]",
                 "+model.lstm.flat.hidden_size=8", "tracking.enabled=false", "export.int8=false"]
    (repo / "params.yaml").write_text(to_yaml(compose(overrides, repo / "conf")), encoding="utf-8")
    monkeypatch.chdir(repo)
    config = load_config()
    assert config.runs["etth1-lstm"].head == "flat" and config.task["etth1"].metric == "mse"

    assert train.main(["etth1", "lstm"]) == 0
    metrics = json.loads(Path("metrics/train/etth1-lstm.json").read_text())
    assert {"test/mse", "baseline/mse", "best/val/mse"} <= set(metrics) and "test/mae" not in metrics
    assert Path("plots/flat/etth1-lstm.csv").is_file()

    assert export.main(["etth1", "lstm"]) == 0
    graph = onnx.load("onnx/etth1-lstm/model.onnx")
    assert [o.name for o in graph.graph.output] == ["flat_forecast"]
    assert {p.key: p.value for p in graph.metadata_props}["rb.head"] == "flat"

    assert validate.main(["etth1", "lstm"]) == 0
    report = json.loads(Path("metrics/onnx/etth1-lstm.json").read_text())
    assert report["passed"] and report["cpu"]["parity"] <= 1 and report["cpu"]["parity_at"] == "flat_forecast"
    assert report["cpu"]["metric_delta"] <= report["cpu"]["metric_limit"] and "latency_ms_b64_p50" in report["cpu"]


# ---- a toy data kind: sine waves made from their settings (no raw file) ------------------------


class SinePrepare(TimeseriesPrepare):
    rows: PositiveInt
    period: PositiveInt


class SineTask(TaskBase):
    data: Literal["sine"]
    prepare: SinePrepare
    train: TaskTrain
    head: str = forecaster_settings.NAME


def sine_prepare(raw, settings: SinePrepare, out_dir) -> dict:
    """Two noisy sine waves as a CSV beside the output, prepared as any series is."""
    t = np.arange(settings.rows)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({settings.time_column: pd.date_range("2020-01-01", periods=settings.rows, freq="h"),
                          **{c: np.sin(2 * np.pi * (t + 3 * i) / settings.period) + 0.05 * rng.standard_normal(len(t))
                             for i, c in enumerate(settings.columns)}})
    csv = Path(out_dir).parent / "sine.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv, index=False)
    base = TimeseriesPrepare(**settings.model_dump(exclude={"rows", "period"}))
    return timeseries.prepare(csv, base, out_dir)


SINE_SETTINGS = SimpleNamespace(NAME="sine", Task=SineTask)
SINE = SimpleNamespace(prepare=sine_prepare, split_datasets=timeseries.split_datasets, items=timeseries.items)
SINE_CONF = """data: sine
models: [gru]
source: {url: https://example.org/none, checksum: "sha256:%s"}
prepare: {time_column: date, columns: [a, b], target: b, features: M, missing: error, lookback: 24, horizon: 12,
          borders: null, ratios: [0.6, 0.2, 0.2], rows: 600, period: 48}
train: {epochs: 2, batch_size: 32, eval_batch_size: 64}
""" % ("0" * 64)


def test_a_toy_data_kind_prepares_and_trains_with_no_edit_outside_its_module_and_conf_file(pipeline_repo, tmp_path,
                                                                                           monkeypatch):
    monkeypatch.setitem(DATA_SETTINGS, "sine", SINE_SETTINGS)   # its module and settings, registered
    monkeypatch.setitem(data_registry.MODULES, "sine", SINE)
    source, mirror, *_ = pipeline_repo
    repo = copy_pipeline(source, tmp_path / "repo")
    (repo / "conf/task/sine.yaml").write_text(SINE_CONF)      # its conf file
    overrides = [*TINY_OVERRIDES, *mirror_checksums(mirror), "+task@task.sine=sine", "tracking.enabled=false",
                 "export.int8=false"]
    (repo / "params.yaml").write_text(to_yaml(compose(overrides, repo / "conf")), encoding="utf-8")
    monkeypatch.chdir(repo)
    config = load_config()
    assert config.runs["sine-gru"].data == "sine" and config.runs["sine-gru"].head == forecaster_settings.NAME

    assert prepare.main(["sine"]) == 0
    assert json.loads(Path("metrics/data/sine.json").read_text())["columns"] == ["a", "b"]
    assert train.main(["sine", "gru"]) == 0
    metrics = json.loads(Path("metrics/train/sine-gru.json").read_text())
    assert np.isfinite(metrics["test/mse"]) and metrics["epochs"] == 2 and Path("models/sine-gru/model.pt").is_file()
    assert export.main(["sine", "gru"]) == 0 and validate.main(["sine", "gru"]) == 0
    assert json.loads(Path("metrics/onnx/sine-gru.json").read_text())["passed"]


def test_a_task_naming_an_unknown_kind_is_refused_with_the_kinds():
    from pipeline.config import ConfigError
    from pipeline.config import validate as validate_config

    container = compose([*TINY_OVERRIDES, "+task.etth1.head=flat"])
    with pytest.raises(ConfigError, match=r"task\.etth1\.head: no kind 'flat'; the kinds are \['classifier'"):
        validate_config(container)
