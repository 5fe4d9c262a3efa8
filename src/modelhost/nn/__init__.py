"""Architectures, registered by name so specs and manifests can name them.

``build_model(name, config)`` fills in config keys a manifest written by an older
version lacks, from the dataclass defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from modelhost.nn.mlp import MLP, MLPConfig

ARCHITECTURES: dict[str, tuple[type[nn.Module], type[Any]]] = {"mlp": (MLP, MLPConfig)}


def build_model(architecture: str, config: dict[str, Any]) -> nn.Module:
    try:
        module_cls, config_cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None
    known = {f.name for f in dataclasses.fields(config_cls)}
    return module_cls(config_cls(**{k: v for k, v in config.items() if k in known}))


__all__ = ["ARCHITECTURES", "MLP", "MLPConfig", "build_model"]
