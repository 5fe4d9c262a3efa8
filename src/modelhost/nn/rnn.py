"""Recurrent sequence models (LSTM and GRU) for sequence classification and regression.

Input is ``(B, T, input_size)`` float features, or ``(B, T)`` int64 token ids when ``vocab_size`` is set
(an embedding comes first). There is no padding mask: every time step counts, so batch sequences of equal
length (or left-pad, which keeps "last" pooling on the real tokens of the forward direction).

Output is ``(B, num_classes)`` logits when ``num_classes`` is set, else ``(B, output_size)`` regression
values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass
class RNNConfig:
    input_size: int | None = None  # features per step of float input; unused when vocab_size is set
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    num_classes: int | None = None  # set: classification logits; None: regression with output_size outputs
    output_size: int = 1
    dropout: float = 0.0  # between stacked layers and before the head
    vocab_size: int | None = None  # set: input is (B, T) int64 token ids
    embed_dim: int = 64
    pooling: Literal["last", "mean"] = "last"  # last: final hidden state(s); mean: outputs averaged over T

    def __post_init__(self) -> None:
        if self.vocab_size is None and self.input_size is None:
            raise ValueError("set input_size for float input (B, T, input_size), or vocab_size for token ids")
        if self.pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {self.pooling!r}")


class _RNNModel(nn.Module):
    """Shared body of LSTM and GRU; subclasses name the torch recurrent layer in ``rnn_cls``."""

    rnn_cls: type[nn.LSTM] | type[nn.GRU]

    def __init__(self, config: RNNConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim) if c.vocab_size is not None else None
        self.rnn = self.rnn_cls(
            input_size=c.embed_dim if c.vocab_size is not None else c.input_size,
            hidden_size=c.hidden_size,
            num_layers=c.num_layers,
            batch_first=True,
            bidirectional=c.bidirectional,
            dropout=c.dropout if c.num_layers > 1 else 0.0,  # torch warns about dropout on a single layer
        )
        directions = 2 if c.bidirectional else 1
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(directions * c.hidden_size, c.num_classes or c.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)  # (B, T) ids -> (B, T, embed_dim)
        out, h = self.rnn(x)  # out: (B, T, D*hidden_size); h: (num_layers*D, B, hidden_size)
        if self.config.pooling == "mean":
            pooled = out.mean(dim=1)  # (B, D*hidden_size)
        else:
            h_n = h[0] if isinstance(h, tuple) else h  # the LSTM returns (h_n, c_n)
            # the top layer's final state per direction: forward at t=T-1, backward at t=0
            last = h_n[-2:] if self.config.bidirectional else h_n[-1:]  # (D, B, hidden_size)
            pooled = last.transpose(0, 1).flatten(1)  # (B, D*hidden_size), forward then backward
        y: torch.Tensor = self.head(self.drop(pooled))  # (B, num_classes or output_size)
        return y


class LSTM(_RNNModel):
    rnn_cls = nn.LSTM


class GRU(_RNNModel):
    rnn_cls = nn.GRU
