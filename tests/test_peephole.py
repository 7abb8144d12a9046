"""The peephole LSTM: nn.LSTM when its peepholes are zero, a cell of its own when they are not,
and one ONNX `LSTM` node with the peephole input `P` per layer."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline.nets.classifier import SequenceClassifier
from pipeline.nets.generator import CharGenerator
from pipeline.nets.peephole import PeepholeLSTM


def twins(layers: int = 2) -> tuple[torch.nn.LSTM, PeepholeLSTM]:
    torch.manual_seed(0)
    reference = torch.nn.LSTM(5, 7, layers, batch_first=True)
    peephole = PeepholeLSTM(5, 7, layers)
    missing = peephole.load_state_dict(reference.state_dict(), strict=False).missing_keys
    assert missing == [f"weight_ch_l{k}" for k in range(layers)]  # the only parameters nn.LSTM lacks
    return reference, peephole


def random_peepholes(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "weight_ch" in name:
                weight.normal_()


def test_with_zero_peepholes_the_cell_equals_nn_lstm_on_the_same_weights():
    reference, peephole = twins()
    x, state = torch.randn(3, 11, 5), (torch.randn(2, 3, 7), torch.randn(2, 3, 7))
    expected, (h, c) = reference(x, state)
    found, (h_found, c_found) = peephole(x, state)
    for a, b in ((expected, found), (h, h_found), (c, c_found)):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_peepholes_start_at_zero_change_the_output_when_set_and_are_trained():
    reference, peephole = twins(layers=1)
    assert not peephole.weight_ch_l0.any()
    x = torch.randn(4, 9, 5)
    random_peepholes(peephole)
    assert (peephole(x)[0] - reference(x)[0]).abs().max() > 1e-2
    peephole(x)[0].sum().backward()
    assert peephole.weight_ch_l0.grad.abs().sum() > 0


def test_the_output_gate_peeks_at_the_new_cell_state():
    """One step from c_{t-1} = 0: only the output gate (which sees c_t) can feel p_o."""
    _, peephole = twins(layers=1)
    x = torch.randn(2, 1, 5)
    before = peephole(x)[0]
    with torch.no_grad():
        peephole.weight_ch_l0[:14] = 5.0            # p_i, p_f: multiply c_{t-1} = 0
    assert torch.equal(peephole(x)[0], before)
    with torch.no_grad():
        peephole.weight_ch_l0[14:] = 5.0            # p_o: multiplies c_t
    assert not torch.equal(peephole(x)[0], before)


def export(module: torch.nn.Module, example: tuple, names: list[str], outputs: list[str], axes: dict) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(module, example, buffer, input_names=names, output_names=outputs, dynamic_axes=axes,
                      opset_version=17, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def test_a_bidirectional_classifier_exports_one_bidirectional_lstm_node_with_p_per_layer_and_keeps_parity_on_padding():
    torch.manual_seed(1)
    model = SequenceClassifier(vocab_size=30, num_classes=2, cell="lstm_peephole", embedding_dim=6, hidden_size=8,
                               num_layers=2, bidirectional=True, dropout=0.0, embedding_dropout=0.0,
                               pooling=["mean", "max"], pad_id=0)
    random_peepholes(model)
    model.eval()
    ids = torch.randint(1, 30, (5, 13))
    ids[1, 9:], ids[3, 2:] = 0, 0                          # right padding
    graph = export(model, (ids,), ["input_ids"], ["logits"], {"input_ids": {0: "b", 1: "t"}, "logits": {0: "b"}})
    lstm_nodes = [n for n in graph.graph.node if n.op_type == "LSTM"]
    assert len(lstm_nodes) == 2                            # 2 layers, both directions in one node each
    assert all(len(n.input) == 8 and n.input[7] for n in lstm_nodes)   # P, the 8th input, is there
    assert not [n for n in graph.graph.node if n.op_type in ("Loop", "Scan")]
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch, steps in ((1, 1), (5, 13), (3, 40)):
        ids = torch.randint(1, 30, (batch, steps))
        ids[0, steps // 2 + 1:] = 0
        with torch.no_grad():
            expected = model(ids).numpy()
        found = session.run(None, {"input_ids": ids.numpy()})[0]
        assert np.abs(found - expected).max() <= 1e-4


def test_a_peephole_generator_carries_its_state_through_onnx():
    torch.manual_seed(2)
    model = CharGenerator(vocab_size=11, cell="lstm_peephole", embedding_dim=4, hidden_size=8, num_layers=2,
                          dropout=0.0, tie_weights=False)
    random_peepholes(model)
    model.eval()
    assert model.state_names == ("h", "c")

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, ids, h, c):
            logits, (h, c) = self.model.step(ids, (h, c))
            return logits, h, c

    state_axes = {"h": {1: "b"}, "c": {1: "b"}, "h_out": {1: "b"}, "c_out": {1: "b"}}
    graph = export(Step(), (torch.randint(0, 11, (2, 5)), *model.zero_state(2)), ["ids", "h", "c"],
                   ["logits", "h_out", "c_out"], {"ids": {0: "b", 1: "t"}, "logits": {0: "b", 1: "t"}, **state_axes})
    assert [n.op_type for n in graph.graph.node].count("LSTM") == 2
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch, steps, scale in ((1, 1, 0.0), (3, 17, 0.5), (4, 64, 0.0)):
        ids = torch.randint(0, 11, (batch, steps))
        state = tuple(scale * torch.randn(2, batch, 8) for _ in range(2))
        with torch.no_grad():
            logits, (h, c) = model.step(ids, state)
        found = session.run(None, {"ids": ids.numpy(), "h": state[0].numpy(), "c": state[1].numpy()})
        for a, b in zip((logits, h, c), found):
            assert np.abs(b - a.numpy()).max() <= 1e-4


def test_the_layer_refuses_time_major_input_which_it_does_not_implement():
    with pytest.raises(ValueError, match="batch first"):
        PeepholeLSTM(3, 4, batch_first=False)
