"""Checkpoints: everything a run needs to continue exactly where it stopped — model,
optimiser, schedule, RNG states, data position — in ONE safetensors file (tensors) whose
metadata holds the rest as JSON. One file, so a checkpoint is replaced atomically; no pickle,
so loading one can never run code (``torch.save`` checkpoints can).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load, save

from modelhost.artifacts import ArtifactStore
from modelhost.errors import ArtifactCorrupted

_META_KEY = "modelhost.checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """Tensors by dotted name (``model.fc.weight``, ``optim.3.exp_avg``, ``rng.torch``) and
    JSON-able state (position, schedule, optimiser hyper-parameters, early stopping)."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def put_tensors(self, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        # clone: safetensors refuses tensors sharing memory (tied embeddings) and views
        self.tensors.update({f"{prefix}.{k}": v.detach().clone().contiguous() for k, v in tensors.items()})

    def get_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def to_bytes(self) -> bytes:
        meta = json.dumps({"format_version": FORMAT_VERSION, **self.state})
        return save(self.tensors, metadata={_META_KEY: meta})

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        try:
            tensors = load(data)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
            state = json.loads(header["__metadata__"][_META_KEY])
        except Exception as e:  # any failure to parse means the file is not ours or was damaged
            raise ArtifactCorrupted(f"checkpoint is unreadable: {e}") from e
        if state.pop("format_version", None) != FORMAT_VERSION:
            raise ArtifactCorrupted("checkpoint was written by an incompatible version of modelhost")
        return cls(tensors=tensors, state=state)

    # --- optimiser state: tensors to the file, numbers and hyper-parameters to JSON -------

    def put_optimizer(self, opt: torch.optim.Optimizer) -> None:
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, st in sd["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    self.tensors[f"optim.{pid}.{k}"] = v.detach().clone().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[k] = v
        self.state["optimizer"] = {"param_groups": sd["param_groups"], "scalars": scalars}

    def load_optimizer(self, opt: torch.optim.Optimizer) -> None:
        saved = self.state["optimizer"]
        state: dict[int, dict[str, Any]] = {}
        for name, v in self.get_tensors("optim").items():
            pid, key = name.split(".", 1)
            state.setdefault(int(pid), {})[key] = v
        for pid, values in saved["scalars"].items():
            state.setdefault(int(pid), {}).update(values)
        # JSON has no tuples; Adam's betas were one
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in saved["param_groups"]]
        opt.load_state_dict({"state": state, "param_groups": groups})


class CheckpointStore:
    """The latest checkpoint of one run, in the artifact store; a new one replaces the old.

    ``may_write`` is asked before each save: a worker whose run was taken back (its lease
    ran out) must not overwrite the checkpoints of the attempt that replaced it.
    """

    def __init__(self, store: ArtifactStore, run_id: int, may_write: Callable[[], bool] = lambda: True):
        self.store, self.key, self.may_write = (
            store,
            f"checkpoints/run-{run_id}/latest.safetensors",
            may_write,
        )

    def save(self, ckpt: Checkpoint) -> bool:
        """Store ``ckpt``; False (nothing written) when ``may_write`` says no."""
        if not self.may_write():
            return False
        self.store.put(self.key, ckpt.to_bytes())
        return True

    def load(self) -> Checkpoint | None:
        if not self.store.exists(self.key):
            return None
        return Checkpoint.from_bytes(self.store.get(self.key))

    def delete(self) -> None:
        self.store.delete_prefix(self.key.rsplit("/", 1)[0] + "/")
