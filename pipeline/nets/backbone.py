"""The recurrent backbone (LSTM, GRU or peephole LSTM) that every kind's network builds on
(pipeline/nets/<kind>.py), and its ONNX form.

No packed sequences anywhere (they do not export to ONNX). Padding is handled by masking:
the backward direction of a bidirectional layer runs over each row reversed *within its
valid length*, so right-padding never reaches a valid position, and pooling looks at valid
positions only. Adding padding therefore never changes a prediction.

In ONNX, each bidirectional layer of the classifier is one `LSTM` or `GRU` node with
direction="bidirectional" and `sequence_lens` (the lengths, computed in the graph): ONNX
reverses each row within its own length, which is the rule above. onnxruntime writes zeros
at padded positions of both directions where torch's forward direction computes values
there; nothing valid reads them (pooling is masked, and a deeper layer's forward direction
only looks back), so the outputs agree.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pipeline.nets.peephole import ONNX_GATES, ONNX_PEEPHOLES, PeepholeLSTM

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "lstm_peephole": PeepholeLSTM}
ONNX_GRU_GATES = (1, 0, 2)   # torch's GRU gate order (r, z, n) -> ONNX's (z, r, h)
# The recurrent state a cell carries between calls, in the order of the ONNX inputs/outputs.
STATES = {"lstm": ("h", "c"), "gru": ("h",), "lstm_peephole": ("h", "c")}


def reverse_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of x [B, T, ...] within its first `lengths[b]` steps; padding stays put."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)        # [1, T]
    last = (lengths - 1).unsqueeze(1)                                      # [B, 1]
    index = torch.where(steps <= last, last - steps, steps)                # [B, T]
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)


def bidirectional_layer(forward_rnn: nn.Module, backward_rnn: nn.Module, x: torch.Tensor,
                        lengths: torch.Tensor | None) -> torch.Tensor:
    """Both directions of one layer, concatenated [B, T, 2H]; the backward one reads each row
    reversed within its length."""
    out, _ = forward_rnn(x)
    if lengths is None:
        back, _ = backward_rnn(torch.flip(x, [1]))
        back = torch.flip(back, [1])
    else:
        back, _ = backward_rnn(reverse_valid(x, lengths))
        back = reverse_valid(back, lengths)
    return torch.cat([out, back], dim=-1)


class OnnxBidirectionalLayer(torch.autograd.Function):
    """One bidirectional layer as ONNX sees it: a single `LSTM` or `GRU` node with
    direction="bidirectional" and `sequence_lens`, under which the backward direction reads
    each row reversed within its own length, as `reverse_valid` does. Used only while
    exporting. Its forward returns the training computation's output, so traced values
    stay true; the exporter then drops that computation, which nothing in the graph reads."""

    @staticmethod
    def forward(ctx, x, w, r, b, p, sequence_lens, op: str, hidden_size: int, training_output):
        return training_output.clone()

    @staticmethod
    def symbolic(g, x, w, r, b, p, sequence_lens, op: str, hidden_size: int, training_output):
        from torch.onnx.symbolic_opset9 import unused  # an omitted optional input

        inputs = [g.op("Transpose", x, perm_i=[1, 0, 2]), w, r, b, sequence_lens]
        if p is not None:   # no initial states (zeros), then the peepholes
            inputs += [unused(g), unused(g), p]
        gru = {"linear_before_reset_i": 1} if op == "GRU" else {}   # torch's GRU applies r after R h
        y = g.op(op, *inputs, hidden_size_i=hidden_size, direction_s="bidirectional", outputs=1, **gru)
        # Y [T, 2, B, H] -> [B, T, 2, H] -> [B, T, 2H]: forward then backward, as torch.cat makes it
        y = g.op("Transpose", y, perm_i=[2, 0, 1, 3])
        return g.op("Reshape", y, g.op("Constant", value_t=torch.tensor([0, 0, -1])))


def onnx_weights(rnn: nn.Module, gates: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """One direction's W, R and B (input and recurrent biases concatenated), gates in ONNX's order."""
    def reorder(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.chunk(len(gates))[k] for k in gates])

    w, r, b_ih, b_hh = (getattr(rnn, f"{name}_l0") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    weights = (reorder(w), reorder(r), torch.cat([reorder(b_ih), reorder(b_hh)]))
    if isinstance(rnn, PeepholeLSTM):
        peephole = rnn.weight_ch_l0.chunk(3)
        weights += (torch.cat([peephole[k] for k in ONNX_PEEPHOLES]),)
    return weights


def export_bidirectional_layer(forward_rnn: nn.Module, backward_rnn: nn.Module, x: torch.Tensor,
                               lengths: torch.Tensor) -> torch.Tensor:
    """The layer as one ONNX node: both directions' weights stacked into ONNX's
    [num_directions, ...] layout (constant-folded into initializers by the exporter)."""
    op, gates = ("GRU", ONNX_GRU_GATES) if isinstance(forward_rnn, nn.GRU) else ("LSTM", ONNX_GATES)
    w, r, b, *p = (torch.stack(pair) for pair in zip(onnx_weights(forward_rnn, gates),
                                                    onnx_weights(backward_rnn, gates)))
    return OnnxBidirectionalLayer.apply(
        x, w, r, b, p[0] if p else None, lengths.to(torch.int32), op, forward_rnn.hidden_size,
        bidirectional_layer(forward_rnn, backward_rnn, x, lengths))


class RecurrentBackbone(nn.Module):
    """A stack of LSTM, GRU or peephole-LSTM layers, optionally bidirectional, over [B, T, input_size]."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, found {cell!r}")
        rnn = CELLS[cell]
        directions = 2 if bidirectional else 1
        sizes = [input_size] + [hidden_size * directions] * (num_layers - 1)
        self.forward_layers = nn.ModuleList(rnn(size, hidden_size, batch_first=True) for size in sizes)
        self.backward_layers = nn.ModuleList(
            rnn(size, hidden_size, batch_first=True) for size in sizes) if bidirectional else None
        self.dropout = nn.Dropout(dropout)
        self.output_size = hidden_size * directions

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs [B, T, output_size]; with `lengths`, rows are right-padded beyond them."""
        for depth, forward_rnn in enumerate(self.forward_layers):
            if depth:
                x = self.dropout(x)
            if self.backward_layers is None:
                x, _ = forward_rnn(x)
            elif lengths is not None and torch.onnx.is_in_onnx_export():
                x = export_bidirectional_layer(forward_rnn, self.backward_layers[depth], x, lengths)
            else:
                x = bidirectional_layer(forward_rnn, self.backward_layers[depth], x, lengths)
        return x

    def run(self, x: torch.Tensor, states: list | None = None, unrolled: bool = False) -> tuple[torch.Tensor, list]:
        """One direction only: outputs [B, T, H] and each layer's last state, from `states` (each
        layer's initial state, as its cell takes it: (h, c) for the LSTMs, h for the GRU; zeros
        when None). `unrolled` runs each step in plain tensor operations (`unrolled_layer`)."""
        finals = []
        for depth, forward_rnn in enumerate(self.forward_layers):
            if depth:
                x = self.dropout(x)
            state = None if states is None else states[depth]
            if unrolled:
                x, final = unrolled_layer(forward_rnn, x, state)
            else:
                x, final = forward_rnn(x) if state is None else forward_rnn(x, state)
            finals.append(final)
        return x, finals


def layer_weights(rnn: nn.Module) -> tuple[torch.Tensor, ...]:
    """The one-layer cell's W_ih, W_hh, b_ih, b_hh in torch's gate order."""
    return tuple(getattr(rnn, f"{name}_l0") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def cell_step(rnn: nn.Module, from_input: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """One step of the one-layer cell `rnn` (nn.LSTM, nn.GRU or PeepholeLSTM, its own equations)
    in plain tensor operations: the input's share of the gates (x W_ih^T + b_ih) and the state,
    (h,) or (h, c), broadcastable against each other -> the new state."""
    _, w_hh, _, b_hh = layer_weights(rnn)
    from_state = nn.functional.linear(state[0], w_hh, b_hh)
    if isinstance(rnn, nn.GRU):   # gates r, z, n; r scales the state's share of n
        (x_r, x_z, x_n), (s_r, s_z, s_n) = from_input.chunk(3, -1), from_state.chunk(3, -1)
        r, z = torch.sigmoid(x_r + s_r), torch.sigmoid(x_z + s_z)
        n = torch.tanh(x_n + r * s_n)
        return ((1 - z) * n + z * state[0],)
    i, f, g, o = (from_input + from_state).chunk(4, -1)
    c = state[1]
    if isinstance(rnn, PeepholeLSTM):   # pipeline/nets/peephole.py's equations
        p_i, p_f, p_o = rnn.weight_ch_l0.chunk(3)
        i, f = i + p_i * c, f + p_f * c
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    if isinstance(rnn, PeepholeLSTM):
        o = o + p_o * c
    return torch.sigmoid(o) * torch.tanh(c), c


def unrolled_layer(rnn: nn.Module, x: torch.Tensor, state) -> tuple[torch.Tensor, object]:
    """The layer over x [B, T, I] as T explicit steps (what an ONNX graph of MatMuls computes
    for a short recurrence, its T fixed): outputs [B, T, H] and the last state, as the cell
    returns them ((h, c) or h, each [1, B, H]); `state` None is zeros."""
    w_ih, _, b_ih, _ = layer_weights(rnn)
    if state is None:
        zeros = x.new_zeros(x.shape[0], rnn.hidden_size)
        state = (zeros,) if isinstance(rnn, nn.GRU) else (zeros, zeros)
    else:
        state = tuple(s[0] for s in state) if isinstance(state, tuple) else (state[0],)
    from_input = nn.functional.linear(x, w_ih, b_ih)   # every step's input share in one product
    outputs = []
    for from_input_t in from_input.unbind(1):
        state = cell_step(rnn, from_input_t, state)
        outputs.append(state[0])
    final = tuple(s.unsqueeze(0) for s in state)
    return torch.stack(outputs, 1), final[0] if isinstance(rnn, nn.GRU) else final


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
