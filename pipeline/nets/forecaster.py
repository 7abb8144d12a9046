"""The forecaster's network: a window of past values to the next H steps, all at once
(direct multi-horizon), with RevIN, SegRNN-style segments and PMF decoding as options."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.nets.backbone import RecurrentBackbone, cell_step, layer_weights

DECODERS = ("linear", "pmf")   # the forecaster's read-out (Forecaster)


def step_per_query(rnn: nn.Module, queries: torch.Tensor, state: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One step of the one-layer cell from each row's state, once per query: state tensors
    [*rows, H], queries [..., Q, I] broadcastable to [*rows, Q, I] -> outputs [*rows, Q, H].
    The state's share of the gates is computed once per row and the queries' once per query,
    then broadcast: what a step over every (row, query) pair computes, without repeating the
    state Q times (PMF decodes every output segment from one state)."""
    w_ih, _, b_ih, _ = layer_weights(rnn)
    return cell_step(rnn, nn.functional.linear(queries, w_ih, b_ih), tuple(s.unsqueeze(-2) for s in state))[0]


class Forecaster(nn.Module):
    """Past values [B, L, C] -> the next H steps [B, H, C], all at once (direct multi-horizon).

    - revin: normalise each window by its own mean and std per channel, and undo it on the
      output (RevIN-style instance normalisation, without the affine part).
    - segment_len: feed the RNN segments of that many steps, each embedded linearly
      (SegRNN-style); 0 feeds it one step at a time.
    - channel_independent: one shared univariate model applied to every channel.
    - decoder: `linear` reads the whole horizon out of the last state with one linear layer;
      `pmf` is SegRNN's parallel multi-step forecasting: each of the H / segment_len output
      segments is one more step of the same recurrent layers, all in parallel, from the
      encoder's last state, its input a learnt embedding of the segment's position (and, when
      channel-independent, of the channel: half the width each), and a linear layer maps its
      output to the segment's values.
    """

    def __init__(self, n_channels: int, horizon: int, cell: str, hidden_size: int, num_layers: int,
                 dropout: float, revin: bool, segment_len: int, channel_independent: bool,
                 decoder: str = "linear"):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, found {decoder!r}")
        if decoder == "pmf" and not (segment_len and horizon % segment_len == 0):
            raise ValueError(f"decoder pmf needs segments that divide the horizon: segment_len={segment_len}, "
                             f"horizon={horizon}")
        self.n_channels, self.horizon = n_channels, horizon
        self.revin, self.segment_len = revin, segment_len
        self.channel_independent, self.decoder = channel_independent, decoder
        width = 1 if channel_independent else n_channels
        step_size = width * max(segment_len, 1)
        self.embed = nn.Sequential(nn.Linear(step_size, hidden_size), nn.ReLU()) if segment_len else None
        self.backbone = RecurrentBackbone(cell, hidden_size if segment_len else step_size,
                                          hidden_size, num_layers, False, dropout)
        self.dropout = nn.Dropout(dropout)
        if decoder == "linear":
            self.head = nn.Linear(hidden_size, horizon * width)
        else:
            segments = horizon // segment_len
            position = hidden_size // 2 if channel_independent else hidden_size
            self.position_embedding = nn.Parameter(torch.randn(segments, position))
            self.channel_embedding = nn.Parameter(torch.randn(n_channels, hidden_size - position)) \
                if channel_independent else None
            self.head = nn.Linear(hidden_size, segment_len * width)

    def forward(self, past: torch.Tensor, unrolled: bool = False) -> torch.Tensor:
        """`unrolled`: the encoder's steps in plain tensor operations, the same values (exported
        with a fixed time axis, a graph of MatMuls instead of one LSTM/GRU node: the benchmarks'
        section (c3) times the two)."""
        batch, lookback, channels = past.shape
        if self.revin:
            mean = past.mean(1, keepdim=True)
            std = torch.sqrt(past.var(1, keepdim=True, unbiased=False) + 1e-5)
            past = (past - mean) / std
        x = past.permute(0, 2, 1).reshape(batch * channels, lookback, 1) if self.channel_independent else past
        if self.segment_len:
            x = self.embed(x.reshape(x.shape[0], lookback // self.segment_len, -1))
        states, finals = self.backbone.run(x, unrolled=unrolled)
        if self.decoder == "linear":
            out = self.head(self.dropout(states[:, -1]))
        else:
            out = self.head(self.dropout(self.decode(finals, batch)))   # [B, (C,) m, segment x width]
        if self.channel_independent:   # rows (batch, channel), each its H values in order
            out = out.reshape(batch, channels, self.horizon).permute(0, 2, 1)
        else:                          # rows batch; values (segment, step, channel) or (step, channel)
            out = out.reshape(batch, self.horizon, channels)
        if self.revin:
            out = out * std + mean
        return out

    def decode(self, finals: list, batch: int) -> torch.Tensor:
        """PMF: one recurrent step per (row, output segment), every segment of a row starting
        from that row's last encoder state -> [B, C, m, hidden] (channel-independent) or
        [B, m, hidden]."""
        segments = self.position_embedding.shape[0]
        queries = self.position_embedding                                       # [m, d] or [m, d/2]
        if self.channel_embedding is not None:   # rows are (batch, channel): [C, m, d]
            queries = torch.cat([queries.unsqueeze(0).expand(self.n_channels, -1, -1),
                                 self.channel_embedding.unsqueeze(1).expand(-1, segments, -1)], -1)
        rows = (batch, self.n_channels) if self.channel_embedding is not None else (batch,)
        x = queries
        for depth, (rnn, state) in enumerate(zip(self.backbone.forward_layers, finals)):
            if depth:
                x = self.backbone.dropout(x)
            state = tuple(s[0].reshape(*rows, -1) for s in state) if isinstance(state, tuple) \
                else (state[0].reshape(*rows, -1),)
            x = step_per_query(rnn, x, state)
        return x
