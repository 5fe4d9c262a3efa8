"""GPT-2 as Hugging Face ships it (``GPT2LMHeadModel``), with the Llama module's KV cache.

Learned position embeddings, pre-LayerNorm blocks, one ``c_attn`` projection for q, k and v, a GELU MLP,
and the output head tied to the token embeddings. Parameter names and layouts are Hugging Face's:
``Conv1D`` weights are stored (in, out), so a checkpoint loads as it is and the arithmetic is
transformers' (``addmm`` with the same operands).

``forward(input_ids, cache=None, slots=None, last_only=False) -> logits`` has the contract of
:class:`modelhost.nn.llama.LlamaForCausalLM` (see there for the cache and slots). Positions run to
``n_positions - 1``; a longer sequence raises ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from modelhost.nn.llama import KVCache, Step, check_shapes, holding, share_tied_names

WTE_KEY, HEAD_KEY = "transformer.wte.weight", "lm_head.weight"  # tied: one tensor, two names
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
"""Hugging Face ``activation_function`` values and their name here (``gelu`` is the exact, erf form)."""


@dataclass
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int = 0  # 0: 4 * n_embd
    activation: Literal["gelu_tanh", "gelu", "relu"] = "gelu_tanh"
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        self.n_inner = self.n_inner or 4 * self.n_embd
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.activation not in ("gelu_tanh", "gelu", "relu"):
            raise ValueError(f"activation must be 'gelu_tanh', 'gelu' or 'relu', got {self.activation!r}")

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> GPT2Config:
        """The config of a Hugging Face GPT-2 ``config.json``. Raises ValueError naming a key this module
        does not compute exactly (another activation, attention scaled by layer, untied head)."""
        act = hf.get("activation_function", "gelu_new")
        if act not in ACTIVATIONS:
            raise ValueError(
                f"activation_function {act!r} is not supported; use one of {', '.join(ACTIVATIONS)}"
            )
        for key, value in (
            ("scale_attn_weights", True),
            ("scale_attn_by_inverse_layer_idx", False),
            ("tie_word_embeddings", True),
        ):
            if hf.get(key, value) != value:
                raise ValueError(f"{key} must be {str(value).lower()} for GPT-2 here")
        return cls(
            vocab_size=int(hf.get("vocab_size", 50257)),
            n_positions=int(hf.get("n_positions", 1024)),
            n_embd=int(hf.get("n_embd", 768)),
            n_layer=int(hf.get("n_layer", 12)),
            n_head=int(hf.get("n_head", 12)),
            n_inner=int(hf.get("n_inner") or 0),
            activation=ACTIVATIONS[act],  # type: ignore[arg-type]
            layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)),
        )


class Conv1D(nn.Module):
    """Hugging Face's Conv1D: a linear layer whose weight is stored (in, out)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out).normal_(std=0.02))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight)
        return out.view(*x.shape[:-1], -1)


class Attention(nn.Module):
    def __init__(self, config: GPT2Config, layer: int):
        super().__init__()
        self.layer, self.n_head, self.n_embd = layer, config.n_head, config.n_embd
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)  # q, k, v at once
        self.c_proj = Conv1D(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor, step: Step) -> torch.Tensor:
        B, T, C = x.shape  # batch, new tokens per row, n_embd
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = step.attend(self.layer, q, k, v)  # (B, nh, T, hs)
        out: torch.Tensor = self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return out


class MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = Conv1D(config.n_embd, config.n_inner)
        self.c_proj = Conv1D(config.n_inner, config.n_embd)
        self.activation = config.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.activation == "relu":
            h = F.relu(h)
        else:
            h = F.gelu(h, approximate="tanh" if self.activation == "gelu_tanh" else "none")
        out: torch.Tensor = self.c_proj(h)
        return out


class Block(nn.Module):
    def __init__(self, config: GPT2Config, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = Attention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, step: Step) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), step)
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class Transformer(nn.Module):
    """Embeddings, blocks and final norm: Hugging Face's ``transformer.`` prefix."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        share_tied_names(self, WTE_KEY, HEAD_KEY)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        slots: torch.Tensor | None = None,
        last_only: bool = False,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size), or (B, 1, vocab_size) for each row's last token if ``last_only``;
        ``lengths``: the real tokens of right-padded rows (see :meth:`Step.plan`)."""
        step = Step.plan(input_ids, cache, slots, lengths)
        if step.n_keys > self.config.n_positions:
            raise ValueError(
                f"a sequence would reach {step.n_keys} tokens; GPT-2 has {self.config.n_positions}"
            )
        t = self.transformer
        x = t.wte(input_ids) + t.wpe(step.positions)  # (B, T, n_embd)
        for block in t.h:
            x = block(x, step)
        step.advance()
        if last_only:
            x = step.last(x)
        logits: torch.Tensor = self.lm_head(t.ln_f(x))
        return logits


def kv_cache(model: GPT2LMHeadModel, n_slots: int, max_len: int) -> KVCache:
    """A cache shaped for ``model``, in its parameters' dtype and device."""
    c, p = model.config, model.transformer.wte.weight
    return KVCache(c.n_layer, n_slots, max_len, c.n_head, c.n_embd // c.n_head, p.dtype, p.device)


def gpt2_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face GPT-2 checkpoint's tensors under this module's names: ``GPT2Model`` files (no
    ``transformer.`` prefix) get it, the attention-mask buffers old files carry are dropped, and the
    tied head is kept once, as ``transformer.wte.weight``."""
    out = {}
    for key, tensor in tensors.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")) and tensor.ndim != 1:
            continue  # the causal-mask buffer, not a parameter
        name = key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"
        out[name] = tensor
    out.pop(HEAD_KEY, None)
    return out


def gpt2_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint for ``config`` holds, as :func:`gpt2_state_dict` names them."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in GPT2LMHeadModel(config).state_dict().items()}


def gpt2_from_tensors(config: GPT2Config, tensors: dict[str, torch.Tensor]) -> GPT2LMHeadModel:
    """A model in eval mode holding ``tensors`` (as :func:`gpt2_state_dict` names them), cast to the
    embedding's dtype. Raises ValueError naming missing, unexpected or misshapen tensors."""
    check_shapes(gpt2_shapes(config), {k: tuple(t.shape) for k, t in tensors.items()})
    return holding(GPT2LMHeadModel, config, tensors, WTE_KEY, HEAD_KEY)
