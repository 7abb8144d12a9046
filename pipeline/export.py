"""Stage `export@<task>-<model>`: the best checkpoint as a self-describing ONNX model.

    python -m pipeline.export <task> <model>

- Named inputs and outputs, dynamic batch and time axes, an explicit opset, and the
  exporter chosen in config (`export.dynamo`; the TorchScript exporter by default: it
  takes well under a second here, where the dynamo exporter took over a minute).
- metadata_props carry what a deployer needs: task, model, labels, the tokenizer (inline,
  with its sha256), padding id and maximum length, or the normalisation statistics,
  columns, lookback and horizon, or a generator's vocabulary and state layout; plus the git
  commit and the test metrics.
- A generator's graph is stateful: `input_ids [batch, time]` and the recurrent state in
  (`h`, and `c` for an LSTM, each [num_layers, batch, hidden_size]), `logits [batch, time,
  vocab]` and the new state out (`h_out`, `c_out`). Batch and time are dynamic, so one
  graph reads a prompt in one call and then decodes one character per call.
- Recurrent layers are onnxruntime's fused `LSTM`/`GRU` nodes (the peephole LSTM's carry
  the `P` input), one per layer. A bidirectional classifier layer is one node with
  direction="bidirectional" and `sequence_lens` (int32, counted from `input_ids` in the
  graph), which reverses each row within its own length as pipeline/models.py masks it;
  the forecaster and generator layers are one direction each.
- onnx.checker (full check) and strict shape inference must pass.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import torch
from torch import nn

from pipeline.checkpoints import load_trained
from pipeline.config import Config, ConfigError, load_task, stage_args
from pipeline.files import atomic_path, file_digest, write_json_atomic
from pipeline.layout import METADATA_PREFIX, int8_model
from pipeline.models import STATES
from pipeline.tracking import git_tags

log = logging.getLogger(__name__)


class WithProbabilities(nn.Module):
    """Classifier logits plus their softmax, so deployers need no post-processing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor):
        logits = self.model(input_ids)
        return logits, torch.softmax(logits, dim=-1)


class StatefulGenerator(nn.Module):
    """(input_ids, *state) -> (logits, *new state): the generator's step as a graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *state: torch.Tensor):
        logits, new = self.model.step(input_ids, state)
        return (logits, *new)


WRAPPERS = {"classifier": WithProbabilities, "generator": StatefulGenerator}  # the forecaster exports as is


def graph_interface(head: str, args: dict, meta: dict) -> dict:
    """Input/output names, dynamic axes and an export example for each head."""
    if head == "generator":
        names = list(STATES[args["cell"]])
        ids = torch.randint(0, args["vocab_size"], (2, 16))
        state = tuple(torch.randn(args["num_layers"], 2, args["hidden_size"]) for _ in names)
        state_axes = {name: {1: "batch"} for name in names} | {f"{name}_out": {1: "batch"} for name in names}
        return {"inputs": ["input_ids", *names], "outputs": ["logits", *(f"{n}_out" for n in names)],
                "example": (ids, *state),
                "dynamic_axes": {"input_ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"},
                                 **state_axes}}
    if head == "classifier":
        example = torch.randint(2, args["vocab_size"], (2, 16))
        example[1, 10:] = meta["pad_id"]
        return {"inputs": ["input_ids"], "outputs": ["logits", "probabilities"], "example": (example,),
                "dynamic_axes": {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"},
                                 "probabilities": {0: "batch"}}}
    example = torch.randn(2, meta["lookback"], args["n_channels"])
    return {"inputs": ["past"], "outputs": ["forecast"], "example": (example,),
            "dynamic_axes": {"past": {0: "batch", 1: "time"}, "forecast": {0: "batch"}}}


def deployment_metadata(config: Config, task_name: str, model_name: str, meta: dict,
                        test_metrics: dict) -> dict[str, str]:
    task = config.task[task_name]
    props = {"task": task_name, "model": model_name, "head": task.head, "cell": config.model[model_name].cell,
             "git_commit": git_tags()["git.commit"], "test_metrics": json.dumps(test_metrics),
             "session_settings": json.dumps(config.export.session.model_dump()),  # predict's SessionOptions
             "serve_limits": json.dumps(config.serve.limits.model_dump())}  # checked by predict and serving
    if task.head == "generator":
        args = config.model[model_name].generator
        names = list(STATES[config.model[model_name].cell])
        props.update(vocab=json.dumps(meta["vocab"]), num_layers=str(args.num_layers),
                     hidden_size=str(args.hidden_size), state_inputs=json.dumps(names),
                     state_outputs=json.dumps([f"{n}_out" for n in names]),
                     state_shape="[num_layers, batch, hidden_size]", sample_prompt=task.train.sample_prompt)
    elif task.head == "classifier":
        tokenizer = Path(task.paths.prepared) / meta["tokenizer"]
        props.update(labels=json.dumps(meta["labels"]), tokenizer_file=str(tokenizer),
                     tokenizer_sha256=file_digest(tokenizer), tokenizer_json=tokenizer.read_text(encoding="utf-8"),
                     pad_id=str(meta["pad_id"]), max_len=str(meta["max_len"]),
                     truncation_side=meta["truncation_side"])
    else:
        props.update(columns=json.dumps(meta["columns"]), targets=json.dumps(meta["targets"]),
                     mean=json.dumps(meta["mean"]), std=json.dumps(meta["std"]),
                     lookback=str(meta["lookback"]), horizon=str(meta["horizon"]),
                     time_column=task.prepare.time_column)
    return {METADATA_PREFIX + key: value for key, value in props.items()}


def export_onnx(model: nn.Module, head: str, interface: dict, path: Path, opset: int, dynamo: bool,
                metadata: dict[str, str]) -> float:
    """Export, stamp the metadata, check; returns the exporter's seconds."""
    import onnx

    module = WRAPPERS[head](model) if head in WRAPPERS else model
    start = time.perf_counter()
    with atomic_path(path, ".onnx") as tmp:
        torch.onnx.export(module, interface["example"], str(tmp), input_names=interface["inputs"],
                          output_names=interface["outputs"], dynamic_axes=interface["dynamic_axes"],
                          opset_version=opset, dynamo=dynamo)
        seconds = time.perf_counter() - start
        graph = onnx.load(str(tmp))
        onnx.helper.set_model_props(graph, metadata)
        onnx.checker.check_model(graph, full_check=True)
        onnx.shape_inference.infer_shapes(graph, check_type=True, strict_mode=True)
        onnx.save(graph, str(tmp))
    return seconds


# The nodes that hold INT8 weights after onnxruntime's dynamic quantisation. An ONNX LSTM
# becomes DynamicQuantizeLSTM (peephole P input kept); onnxruntime has no quantised GRU kernel,
# so a GRU node stays fp32 and only the MatMul/Gemm/Gather around it are quantised.
QUANTISED_OPS = ("DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeMatMul", "DequantizeLinear")
RECURRENT_OPS = ("LSTM", "GRU", "RNN")


def quantise_int8(fp32_path: Path, int8_path: Path) -> dict:
    """onnxruntime's dynamic quantisation (INT8 weights, activations quantised at run time),
    written beside the fp32 model with its metadata_props; returns what it did, by node."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    start = time.perf_counter()
    with atomic_path(int8_path, ".onnx") as tmp:
        quantize_dynamic(fp32_path, tmp, weight_type=QuantType.QInt8)
        graph = onnx.load(str(tmp))
        kept = {p.key for p in graph.metadata_props}
        lost = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props
                if p.key not in kept}
        if lost:  # onnxruntime 1.31 keeps them all; a release that drops them must not ship a bare model
            onnx.helper.set_model_props(graph, {**{p.key: p.value for p in graph.metadata_props}, **lost})
            onnx.save(graph, str(tmp))
    ops = [node.op_type for node in graph.graph.node]
    return {"seconds": round(time.perf_counter() - start, 3), "bytes": int8_path.stat().st_size,
            "quantised_nodes": {op: ops.count(op) for op in QUANTISED_OPS if op in ops},
            "fp32_recurrent_nodes": {op: ops.count(op) for op in RECURRENT_OPS if op in ops}}


def int8_beside(onnx_model: Path, enabled: bool) -> dict | None:
    """With export.int8, model.int8.onnx beside `onnx_model` (what quantise_int8 did); without,
    None, and no INT8 file left over from an earlier export for `predict --int8` to pick up."""
    if enabled:
        return quantise_int8(onnx_model, int8_model(onnx_model))
    int8_model(onnx_model).unlink(missing_ok=True)
    return None


def main(argv: list[str] | None = None) -> int:
    task_name, model_name = stage_args("pipeline.export", ["task", "model"], argv)
    name = f"{task_name}-{model_name}"
    try:
        config, _ = load_task(task_name)
        trained = load_trained(config, task_name, model_name)
        interface = graph_interface(trained.head, trained.spec["args"], trained.meta)
        metadata = deployment_metadata(config, task_name, model_name, trained.meta, trained.test_metrics)
        seconds = export_onnx(trained.model, trained.head, interface, trained.paths.onnx_model,
                              config.export.opset, config.export.dynamo, metadata)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"export@{name}: {exc}", file=sys.stderr)
        return 1
    onnx_model = trained.paths.onnx_model
    int8 = int8_beside(onnx_model, config.export.int8)
    write_json_atomic(trained.paths.export_info, {
        "export/seconds": round(seconds, 3), "opset": config.export.opset, "dynamo": config.export.dynamo,
        "inputs": interface["inputs"], "outputs": interface["outputs"], "bytes": onnx_model.stat().st_size,
        "int8": int8})
    if int8:
        log.info("export@%s: INT8 %s, %d bytes, quantised nodes %s, fp32 recurrent nodes %s", name,
                 int8_model(onnx_model), int8["bytes"], int8["quantised_nodes"], int8["fp32_recurrent_nodes"] or "none")
    log.info("export@%s: %s in %.2fs (opset %d, %s exporter)", name, onnx_model, seconds,
             config.export.opset, "dynamo" if config.export.dynamo else "TorchScript")
    return 0


if __name__ == "__main__":
    sys.exit(main())
