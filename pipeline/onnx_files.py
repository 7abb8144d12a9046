"""ONNX files on disk: a model exported, stamped and checked, and its INT8 twin, for the export
stage and the benchmarks (which time the same export).

- onnx.checker (full check) and strict shape inference must pass.
- INT8: onnxruntime's dynamic quantisation writes model.int8.onnx beside the fp32 model, with
  the same metadata_props.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from pipeline.files import atomic_path
from pipeline.layout import int8_model


def export_onnx(module: nn.Module, interface: dict, path: Path, opset: int, dynamo: bool,
                metadata: dict[str, str]) -> float:
    """Export `module` (a kind's `export_module`) through `interface` (its `graph_interface`),
    stamp the metadata, check; returns the exporter's seconds."""
    import onnx

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
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnx

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


