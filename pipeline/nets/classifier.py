"""The classifier's network: token ids through the backbone, pooled over valid positions only,
to class logits."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pipeline.nets.backbone import RecurrentBackbone

POOLINGS = ("last", "mean", "max")


def masked_pool(states: torch.Tensor, lengths: torch.Tensor, poolings: Sequence[str],
                bidirectional: bool) -> torch.Tensor:
    """Pool [B, T, D] over valid positions only; several poolings are concatenated."""
    steps = torch.arange(states.shape[1], device=states.device).unsqueeze(0)
    mask = (steps < lengths.unsqueeze(1)).unsqueeze(-1)                    # [B, T, 1]
    pooled = []
    for pooling in poolings:
        if pooling == "mean":
            pooled.append((states * mask).sum(1) / lengths.unsqueeze(1).to(states.dtype))
        elif pooling == "max":
            pooled.append(states.masked_fill(~mask, torch.finfo(states.dtype).min).amax(1))
        elif pooling == "last":
            index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
            last = torch.gather(states, 1, index).squeeze(1)
            if bidirectional:  # the backward direction ends at position 0
                half = states.shape[-1] // 2
                last = torch.cat([last[:, :half], states[:, 0, half:]], dim=-1)
            pooled.append(last)
        else:
            raise ValueError(f"pooling must be among {POOLINGS}, found {pooling!r}")
    return torch.cat(pooled, dim=-1)


class SequenceClassifier(nn.Module):
    """Token ids [B, T] (right-padded with pad_id) -> class logits [B, num_classes]."""

    def __init__(self, vocab_size: int, num_classes: int, cell: str, embedding_dim: int,
                 hidden_size: int, num_layers: int, bidirectional: bool, dropout: float,
                 embedding_dropout: float, pooling: Sequence[str], pad_id: int = 0):
        super().__init__()
        self.pad_id = pad_id
        self.pooling = tuple(pooling)
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.backbone = RecurrentBackbone(cell, embedding_dim, hidden_size, num_layers,
                                          bidirectional, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.output_size * len(self.pooling), num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # An all-padding row counts as one step, so that pooling is defined.
        lengths = (input_ids != self.pad_id).sum(1).clamp(min=1)
        states = self.backbone(self.embedding_dropout(self.embedding(input_ids)), lengths)
        return self.head(self.dropout(masked_pool(states, lengths, self.pooling, self.bidirectional)))
