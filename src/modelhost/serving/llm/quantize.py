"""Weights for an LLM deployment's precision: fp32 as trained, bf16 (this CPU has AVX-512
BF16), or int8 weight-only — each output channel of each decoder Linear scaled into int8,
multiplied by torch's int8-weight kernel. Embeddings and norms stay as they are; the output
head gets a bf16 copy (a head tied to the embedding too: the lookup keeps the float table).
An int8 head halves its bytes again, but on SmolLM2 it cut greedy agreement with fp32 on one
of four prompts from 64 tokens to 15, where the bf16 head changed nothing.

The int8 kernel takes bf16 activations: with float32 ones it falls off its fast path (on this
2-core machine SmolLM2's decoder matmuls take 44 ms with float32 inputs, 4 ms with bf16), so an
Int8Linear casts its input to bf16 and its output back; the rest of the model keeps its dtype."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Precision = Literal["fp32", "bf16", "int8"]


class Int8Linear(nn.Module):
    """``x @ W.T + b`` with W stored as int8 rows and one bf16 scale per row, computed in bf16."""

    weight_int8: torch.Tensor
    scale: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        )
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        y = torch._weight_int8pack_mm(flat, self.weight_int8, self.scale).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class Bf16Linear(nn.Module):
    """``x @ W.T + b`` with W kept in bf16, computed in bf16, answered in ``x``'s dtype."""

    weight_bf16: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("weight_bf16", linear.weight.detach().to(torch.bfloat16).clone())
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight_bf16).to(x.dtype)
        return y if self.bias is None else y + self.bias


def apply_precision(model: nn.Module, precision: Precision, layers: nn.Module | None = None) -> nn.Module:
    """``model`` in ``precision`` (in place). ``layers``: the part whose Linears int8 replaces
    (default: all of them); a Linear named ``lm_head`` on ``model`` gets a bf16 copy."""
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        _replace_linears(layers if layers is not None else model)
        head = getattr(model, "lm_head", None)
        if isinstance(head, nn.Linear):
            model.lm_head = Bf16Linear(head)
    return model


def _replace_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _replace_linears(child)
