"""The generator's network: a character-level language model that carries its recurrent state."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.nets.backbone import CELLS, STATES


class CharGenerator(nn.Module):
    """Character ids [B, T] -> next-character logits [B, T, vocab], and the recurrent state.

    An embedding, a stack of LSTM, GRU or peephole-LSTM layers (dropout between them), dropout and a linear
    output, optionally tied to the embedding. `forward(ids)` starts from a zero state (how it
    trains); `step(ids, state)` carries a state in and out (how it reads a prompt and then
    generates one character per call, and what the ONNX graph exports). The state is a tuple:
    (h,) for a GRU and (h, c) for an LSTM, each [num_layers, B, hidden_size].
    """

    def __init__(self, vocab_size: int, cell: str, embedding_dim: int, hidden_size: int, num_layers: int,
                 dropout: float, tie_weights: bool):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, found {cell!r}")
        self.cell, self.num_layers, self.hidden_size = cell, num_layers, hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = CELLS[cell](embedding_dim, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            self.head.weight = self.embedding.weight

    @property
    def state_names(self) -> tuple[str, ...]:
        return STATES[self.cell]

    def zero_state(self, batch: int, device=None) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros(self.num_layers, batch, self.hidden_size, device=device) for _ in self.state_names)

    def step(self, input_ids: torch.Tensor, state: tuple[torch.Tensor, ...]):
        carries_cell_state = len(state) == 2   # (h, c) for the LSTMs, a bare h for the GRU
        out, new = self.rnn(self.embedding(input_ids), state if carries_cell_state else state[0])
        logits = self.head(self.dropout(out))
        return logits, (new if carries_cell_state else (new,))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.step(input_ids, self.zero_state(input_ids.shape[0], input_ids.device))[0]
