"""Architectures, registered by name so specs and manifests can name them.

``build_model(name, config)`` fills in config keys a manifest written by an older
version lacks, from the dataclass defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from modelhost.nn.bert import Bert, BertConfig
from modelhost.nn.cnn import CNN, CNNConfig
from modelhost.nn.gpt import GPT, GPTConfig
from modelhost.nn.mlp import MLP, MLPConfig
from modelhost.nn.rnn import GRU, LSTM, RNNConfig
from modelhost.nn.transformer import TransformerClassifier, TransformerClassifierConfig

ARCHITECTURES: dict[str, tuple[type[nn.Module], type[Any]]] = {
    "mlp": (MLP, MLPConfig),
    "cnn": (CNN, CNNConfig),
    "lstm": (LSTM, RNNConfig),
    "gru": (GRU, RNNConfig),
    "transformer": (TransformerClassifier, TransformerClassifierConfig),
    "gpt": (GPT, GPTConfig),
    "bert": (Bert, BertConfig),
}


def build_model(architecture: str, config: dict[str, Any]) -> nn.Module:
    try:
        module_cls, config_cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None
    known = {f.name for f in dataclasses.fields(config_cls)}
    return module_cls(config_cls(**{k: v for k, v in config.items() if k in known}))


__all__ = [
    "ARCHITECTURES",
    "CNN",
    "GPT",
    "GRU",
    "LSTM",
    "MLP",
    "Bert",
    "BertConfig",
    "CNNConfig",
    "GPTConfig",
    "MLPConfig",
    "RNNConfig",
    "TransformerClassifier",
    "TransformerClassifierConfig",
    "build_model",
]
