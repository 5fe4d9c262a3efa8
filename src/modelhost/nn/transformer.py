"""Transformer encoder for sequence classification.

Input is ``(B, T)`` int64 token ids, ``T <= max_len``; positions holding ``pad_id`` are padding: no token
attends to them and mean pooling leaves them out, so appending padding does not change the output.
Output is ``(B, num_classes)`` logits.

Pre-norm blocks around a small attention module on ``F.scaled_dot_product_attention`` (not
``nn.TransformerEncoder``), so the graph stays readable and exports to ONNX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerClassifierConfig:
    vocab_size: int
    num_classes: int
    max_len: int = 256
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    positions: Literal["learned", "sinusoidal"] = "learned"
    pad_id: int = 0
    pooling: Literal["mean", "cls"] = "mean"  # cls: a learned token prepended to the sequence

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.positions not in ("learned", "sinusoidal"):
            raise ValueError(f"positions must be 'learned' or 'sinusoidal', got {self.positions!r}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed (max_len, d_model) table of "Attention Is All You Need": sin on even dims, cos on odd."""
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return table


class SelfAttention(nn.Module):
    def __init__(self, config: TransformerClassifierConfig):
        super().__init__()
        self.n_heads, self.d_model = config.n_heads, config.d_model
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # batch, sequence length, d_model
        q, k, v = self.qkv(x).split(self.d_model, dim=2)  # not C: a traced size would become a constant
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)
        mask = keep[:, None, None, :]  # (B, 1, 1, T): True where the key is a real token
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)
        out: torch.Tensor = self.resid_drop(self.proj(y))
        return out


class Block(nn.Module):
    def __init__(self, config: TransformerClassifierConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff),
            nn.GELU(),
            nn.Linear(config.d_ff, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), keep)
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class TransformerClassifier(nn.Module):
    def __init__(self, config: TransformerClassifierConfig):
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        if c.positions == "learned":
            self.pos_emb = nn.Parameter(torch.zeros(c.max_len, c.d_model))
            nn.init.normal_(self.pos_emb, std=0.02)
        else:  # fixed, so not part of the state dict
            self.register_buffer("pos_emb", sinusoidal_positions(c.max_len, c.d_model), persistent=False)
        # the CLS token carries no position: it is always first, so its own embedding says where it is
        self.cls = nn.Parameter(torch.zeros(1, 1, c.d_model)) if c.pooling == "cls" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c.n_layers)])
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.num_classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape  # batch, sequence length
        # under ONNX export sizes are traced tensors: checking one would warn and freeze it into the graph
        if not torch.onnx.is_in_onnx_export() and idx.size(1) > self.config.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len {self.config.max_len}")
        keep = idx != self.config.pad_id  # (B, T)
        x = self.tok_emb(idx) + self.pos_emb[:T]  # (B, T, d_model)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(B, -1, -1), x], dim=1)  # (B, 1+T, d_model)
            keep = torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1)  # (B, 1+T)
        # a row of padding only would attend to nothing (NaN); let it attend to everything instead
        keep = keep | ~keep.any(dim=1, keepdim=True)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, keep)
        x = self.ln_f(x)  # (B, T', d_model)
        if self.cls is not None:
            pooled = x[:, 0]  # (B, d_model)
        else:
            weights = keep.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1)  # (B, d_model), real tokens only
        logits: torch.Tensor = self.head(pooled)  # (B, num_classes)
        return logits
