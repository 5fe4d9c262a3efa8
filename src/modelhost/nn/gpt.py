"""GPT-style decoder language model, after nanoGPT (names follow nanoGPT and GPT-2).

``forward(idx, targets=None) -> (logits, loss)``: ``idx`` is ``(B, T)`` int64 token ids, ``T <= block_size``;
``logits`` is ``(B, T, vocab_size)`` for every position; ``loss`` is the mean cross entropy over all positions
(targets of -1 are ignored), or None without targets.

Weights: ``lm_head.weight`` is ``transformer.wte.weight`` (tied), and safetensors refuses to save a state dict
in which two names share one tensor. So ``state_dict()`` leaves ``lm_head.weight`` out, as GPT-2's files do
(``named_parameters()`` already lists the tensor once, as ``transformer.wte.weight``), and ``load_state_dict``
(strict or not) restores whichever tied key a file lacks from the other. Save with ``safetensors.torch.save``
of ``state_dict()`` or with ``safetensors.torch.save_model``; load with ``load_state_dict(load(...))`` or
``safetensors.torch.load_model``. A state dict from another source must carry at least one of the two keys.

The LLM runtime serves this model with its own KV cache, so attention keeps one ``c_attn`` projection for
q, k and v, and the module names stay nanoGPT's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

WTE_KEY, HEAD_KEY = "transformer.wte.weight", "lm_head.weight"  # one tensor, two names


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 256  # longest context
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linears and LayerNorms

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # batch, sequence length, n_embd
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # not C: a traced size would become a constant
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        out: torch.Tensor = self.resid_dropout(self.c_proj(y))
        return out


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dropout(self.c_proj(self.gelu(self.c_fc(x))))
        return out


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class Trunk(nn.Module):
    """Embeddings, blocks and final norm: nanoGPT's ``transformer`` ModuleDict, as a module so mypy knows
    its parts; the state-dict names are the same."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = Trunk(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one tensor, two names
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: residual projections scaled by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self.register_state_dict_post_hook(_drop_tied_head)  # type: ignore[no-untyped-call]
        self.register_load_state_dict_pre_hook(_fill_tied_key)  # type: ignore[no-untyped-call]

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.size(1)  # idx: (B, T)
        # under ONNX export sizes are traced tensors: checking one would warn and freeze it into the graph
        if not torch.onnx.is_in_onnx_export() and idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, n_embd)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits: torch.Tensor = self.lm_head(x)  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T); returns (B, T + max_new_tokens).

        The context is cropped to the last ``block_size`` tokens. ``temperature == 0`` (or ``top_k=1``)
        picks the most likely token, independent of ``generator``. Call ``model.eval()`` first, or
        dropout applies. No KV cache: each step runs the whole context (the LLM runtime has its own).
        """
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size :]  # (B, <= block_size)
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :]  # (B, vocab_size), the next token's
            if temperature == 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))  # (B, k), descending
                    logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def _tied(module: nn.Module) -> bool:
    assert isinstance(module, GPT)
    return module.lm_head.weight is module.transformer.wte.weight  # untied by a caller: save both


def _drop_tied_head(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Keep one name for the tied tensor (as GPT-2 files do), so safetensors can save the state dict."""
    if _tied(module):
        state_dict.pop(prefix + HEAD_KEY, None)


def _fill_tied_key(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Restore the tied key a state dict lacks (every one this model writes lacks one) from the other."""
    wte, head = prefix + WTE_KEY, prefix + HEAD_KEY
    if not _tied(module):
        return
    if wte in state_dict and head not in state_dict:
        state_dict[head] = state_dict[wte]
    elif head in state_dict and wte not in state_dict:
        state_dict[wte] = state_dict[head]
