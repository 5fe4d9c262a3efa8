"""The Llama family of decoders: Llama 1-3, SmolLM, Mistral and Qwen2 configs share one module.

RMSNorm before attention and MLP, rotary positions (with Llama 3, linear and YaRN frequency scaling),
grouped-query attention, a SwiGLU MLP, and tied or untied input/output embeddings. Parameter names are
Hugging Face's (``model.layers.0.self_attn.q_proj.weight``), so a ``LlamaForCausalLM`` checkpoint loads
as it is; the arithmetic follows transformers' (norms in float32, cos/sin in float32) so the logits agree
with it to float rounding.

``forward(input_ids, cache=None, slots=None, last_only=False) -> logits``:

- without a cache, ``input_ids`` (B, T) are whole sequences from position 0 (causal attention);
- with a :class:`KVCache`, row ``b`` of ``input_ids`` continues the sequence in cache slot ``slots[b]``:
  its tokens take positions ``cache.lengths[slot] ..`` and their keys and values are written there, so a
  prompt can be fed whole, in chunks, or one token at a time, and rows may be at different lengths.

Tied embeddings keep one tensor under two names; ``state_dict()`` lists it once, as
``model.embed_tokens.weight`` (Hugging Face files do the same), and loading restores the other name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

EMBED_KEY, HEAD_KEY = "model.embed_tokens.weight", "lm_head.weight"  # tied: one tensor, two names
ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int = 0  # 0: as many as query heads (no grouping)
    head_dim: int = 0  # 0: hidden_size // num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] = field(default_factory=dict)
    """Hugging Face's ``rope_scaling``: ``rope_type`` (one of ROPE_TYPES) and that type's keys."""
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 has biases on q, k and v only
    o_bias: bool = False
    mlp_bias: bool = False

    def __post_init__(self) -> None:
        self.num_key_value_heads = self.num_key_value_heads or self.num_attention_heads
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for rotary positions")
        rope_type = self.rope_scaling.get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise ValueError(
                f"rope_scaling.rope_type {rope_type!r} is not supported; use one of {ROPE_TYPES}"
            )

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> LlamaConfig:
        """The config of a Hugging Face ``config.json`` of model_type llama, mistral or qwen2.

        Reads rotary settings in both spellings (``rope_theta`` + ``rope_scaling``, and transformers 5's
        ``rope_parameters``). A sliding window (Mistral) caps the context at the window, inside which
        sliding and full attention are the same. Raises ValueError naming the key it cannot use.
        """
        model_type = hf.get("model_type")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported; Llama models use 'silu'")
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        max_pos = int(hf.get("max_position_embeddings", 2048))
        if (window := hf.get("sliding_window")) and hf.get("use_sliding_window", model_type == "mistral"):
            max_pos = min(max_pos, int(window))
        bias = bool(hf.get("attention_bias", False))
        required = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        )
        if missing := [k for k in required if k not in hf]:
            raise ValueError(f"config.json lacks {', '.join(missing)}")
        return cls(
            **{k: int(hf[k]) for k in required},
            num_key_value_heads=int(hf.get("num_key_value_heads") or 0),
            head_dim=int(hf.get("head_dim") or 0),
            max_position_embeddings=max_pos,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling={"rope_type": rope_type, **rope} if rope_type != "default" else {},
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=bias or model_type == "qwen2",
            o_bias=bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
        )


def rope_frequencies(config: LlamaConfig) -> tuple[torch.Tensor, float]:
    """``(inv_freq, attention_factor)`` for the config's rotary scaling, as transformers computes them:
    inv_freq is (head_dim // 2,) float32; cos and sin are multiplied by attention_factor (YaRN only)."""
    dim, base, rs = config.head_dim, config.rope_theta, config.rope_scaling
    # on the CPU explicitly: models are built under torch.device("meta") before their weights arrive
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim))
    rope_type = rs.get("rope_type", "default")
    if rope_type == "linear":
        return inv_freq / rs["factor"], 1.0
    if rope_type == "llama3":
        return _llama3(inv_freq, rs), 1.0
    if rope_type == "yarn":
        return _yarn(inv_freq, config)
    return inv_freq, 1.0


def _llama3(inv_freq: torch.Tensor, rs: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1: long wavelengths divided by ``factor``, short ones kept, a smooth ramp between."""
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_len = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


def _yarn(inv_freq: torch.Tensor, config: LlamaConfig) -> tuple[torch.Tensor, float]:
    """YaRN: interpolate low frequencies, extrapolate high ones, ramp between; scale attention."""
    rs, dim, base = config.rope_scaling, config.head_dim, config.rope_theta
    old_len = rs.get("original_max_position_embeddings") or config.max_position_embeddings
    factor = rs.get("factor") or config.max_position_embeddings / old_len

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        m, m_all = rs.get("mscale"), rs.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(old_len / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(rs.get("beta_fast") or 32), correction_dim(rs.get("beta_slow") or 1)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    ramp = torch.clamp(
        (torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / ((high - low) or 0.001), 0, 1
    )
    extrapolation = 1 - ramp
    return inv_freq / factor * (1 - extrapolation) + inv_freq * extrapolation, float(attention_factor)


class KVCache:
    """Keys and values of past positions, for ``n_slots`` sequences of at most ``max_len`` tokens.

    ``k[layer]`` and ``v[layer]`` are (n_slots, n_kv_heads, max_len, head_dim); ``lengths[slot]`` counts the
    positions of that slot already filled. A forward with the cache writes the new tokens' keys and values
    at ``lengths[slot] ..`` and then advances ``lengths``; nothing else changes them but :meth:`reset`.
    Which sequence lives in which slot is the caller's business (the engine's scheduler).
    """

    def __init__(
        self,
        n_layers: int,
        n_slots: int,
        max_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        shape = (n_slots, n_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.lengths = torch.zeros(n_slots, dtype=torch.int64, device=device)
        self.max_len = max_len

    @classmethod
    def for_model(cls, model: LlamaForCausalLM, n_slots: int, max_len: int) -> KVCache:
        """A cache shaped for ``model``, in its parameters' dtype and device."""
        c, p = model.config, model.model.embed_tokens.weight
        return cls(
            c.num_hidden_layers, n_slots, max_len, c.num_key_value_heads, c.head_dim, p.dtype, p.device
        )

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def reset(self, slots: torch.Tensor | list[int]) -> None:
        """Free ``slots`` for new sequences (their old keys stay but are never attended to)."""
        self.lengths[torch.as_tensor(slots, dtype=torch.int64, device=self.lengths.device)] = 0


@dataclass
class Step:
    """What every layer of one forward shares: each row's slot and positions and the attention mask.
    Any decoder with this cache uses it (GPT-2 too): :meth:`plan`, then :meth:`attend` in each layer,
    then :meth:`advance` once."""

    cache: KVCache | None
    slots: torch.Tensor | None  # (B,) int64, or None: rows 0..B-1 (no gather, views only)
    positions: torch.Tensor  # (B, T) absolute position of each input token
    n_keys: int  # keys attended to: positions 0 .. n_keys-1
    mask: torch.Tensor | None  # (B, 1, T, n_keys) True where attending is allowed; None: plain causal
    lengths: torch.Tensor | None = None  # (B,) real tokens of each right-padded row; None: all T

    @classmethod
    def plan(
        cls,
        input_ids: torch.Tensor,
        cache: KVCache | None,
        slots: torch.Tensor | None,
        lengths: torch.Tensor | None = None,
    ) -> Step:
        """Raises ValueError if a row would run past the cache's ``max_len``.

        ``lengths``: rows of different lengths prefilled together, right-padded to T. A padded
        position's keys land in the cache past the row's length, where causality hides them
        from the row's real tokens and the row's next tokens overwrite them; only the real
        tokens count as stored."""
        B, T = input_ids.shape
        device = input_ids.device
        offsets = torch.zeros(B, dtype=torch.int64, device=device)
        if cache is not None:
            offsets = cache.lengths[slots] if slots is not None else cache.lengths[:B]
        positions = offsets[:, None] + torch.arange(T, device=device)  # (B, T)
        n_keys = int(positions.max()) + 1
        mask = None
        if cache is not None:
            if n_keys > cache.max_len:
                raise ValueError(f"a sequence would reach {n_keys} tokens; the cache holds {cache.max_len}")
            keys = torch.arange(n_keys, device=device)
            mask = (keys[None, None, :] <= positions[:, :, None]).unsqueeze(1)  # (B, 1, T, n_keys)
        return cls(cache, slots, positions, n_keys, mask, lengths)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention of this step's queries (B, nh, T, hd) over the past and these keys and values
        (B, nkv, T, hd; nkv divides nh), which are written to the cache first. Returns (B, nh, T, hd)."""
        if self.cache is not None:
            k, v = self._remember(layer, k, v)  # (B, nkv, n_keys, hd)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.mask, is_causal=self.cache is None, enable_gqa=k.size(1) != q.size(1)
        )

    def _remember(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.cache is not None
        ck, cv = self.cache.k[layer], self.cache.v[layer]
        B = k.size(0)
        rows = (self.slots if self.slots is not None else torch.arange(B, device=k.device)).view(B, 1)
        # advanced indices on dims 0 and 2 put their (B, T) shape first: values are (B, T, nkv, hd)
        ck[rows, :, self.positions] = k.transpose(1, 2).to(ck.dtype)
        cv[rows, :, self.positions] = v.transpose(1, 2).to(cv.dtype)
        if self.slots is None:  # rows 0..B-1: views, no copy
            return ck[:B, :, : self.n_keys], cv[:B, :, : self.n_keys]
        return ck[self.slots, :, : self.n_keys], cv[self.slots, :, : self.n_keys]

    def advance(self) -> None:
        """Count this step's tokens as stored, once every layer has written them."""
        if self.cache is not None:
            B, T = self.positions.shape
            rows = self.slots if self.slots is not None else torch.arange(B, device=self.positions.device)
            self.cache.lengths[rows] += T if self.lengths is None else self.lengths

    def last(self, x: torch.Tensor) -> torch.Tensor:
        """Each row's hidden state at its last real token: (B, 1, C) of ``x`` (B, T, C)."""
        if self.lengths is None:
            return x[:, -1:]
        return x[torch.arange(x.size(0), device=x.device), self.lengths - 1].unsqueeze(1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()  # as transformers: normalise in float32, scale in the model's dtype
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, layer: int):
        super().__init__()
        c = config
        self.layer, self.n_head, self.n_kv, self.hd = (
            layer,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        )
        self.q_proj = nn.Linear(c.hidden_size, self.n_head * self.hd, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, self.n_kv * self.hd, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, self.n_kv * self.hd, bias=c.qkv_bias)
        self.o_proj = nn.Linear(self.n_head * self.hd, c.hidden_size, bias=c.o_bias)

    def forward(self, x: torch.Tensor, step: Step, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, T, _ = x.shape  # batch, new tokens per row, hidden_size
        q = self.q_proj(x).view(B, T, self.n_head, self.hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        y = step.attend(self.layer, _rotary(q, *rope), _rotary(k, *rope), v)  # (B, nh, T, hd)
        out: torch.Tensor = self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.hd))
        return out


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        h, i, b = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(h, i, bias=b)
        self.up_proj = nn.Linear(h, i, bias=b)
        self.down_proj = nn.Linear(i, h, bias=b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, step: Step, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), step, rope)
        out: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
        return out


class LlamaModel(nn.Module):
    """Embeddings, layers and final norm: Hugging Face's ``model.`` prefix."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # float32 whatever the weights' dtype, so not a buffer that .to(bfloat16) would round; derived
        # from the config, so not saved either
        self.inv_freq, self.attention_factor = rope_frequencies(config)
        share_tied_names(self, EMBED_KEY, HEAD_KEY)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        slots: torch.Tensor | None = None,
        last_only: bool = False,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size), or (B, 1, vocab_size) for each row's last token if ``last_only``.

        ``slots`` (B,) int64 names the cache slot of each row (default: rows 0..B-1 use slots 0..B-1);
        ``lengths`` (B,) the real tokens of right-padded rows (see :meth:`Step.plan`).
        Raises ValueError if a row would run past the cache's ``max_len``.
        """
        step = Step.plan(input_ids, cache, slots, lengths)
        rope = self._rope(step.positions)
        x = self.model.embed_tokens(input_ids)  # (B, T, hidden_size)
        for layer in self.model.layers:
            x = layer(x, step, rope)
        step.advance()
        if last_only:
            x = step.last(x)
        logits: torch.Tensor = self.lm_head(self.model.norm(x))
        return logits

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (B, 1, T, head_dim) of each position, computed in float32 as transformers does."""
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        freqs = positions[:, :, None].float() * self.inv_freq  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)  # (B, 1, T, hd)
        dtype = self.model.embed_tokens.weight.dtype
        return (emb.cos() * self.attention_factor).to(dtype), (emb.sin() * self.attention_factor).to(dtype)


def share_tied_names(model: nn.Module, embed_key: str, head_key: str) -> None:
    """While ``head_key`` and ``embed_key`` name one tensor, ``state_dict()`` lists it once, as ``embed_key``
    (safetensors refuses shared tensors; Hugging Face files do the same), and ``load_state_dict`` fills
    ``head_key`` from ``embed_key``. Hooks take their keys from a partial, so deep copies keep working."""
    drop = functools.partial(_drop_tied_head, embed_key=embed_key, head_key=head_key)
    fill = functools.partial(_fill_tied_key, embed_key=embed_key, head_key=head_key)
    model.register_state_dict_post_hook(drop)  # type: ignore[no-untyped-call]
    model.register_load_state_dict_pre_hook(fill)  # type: ignore[no-untyped-call]


def _tied(module: nn.Module, embed_key: str, head_key: str) -> bool:
    try:
        return module.get_parameter(head_key) is module.get_parameter(embed_key)
    except AttributeError:  # the head was replaced (an int8 copy of it): nothing shared
        return False


def _drop_tied_head(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, embed_key: str, head_key: str
) -> None:
    if _tied(module, embed_key, head_key):
        state_dict.pop(prefix + head_key, None)


def _fill_tied_key(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, embed_key: str, head_key: str
) -> None:
    embed, head = prefix + embed_key, prefix + head_key
    if _tied(module, embed_key, head_key) and embed in state_dict and head not in state_dict:
        state_dict[head] = state_dict[embed]


def expected_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint for ``config`` holds, by Hugging Face name (a tied head is left out)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}


def check_tensors(config: LlamaConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise ValueError naming the missing, unexpected or misshapen tensors of a checkpoint."""
    check_shapes(expected_shapes(config), shapes)


def check_shapes(expected: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise ValueError naming the tensors that ``shapes`` lacks, has but ``expected`` does not, or has
    in another shape (any architecture's checkpoint against its module's state dict)."""
    problems = [f"missing {k}" for k in expected if k not in shapes]
    problems += [f"unexpected {k}" for k in shapes if k not in expected]
    problems += [
        f"{k} is {shape}, expected {expected[k]}"
        for k, shape in shapes.items()
        if k in expected and shape != expected[k]
    ]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"the weights do not match the config: {'; '.join(problems[:5])}{more}")


def llama_from_tensors(config: LlamaConfig, tensors: dict[str, torch.Tensor]) -> LlamaForCausalLM:
    """A model in eval mode holding ``tensors`` (Hugging Face names), all cast to the embedding's dtype
    (no copies where dtypes match). Raises ValueError as :func:`check_tensors` does."""
    check_tensors(config, {k: tuple(t.shape) for k, t in tensors.items()})
    return holding(LlamaForCausalLM, config, tensors, EMBED_KEY, HEAD_KEY)


M = TypeVar("M", bound=nn.Module)


def holding(
    cls: Callable[[Any], M], config: Any, tensors: dict[str, torch.Tensor], embed_key: str, head_key: str
) -> M:
    """``cls(config)`` built without initialising weights, holding ``tensors`` (already checked), its tied
    head tied again, cast to the embedding's dtype, in eval mode."""
    with torch.device("meta"):
        model = cls(config)
    tied = _tied(model, embed_key, head_key)
    model.load_state_dict(tensors, assign=True)
    if tied:  # assign=True made two Parameters of the one tensor: one again
        owner, _, name = head_key.rpartition(".")
        setattr(model.get_submodule(owner), name, model.get_parameter(embed_key))
    return model.to(tensors[embed_key].dtype).eval()
