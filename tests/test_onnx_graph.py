"""The classifier's ONNX graph: one bidirectional `LSTM`/`GRU` node per layer with `sequence_lens`,
and the same predictions as PyTorch on padded batches (tiny in-process models, no pipeline run)."""

from __future__ import annotations

import functools
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline.nets.classifier import SequenceClassifier

CELLS = ["lstm", "gru", "lstm_peephole"]
POOLINGS = [("last",), ("mean",), ("max",), ("mean", "max"), ("last", "mean", "max")]
VOCAB, PAD, LAYERS, HIDDEN = 40, 0, 2, 8


@functools.cache
def exported(cell: str, pooling: tuple[str, ...]) -> tuple[SequenceClassifier, onnx.ModelProto, ort.InferenceSession]:
    """A tiny 2-layer bidirectional classifier, exported as pipeline/stages/export.py does (TorchScript, opset 17)."""
    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=VOCAB, num_classes=3, cell=cell, embedding_dim=6, hidden_size=HIDDEN,
                               num_layers=LAYERS, bidirectional=True, dropout=0.0, embedding_dropout=0.0,
                               pooling=pooling, pad_id=PAD)
    with torch.no_grad():   # peepholes start at zero, where the cell is a plain LSTM: make them count
        for name, weight in model.named_parameters():
            if "weight_ch" in name:
                weight.normal_()
    model.eval()
    example = torch.randint(1, VOCAB, (2, 16))
    example[1, 10:] = PAD
    buffer = io.BytesIO()
    torch.onnx.export(model, (example,), buffer, input_names=["input_ids"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue())
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    return model, graph, session


def padded_batch(rng: np.random.Generator, batch: int, steps: int) -> np.ndarray:
    """Random ids, every row but the first right-padded to a random length; in batches of 4 or
    more, one row is all padding."""
    ids = rng.integers(1, VOCAB, (batch, steps))
    for row in range(1, batch):
        ids[row, rng.integers(1, steps + 1):] = PAD
    if batch >= 4:
        ids[batch // 2] = PAD
    return ids.astype(np.int64)


def recurrent_nodes(graph: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [node for node in graph.graph.node if node.op_type in ("LSTM", "GRU", "RNN")]


def attribute(node: onnx.NodeProto, name: str):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


@pytest.mark.parametrize("cell", CELLS)
def test_each_bidirectional_layer_exports_as_one_node_fed_with_the_row_lengths(cell):
    _, graph, _ = exported(cell, ("mean", "max"))
    nodes = recurrent_nodes(graph)
    assert [n.op_type for n in nodes] == ["GRU" if cell == "gru" else "LSTM"] * LAYERS
    assert all(attribute(n, "direction") == b"bidirectional" and attribute(n, "hidden_size") == HIDDEN
               for n in nodes)
    producers = {output: node for node in graph.graph.node for output in node.output}
    for node in nodes:
        lengths = producers[node.input[4]]                 # sequence_lens, computed from input_ids
        assert lengths.op_type == "Cast" and attribute(lengths, "to") == onnx.TensorProto.INT32
    if cell == "gru":   # torch's GRU applies the reset gate after the recurrent product
        assert all(attribute(n, "linear_before_reset") == 1 for n in nodes)
    initializers = {i.name: i for i in graph.graph.initializer}
    weights = initializers[nodes[0].input[1]]               # W: [num_directions, gates * H, input]
    assert list(weights.dims) == [2, (3 if cell == "gru" else 4) * HIDDEN, 6]
    if cell == "lstm_peephole":   # P, the 8th input, after two omitted initial states
        assert all(len(n.input) == 8 and n.input[5:7] == ["", ""] and n.input[7] in initializers for n in nodes)
        assert all(list(initializers[n.input[7]].dims) == [2, 3 * HIDDEN] for n in nodes)
    else:
        assert all(len(n.input) == 5 for n in nodes)


@pytest.mark.parametrize("cell", CELLS)
def test_no_gather_moves_activations_only_the_embedding_lookup_and_shape_reads(cell):
    # Before, the backward directions reversed rows within their lengths with Gathers.
    _, graph, _ = exported(cell, ("mean", "max"))
    initializers = {i.name for i in graph.graph.initializer}
    shapes = {node.output[0] for node in graph.graph.node if node.op_type == "Shape"}
    gathers = [n for n in graph.graph.node if n.op_type.startswith("Gather")]
    assert [n.input[0] for n in gathers if n.input[0] not in shapes] == ["embedding.weight"]
    assert "embedding.weight" in initializers
    assert not [n for n in graph.graph.node if n.op_type in ("Loop", "Scan", "ReverseSequence")]


@pytest.mark.parametrize("cell", CELLS)
def test_batch_and_sequence_stay_dynamic(cell):
    _, graph, _ = exported(cell, ("mean", "max"))
    (ids,) = graph.graph.input
    assert [d.dim_param for d in ids.type.tensor_type.shape.dim] == ["batch", "sequence"]


@pytest.mark.parametrize("pooling", POOLINGS, ids="+".join)
@pytest.mark.parametrize("cell", CELLS)
def test_onnxruntime_matches_pytorch_on_padded_batches(cell, pooling):
    model, _, session = exported(cell, pooling)
    rng = np.random.default_rng(1)
    for batch, steps in ((1, 1), (1, 23), (5, 13), (7, 301)):
        ids = padded_batch(rng, batch, steps)
        with torch.no_grad():
            expected = model(torch.from_numpy(ids)).numpy()
        (found,) = session.run(None, {"input_ids": ids})
        assert np.abs(found - expected).max() <= 1e-4, (batch, steps)


@pytest.mark.parametrize("pooling", POOLINGS, ids="+".join)
@pytest.mark.parametrize("cell", CELLS)
def test_adding_padding_never_changes_the_onnx_output(cell, pooling):
    _, _, session = exported(cell, pooling)
    ids = padded_batch(np.random.default_rng(2), 5, 17)
    (plain,) = session.run(None, {"input_ids": ids})
    (padded,) = session.run(None, {"input_ids": np.pad(ids, ((0, 0), (0, 30)), constant_values=PAD)})
    (alone,) = session.run(None, {"input_ids": ids[1:2, :int((ids[1] != PAD).sum())]})
    assert np.abs(padded - plain).max() <= 1e-6
    assert np.abs(alone - plain[1:2]).max() <= 1e-6


def test_parameters_keep_their_names_so_existing_checkpoints_load():
    model = SequenceClassifier(VOCAB, 2, "lstm_peephole", 6, HIDDEN, 1, True, 0.0, 0.0, ["mean"])
    assert [k for k in model.state_dict() if k.startswith("backbone.")] == [
        f"backbone.{direction}_layers.0.{name}_l0" for direction in ("forward", "backward")
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_ch")]
