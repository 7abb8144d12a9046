"""What a kind of model head is to the pipeline (`Kind`), and what the classifier and the
forecaster share (`BatchKind`: one forward pass maps a batch of inputs to a batch of outputs,
unlike the stateful generator). The torch side: pipeline/kinds/__init__.py says how the two
halves of a kind split.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from pipeline.latency import LATENCY_BATCHES, latency_report, onnx_latency
from pipeline.parity import Parity


def predictions(model: nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(outputs, targets) over a whole loader, in its order."""
    model.eval()
    outputs, targets = [], []
    with torch.no_grad():
        for inputs, target in loader:
            outputs.append(model(inputs.to(device)).float().cpu())
            targets.append(target)
    return torch.cat(outputs).numpy(), torch.cat(targets).numpy()


def int8_gate(int8_metric: float, fp32_metric: float, rule, noise: float | None = None) -> dict:
    """The INT8 model's test metric against the fp32 ONNX model's, under `rule` (change:
    absolute | relative, limit, noise_z; export.gates.int8.<head>); the difference is taken both
    ways. `noise`: the standard error of that difference where the head measures it (the
    classifier's paired one); with the rule's noise_z, the limit is at least noise_z of it."""
    change = abs(int8_metric - fp32_metric) / (abs(fp32_metric) if rule.change == "relative" else 1.0)
    record = {"int8_metric": int8_metric, "int8_metric_change": change, "int8_metric_change_limit": rule.limit,
              "int8_gate": rule.change}
    if noise is not None and rule.noise_z is not None:
        record["int8_metric_noise"] = noise
        record["int8_metric_change_limit"] = max(rule.limit, rule.noise_z * noise)
    return record


class Kind:
    """One kind of head, as the stages see it. Subclasses set the class attributes and the
    methods without a default; `spec` is the kind's torch-free half (its `*_spec.py`)."""

    spec: ModuleType
    model_class: type[nn.Module]
    training_only: frozenset[str] = frozenset()   # settings that shape training, not the model
    # Report: the test metrics shown, the naive floor's name, the ONNX columns (header,
    # provider, key, digits), and the speed-up pair (header, first key, second key).
    quality: tuple[str, ...]
    floor: str
    onnx_columns: tuple[tuple[str, str, str, int], ...]
    speedups: tuple[str, str, str]
    # validate's headline: the latency a deployer quotes and its speed-up over PyTorch eager,
    # and the INT8 model's speed-up over the fp32 ONNX model at that latency (the log line).
    key_latency: tuple[str, str]
    key_int8_speedup: str
    batched = False     # the benchmarks' batch sections (training FLOPs, batch latencies) apply

    @property
    def name(self) -> str:
        return self.spec.NAME

    # ---- the model ------------------------------------------------------------------------------

    def data_args(self, settings, meta: dict, names: tuple[str, str]) -> dict:
        """The model's arguments that the prepared data fixes (vocabulary size, channels...);
        `names` (task, model) name the settings in errors."""
        raise NotImplementedError

    def model_args(self, settings, cell: str, meta: dict, names: tuple[str, str]) -> dict:
        """Plain arguments (stored in the checkpoint) that rebuild the model: the kind's
        settings under their own names, plus what the prepared data fixes."""
        return {"head": self.name,
                "args": {"cell": cell, **settings.model_dump(exclude=set(self.training_only)),
                         **self.data_args(settings, meta, names)}}

    def build(self, args: dict) -> nn.Module:
        return self.model_class(**args)

    def init_weights(self, model: nn.Module, settings, task, args: dict, names: tuple[str, str]) -> None:
        """Weights that do not start at random (a classifier's pretrained embeddings)."""

    def check(self, task, meta: dict, names: tuple[str, str]) -> None:
        """Settings that only the prepared data can check, before training starts."""

    # ---- training and its metrics -----------------------------------------------------------------

    def loss(self) -> nn.Module:
        raise NotImplementedError

    def evaluate(self, model, loader, device, task, split: str) -> dict[str, float]:
        """The kind's metrics on one split, keys `split/metric`."""
        return self.metrics(*predictions(model, loader, device), split)

    def metrics(self, outputs: np.ndarray, targets: np.ndarray, split: str) -> dict[str, float]:
        raise NotImplementedError

    def test_metrics(self, model, data, device, task, outputs, targets) -> dict[str, float]:
        """The final test: `outputs` and `targets` are the model's over the test loader."""
        return self.metrics(outputs, targets, "test")

    def naive_floor(self, data) -> dict[str, float]:
        """The sanity floor on test, keys `baseline/metric`."""
        raise NotImplementedError

    def sample(self, model, meta: dict, task, device) -> str | None:
        """Text to log after each epoch and at the end (a generator's); None for the others."""
        return None

    def write_plots(self, paths, outputs, targets, meta: dict, test_dataset, sample: str | None) -> list[Path]:
        """The kind's own plot (paths.head_plot) and figures, beside the shared learning curves."""
        raise NotImplementedError

    def train_work(self, inputs, args: dict, meta: dict) -> tuple[int, int]:
        """(time steps, training FLOPs) of one batch, for the benchmarks' roofline."""
        raise NotImplementedError

    step_unit = "input time steps"

    # ---- export -----------------------------------------------------------------------------------

    def graph_interface(self, args: dict, meta: dict) -> dict:
        """Input and output names, dynamic axes and an export example."""
        raise NotImplementedError

    def export_module(self, model: nn.Module) -> nn.Module:
        """What is exported: the model, or a wrapper that adds outputs a deployer needs."""
        return model

    def deployment_metadata(self, task, settings, cell: str, meta: dict) -> dict[str, str]:
        """metadata_props that a deployer needs to prepare inputs and read outputs."""
        raise NotImplementedError

    # ---- validation ---------------------------------------------------------------------------------

    def latency_input(self, args: dict, meta: dict, batch: int) -> np.ndarray:
        raise NotImplementedError

    def onnx_checks(self, sessions: dict, model, trained, task, loader, device, gates) -> dict:
        """Parity with PyTorch under `gates` (the provider's export.gates: `max_abs_diff` and the
        `parity` record of pipeline/parity.py), the test metric on ONNX (`onnx_metric`), latency."""
        raise NotImplementedError

    def int8_checks(self, sessions: dict, trained, task, loader, fp32: dict, rule) -> dict:
        """The INT8 model: its latency, speed-ups and the test-metric gate (`int8_gate` under `rule`)."""
        raise NotImplementedError

    # ---- the report -----------------------------------------------------------------------------------

    def report_sections(self, task_name: str, task, runs: dict, out_dir: Path) -> tuple[list[str], list[Path]]:
        """Markdown lines and figures that the report adds under the task's table."""
        return [], []


class BatchKind(Kind):
    """A head whose forward pass maps a batch to a batch (classifier, forecaster): parity on a
    few input shapes, the test metric over the test loader, latency at the timed batches."""

    batched = True
    onnx_columns = (("ONNX CPU b1 ms", "cpu", "latency_ms_b1_p50", 2), ("ONNX CPU b64 ms", "cpu", "latency_ms_b64_p50", 1))
    speedups = ("b1 / b64", "speedup_vs_torch_b1", "speedup_vs_torch_b64")
    key_latency = ("latency_ms_b1_p50", "speedup_vs_torch_b1")
    key_int8_speedup = "int8_speedup_vs_fp32_b1"

    def parity_inputs(self, args: dict, meta: dict, seed: int = 0) -> list[np.ndarray]:
        """Shapes unlike the export example: batch 1, odd batches, short and long."""
        raise NotImplementedError

    def torch_outputs(self, model, x: np.ndarray, device: torch.device) -> list[np.ndarray]:
        """PyTorch's outputs in the order of the graph's."""
        with torch.inference_mode():
            return [model(torch.from_numpy(x).to(device)).float().cpu().numpy()]

    def parity(self, session, model, inputs: list[np.ndarray], device: torch.device, tolerance=None) -> Parity:
        """Every output of the graph against PyTorch's, on every input, at `tolerance` (None:
        only the largest difference is kept)."""
        name, outputs = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]
        found = Parity()
        for x in inputs:
            for output, ours, theirs in zip(outputs, session.run(None, {name: x}), self.torch_outputs(model, x, device)):
                found.add(output, ours, theirs, tolerance)
        return found

    def max_abs_diff(self, session, model, inputs: list[np.ndarray], device: torch.device) -> float:
        """The largest |ONNX - PyTorch| over every output and input (the benchmarks' figure)."""
        return self.parity(session, model, inputs, device).max_abs_diff

    def onnx_metric(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        """(sum, count) of the task metric over one test batch of the graph's first output."""
        raise NotImplementedError

    def onnx_test_outputs(self, session, loader) -> list[tuple[np.ndarray, np.ndarray]]:
        """(the graph's first output, targets) of each test batch."""
        name = session.get_inputs()[0].name
        return [(session.run(None, {name: inputs.numpy()})[0], target.numpy()) for inputs, target in loader]

    def test_metric(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        """The task metric over the test batches (summed batch by batch)."""
        total = count = 0.0
        for outputs, targets in batches:
            part, n = self.onnx_metric(outputs, targets)
            total, count = total + part, count + n
        return total / count

    def paired_noise(self, fp32_batches: list, int8_batches: list) -> float | None:
        """The standard error of the test metric's difference between two models scored on the
        same test set, where the head knows it (the classifier); None: the limit alone gates."""
        return None

    def onnx_checks(self, sessions, model, trained, task, loader, device, gates) -> dict:
        """The fp32 record; `_test_outputs` (the graph's test outputs, for the INT8 gate) is
        dropped before the record is written."""
        args, meta, bulk = trained.model_args["args"], trained.meta, sessions["throughput"]
        parity = self.parity(bulk, model, self.parity_inputs(args, meta), device, gates.outputs)
        batches = self.onnx_test_outputs(bulk, loader)
        return {"max_abs_diff": parity.max_abs_diff, **parity.record("parity", gates.outputs),
                "onnx_metric": self.test_metric(batches), "_test_outputs": batches,
                **latency_report(sessions, model, self, args, meta, device)}

    def int8_checks(self, sessions, trained, task, loader, fp32, rule) -> dict:
        """Latency (as fp32's), speed-ups over PyTorch eager (timed once, for fp32) and over fp32
        ONNX, and the test-metric gate."""
        ours = onnx_latency(sessions, self, trained.model_args["args"], trained.meta)
        speedups = {}
        for b in LATENCY_BATCHES:
            ms = ours[f"latency_ms_b{b}_p50"]
            speedups.update({f"speedup_vs_torch_b{b}": fp32[f"torch_latency_ms_b{b}_p50"] / ms,
                             f"speedup_vs_fp32_b{b}": fp32[f"latency_ms_b{b}_p50"] / ms})
        batches = self.onnx_test_outputs(sessions["throughput"], loader)
        noise = self.paired_noise(fp32["_test_outputs"], batches)
        return ({f"int8_{k}": v for k, v in {**ours, **speedups}.items()}
                | int8_gate(self.test_metric(batches), fp32["onnx_metric"], rule, noise))
