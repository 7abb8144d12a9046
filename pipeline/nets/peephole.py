"""The LSTM of the articles' equations: an LSTM layer stack with diagonal peephole connections.

    i_t = σ(W_xi x_t + W_hi h_{t-1} + p_i ⊙ c_{t-1} + b_i)
    f_t = σ(W_xf x_t + W_hf h_{t-1} + p_f ⊙ c_{t-1} + b_f)
    g_t = tanh(W_xg x_t + W_hg h_{t-1} + b_g)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    o_t = σ(W_xo x_t + W_ho h_{t-1} + p_o ⊙ c_t + b_o)
    h_t = o_t ⊙ tanh(c_t)

The output gate sees the *new* cell state c_t, as in Gers & Schmidhuber (2002) and as ONNX's
`LSTM` operator defines its `P` input; the article writes c_{t-1} there. Following ONNX means
that each layer exports as one fused `LSTM` node which onnxruntime runs in its own kernel.

`PeepholeLSTM` takes the arguments of `torch.nn.LSTM` that this project uses and keeps its
parameter names and gate order (i, f, g, o), adding `weight_ch_l<k>` = [p_i, p_f, p_o]. The
peepholes start at zero, where the layer computes exactly what `nn.LSTM` computes.

Speed: the input projection of every step is one matrix product before the loop; the loop
itself (one [B, H] x [H, 4H] product and the gate arithmetic per step) is TorchScript, so
the Python interpreter is not paid per step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# torch's gate order (i, f, g, o) -> ONNX's (i, o, f, c); peepholes (i, f, o) -> ONNX's (i, o, f)
ONNX_GATES = (0, 3, 1, 2)
TORCH_GATES = (0, 2, 3, 1)   # ONNX's order back to torch's
ONNX_PEEPHOLES = (0, 2, 1)


def scan(gates_x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weight_hh: torch.Tensor,
                  peephole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gates_x [B, T, 4H] (input projection plus both biases), h and c [B, H] ->
    outputs [B, T, H], and the last h and c."""
    p_i, p_f, p_o = peephole.chunk(3)
    weight_hh_t = weight_hh.t()
    outputs = []
    # unbind, not gates_x[:, t]: the backward of one indexing per step would add a zero-filled
    # [B, T, 4H] gradient per step; unbind's backward is one stack
    for gates_t in gates_x.unbind(1):
        gates = gates_t + torch.mm(h, weight_hh_t)
        i, f, g, o = gates.chunk(4, 1)
        i = torch.sigmoid(i + p_i * c)
        f = torch.sigmoid(f + p_f * c)
        c = f * c + i * torch.tanh(g)
        h = torch.sigmoid(o + p_o * c) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, 1), h, c


peephole_scan = torch.jit.script(scan)


class OnnxPeepholeLayer(torch.autograd.Function):
    """One layer as ONNX sees it: a single `LSTM` node with the peephole input `P`, its
    weights in ONNX's layout. Used only while exporting; its forward is the training scan."""

    @staticmethod
    def forward(ctx, x, h0, c0, w, r, b, p, sequence_lens, hidden_size: int):
        torch_order = [w[0].chunk(4)[k] for k in TORCH_GATES], [r[0].chunk(4)[k] for k in TORCH_GATES]
        bias = b[0, :4 * hidden_size] + b[0, 4 * hidden_size:]
        bias = torch.cat([bias.chunk(4)[k] for k in TORCH_GATES])
        peephole = torch.cat([p[0].chunk(3)[k] for k in ONNX_PEEPHOLES])   # the order is its own inverse
        # plain Python: the exporter traces this forward, and a TorchScript call inside it breaks that
        out, h, c = scan(torch.matmul(x, torch.cat(torch_order[0]).t()) + bias, h0[0], c0[0],
                         torch.cat(torch_order[1]), peephole)
        return out, h.unsqueeze(0), c.unsqueeze(0)

    @staticmethod
    def symbolic(g, x, h0, c0, w, r, b, p, sequence_lens, hidden_size: int):
        time_major = g.op("Transpose", x, perm_i=[1, 0, 2])
        y, y_h, y_c = g.op("LSTM", time_major, w, r, b, sequence_lens, h0, c0, p,
                           hidden_size_i=hidden_size, direction_s="forward", outputs=3)
        y = g.op("Squeeze", y, g.op("Constant", value_t=torch.tensor([1])))   # [T, 1, B, H] -> [T, B, H]
        return g.op("Transpose", y, perm_i=[1, 0, 2]), y_h, y_c


class PeepholeLSTM(nn.Module):
    """A stack of peephole LSTM layers over [B, T, input_size] (batch first, one direction)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if not batch_first:
            raise ValueError("PeepholeLSTM is batch first only")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout = nn.Dropout(dropout)
        for layer in range(num_layers):
            size = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, size)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"weight_ch_l{layer}", nn.Parameter(torch.empty(3 * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation (uniform ±1/√H), and zero peepholes."""
        bound = 1 / math.sqrt(self.hidden_size)
        for name, weight in self.named_parameters():
            if name.startswith("weight_ch"):
                nn.init.zeros_(weight)
            else:
                nn.init.uniform_(weight, -bound, bound)

    def layer(self, k: int) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"{name}_l{k}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                                                 "weight_ch"))

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x [B, T, input_size] -> (outputs [B, T, H], (h, c) each [num_layers, B, H])."""
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
            state = (zeros, zeros)
        h_out, c_out = [], []
        for k in range(self.num_layers):
            if k:
                x = self.dropout(x)
            x, h, c = self.run_layer(k, x, state[0][k], state[1][k])
            h_out.append(h)
            c_out.append(c)
        return x, (torch.stack(h_out), torch.stack(c_out))

    def run_layer(self, k: int, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        weight_ih, weight_hh, bias_ih, bias_hh, peephole = self.layer(k)
        if torch.onnx.is_in_onnx_export():
            return self.export_layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, peephole, self.hidden_size)
        gates_x = torch.matmul(x, weight_ih.t()) + (bias_ih + bias_hh)
        return peephole_scan(gates_x, h, c, weight_hh, peephole)

    @staticmethod
    def export_layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, peephole, hidden_size: int):
        """The layer's weights in ONNX's layout (gates i, o, f, c; one direction), then one node."""
        def onnx_order(w, order, parts):
            return torch.cat([w.chunk(parts)[k] for k in order]).unsqueeze(0)

        # every row runs all T steps (masking is the caller's, as for nn.LSTM); a traced sum
        # keeps batch and time dynamic in the graph
        sequence_lens = torch.ones_like(x[:, :, 0], dtype=torch.int32).sum(1, dtype=torch.int32)
        bias = torch.cat([onnx_order(bias_ih, ONNX_GATES, 4), onnx_order(bias_hh, ONNX_GATES, 4)], 1)
        out, h_n, c_n = OnnxPeepholeLayer.apply(x, h.unsqueeze(0), c.unsqueeze(0),
                                                 onnx_order(weight_ih, ONNX_GATES, 4),
                                                 onnx_order(weight_hh, ONNX_GATES, 4), bias,
                                                 onnx_order(peephole, ONNX_PEEPHOLES, 3), sequence_lens,
                                                 hidden_size)
        return out, h_n[0], c_n[0]
