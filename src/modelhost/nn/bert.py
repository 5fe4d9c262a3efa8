"""BERT encoder with sentence pooling, for embeddings (all-MiniLM, BGE, E5 and other BERT-based encoders).

``forward(input_ids, attention_mask=None, token_type_ids=None) -> (B, hidden_size)``: one vector per
sequence, pooled from the last layer's token states (``pooling``: the mean over real tokens, or the
[CLS] token's state) and, with ``normalize``, scaled to unit L2 norm, as sentence-transformers'
Pooling and Normalize modules do. ``token_states`` gives the ``(B, T, hidden_size)`` states under the
pooling. ``input_ids`` is ``(B, T)`` int64, ``T <= max_position_embeddings``; ``attention_mask`` is 1 on
real tokens and 0 on padding (by default: every position whose id is not ``pad_token_id``). No token
attends to padding and pooling leaves it out, so appending padding does not change a sequence's output.

Post-LN as in BERT: ``x = LN(x + attn(x)); x = LN(x + ffn(x))``. The module names are modelhost's
(q, k and v in one ``qkv`` projection, so attention is one matmul); ``bert_from_hf`` maps a Hugging Face
``BertModel`` checkpoint onto them.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from modelhost.errors import InvalidInput

HIDDEN_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
"""Hugging Face ``hidden_act`` values and their name here (``gelu`` is the exact, erf form)."""


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: Literal["gelu", "gelu_tanh"] = "gelu"
    pad_token_id: int = 0
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = False  # L2-normalise the pooled vector (sentence-transformers' Normalize module)
    # tokens a text is truncated to before encoding (sentence-transformers' max_seq_length)
    max_length: int = 512

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in ("gelu", "gelu_tanh"):
            raise ValueError(f"hidden_act must be 'gelu' or 'gelu_tanh', got {self.hidden_act!r}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if not 2 <= self.max_length <= self.max_position_embeddings:
            raise ValueError(
                f"max_length ({self.max_length}) must be between 2 and "
                f"max_position_embeddings ({self.max_position_embeddings})"
            )


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.position(pos) + self.token_type(token_type_ids)  # (B, T, C)
        out: torch.Tensor = self.ln(x)
        return out


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.n_head, self.n_embd = config.num_attention_heads, config.hidden_size
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)  # q, k, v at once
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # batch, sequence length, hidden_size
        q, k, v = self.qkv(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        mask = keep[:, None, None, :]  # (B, 1, 1, T): True where the key is a real token
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        out: torch.Tensor = self.proj(y.transpose(1, 2).reshape(B, T, C))
        return out


class FeedForward(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, config.intermediate_size)
        self.gelu = nn.GELU(approximate="tanh" if config.hidden_act == "gelu_tanh" else "none")
        self.proj = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(self.gelu(self.fc(x)))
        return out


class Layer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = FeedForward(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(x + self.attn(x, keep))  # post-LN: the norm after the residual sum
        out: torch.Tensor = self.ln_2(x + self.mlp(x))
        return out


class Bert(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList([Layer(config) for _ in range(config.num_hidden_layers)])
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):  # BERT's initializer_range
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def token_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The last layer's (B, T, hidden_size) states; padding positions hold values nobody reads."""
        # under ONNX export sizes are traced tensors: checking one would warn and freeze it into the graph
        if not torch.onnx.is_in_onnx_export() and input_ids.size(1) > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.size(1)} exceeds "
                f"max_position_embeddings {self.config.max_position_embeddings}"
            )
        keep = _keep(input_ids, attention_mask, self.config.pad_token_id)  # (B, T) bool
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, keep)
        out: torch.Tensor = x
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.token_states(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if self.config.pooling == "cls":
            pooled = x[:, 0]  # (B, C)
        else:
            keep = _keep(input_ids, attention_mask, self.config.pad_token_id).unsqueeze(-1).to(x.dtype)
            # sentence-transformers' mean: the clamp only matters for an all-padding row
            pooled = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1e-9)  # (B, C)
        if self.config.normalize:
            pooled = F.normalize(pooled, p=2.0, dim=1)
        return pooled


def _keep(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_token_id: int) -> torch.Tensor:
    return input_ids != pad_token_id if attention_mask is None else attention_mask.bool()


# ---- import from Hugging Face ---------------------------------------------------------------------

_NAMES = {  # Hugging Face BertModel name -> name here, before ".weight"/".bias"; {i} is a layer's number
    "embeddings.word_embeddings": "embeddings.word",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.token_type_embeddings": "embeddings.token_type",
    "embeddings.LayerNorm": "embeddings.ln",
    "encoder.layer.{i}.attention.output.dense": "layers.{i}.attn.proj",
    "encoder.layer.{i}.attention.output.LayerNorm": "layers.{i}.ln_1",
    "encoder.layer.{i}.intermediate.dense": "layers.{i}.mlp.fc",
    "encoder.layer.{i}.output.dense": "layers.{i}.mlp.proj",
    "encoder.layer.{i}.output.LayerNorm": "layers.{i}.ln_2",
}
_HF_NAMES = {here: hf for hf, here in _NAMES.items()} | {
    "layers.{i}.attn.qkv": "encoder.layer.{i}.attention.self.query/key/value"
}
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)")
"""Three tensors that become one ``qkv`` projection here."""
_UNUSED = re.compile(r"embeddings\.position_ids|(pooler|cls|classifier|qa_outputs)\..*")
"""Buffers and heads a BERT checkpoint may carry that embeddings do not use (sentence-transformers
pools token states itself and ignores the pooler as well)."""


def bert_from_hf(
    config: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Map a Hugging Face BERT ``config.json`` and its safetensors state dict onto this module.

    Returns ``(config, state_dict)``: ``config`` is ``BertConfig``'s fields as a JSON-ready dict (for
    ``build_model("bert", config)``), with mean pooling, no normalisation and ``max_length`` the model's
    position count; a sentence-transformers folder overrides those three (see
    ``modelhost.serving.embeddings.sentence_transformers_options``). ``state_dict`` loads with
    ``strict=True``; tensors keep their dtype. Accepts the names of ``BertModel`` and of ``BertFor*``
    checkpoints (``bert.`` prefix, old ``gamma``/``beta`` LayerNorm names); drops the pooler and task heads.

    Raises InvalidInput naming the config field or tensor when the model is not a BERT this module
    computes exactly (another model_type, relative positions, another activation) or a tensor is
    missing, unexpected or of the wrong shape.
    """
    cfg = _config_from_hf(config)
    return dataclasses.asdict(cfg), bert_state_dict(cfg, tensors)


def bert_state_dict(config: BertConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face BERT state dict (names as ``bert_from_hf`` takes them) renamed for ``Bert(config)``:
    for a version that keeps Hugging Face's names on disk. Raises InvalidInput as ``bert_from_hf`` does."""
    state: dict[str, torch.Tensor] = {}
    # native qkv name -> {"query": ..., "key": ..., "value": ...}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name = _hf_name(key)
        if qkv_part := _QKV.fullmatch(name):
            layer, part, leaf = qkv_part.groups()
            qkv.setdefault(f"layers.{layer}.attn.qkv.{leaf}", {})[part] = tensor
        elif not _UNUSED.fullmatch(name):
            state[_native_name(name) or name] = tensor
    for native, parts in qkv.items():
        if len(parts) < 3:
            absent = next(p for p in ("query", "key", "value") if p not in parts)
            raise InvalidInput(
                f"BERT checkpoint lacks the tensor {_hf_name_of(native).replace('query/key/value', absent)!r}"
            )
        state[native] = torch.cat([parts["query"], parts["key"], parts["value"]])  # (3 * C, ...)
    _check_against(config, state)
    return state


def _check_against(cfg: BertConfig, state: dict[str, torch.Tensor]) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        expected = {k: v.shape for k, v in Bert(cfg).state_dict().items()}
    unexpected = sorted(state.keys() - expected.keys())
    if unexpected:  # another model's tensor, a layer past num_hidden_layers
        raise InvalidInput(f"unexpected tensor {_hf_name_of(unexpected[0])!r} in a BERT checkpoint")
    missing = sorted(expected.keys() - state.keys())
    if missing:
        raise InvalidInput(f"BERT checkpoint lacks the tensor {_hf_name_of(missing[0])!r}")
    for key, shape in expected.items():
        if state[key].shape != shape:
            raise InvalidInput(
                f"tensor {_hf_name_of(key)!r} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(shape)} from config.json"
            )


def _config_from_hf(config: dict[str, Any]) -> BertConfig:
    if config.get("model_type", "bert") != "bert":
        raise InvalidInput(f"config.json: model_type is {config.get('model_type')!r}, not 'bert'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise InvalidInput(
            f"config.json: position_embedding_type {config['position_embedding_type']!r} is not supported "
            "(only 'absolute')"
        )
    act = config.get("hidden_act", "gelu")
    if act not in HIDDEN_ACTS:
        raise InvalidInput(
            f"config.json: hidden_act {act!r} is not supported (one of {', '.join(HIDDEN_ACTS)})"
        )
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [f for f in fields if not isinstance(config.get(f), int)]
    if missing:
        raise InvalidInput(f"config.json: {', '.join(missing)} must be given as integers")
    try:
        positions = int(config.get("max_position_embeddings", 512))
        return BertConfig(
            **{f: config[f] for f in fields},
            max_position_embeddings=positions,
            type_vocab_size=int(config.get("type_vocab_size", 2)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
            hidden_act=HIDDEN_ACTS[act],  # type: ignore[arg-type]
            pad_token_id=int(config.get("pad_token_id") or 0),
            max_length=positions,
        )
    except (TypeError, ValueError) as e:  # a value of the wrong type, or one BertConfig refuses
        raise InvalidInput(f"config.json: {e}") from e


def _native_name(hf_name: str) -> str | None:
    return _rename(hf_name, _NAMES)


def _hf_name_of(native: str) -> str:
    return _rename(native, _HF_NAMES) or native


def _rename(name: str, table: dict[str, str]) -> str | None:
    module, _, leaf = name.rpartition(".")  # leaf: weight or bias
    layer = re.search(r"\.(\d+)\.", module)
    pattern = module.replace(layer[0], ".{i}.", 1) if layer else module
    target = table.get(pattern)
    return None if target is None else f"{target.format(i=layer[1] if layer else '')}.{leaf}"


def _hf_name(key: str) -> str:
    """``bert.``-prefixed and TF-era names (``LayerNorm.gamma``/``beta``) in today's ``BertModel`` form."""
    key = key.removeprefix("bert.")
    return re.sub(
        r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    )
