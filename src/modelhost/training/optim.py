"""Optimiser, learning-rate schedule and loss from a spec. Every piece keeps its state in a
``state_dict`` of plain values and tensors, so a checkpoint can hold it without pickle."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from modelhost.training.spec import ScheduleSpec, TrainSpec


def make_optimizer(spec: TrainSpec, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    o = spec.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


class Schedule:
    """The learning rate over a run: ``after_step()`` once per optimiser step, ``after_epoch()``
    once per epoch with the monitored metric (reduce-on-plateau listens to that one)."""

    def __init__(self, spec: ScheduleSpec, opt: torch.optim.Optimizer, steps_per_epoch: int, total: int):
        self.spec = spec
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.per_step: torch.optim.lr_scheduler.LambdaLR | None = None
        if spec.name == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=spec.factor, patience=spec.patience
            )
        elif spec.name != "constant" or spec.warmup_steps:
            self.per_step = torch.optim.lr_scheduler.LambdaLR(opt, _multiplier(spec, steps_per_epoch, total))

    def after_step(self) -> None:
        if self.per_step is not None:
            self.per_step.step()

    def after_epoch(self, monitored: float | None, lower_is_better: bool) -> None:
        if self.plateau is not None and monitored is not None:
            self.plateau.step(monitored if lower_is_better else -monitored)

    def state_dict(self) -> dict[str, object]:
        active = self.plateau or self.per_step
        return active.state_dict() if active is not None else {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        active = self.plateau or self.per_step
        if active is not None:
            active.load_state_dict(state)


def _multiplier(spec: ScheduleSpec, steps_per_epoch: int, total: int):  # type: ignore[no-untyped-def]
    warmup = spec.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if spec.name == "step":
            return float(spec.gamma ** (step // (spec.step_size * steps_per_epoch)))
        if spec.name == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def loss_name(spec: TrainSpec) -> str:
    if spec.loss.name != "auto":
        return spec.loss.name
    return {"binary": "bce", "regression": "mse"}.get(spec.task, "cross_entropy")


class Loss(nn.Module):
    """The spec's loss, shaped for its task: logits (B, C) or (B, T, V) against class ids,
    one logit against 0/1, or predictions against targets of the same shape."""

    def __init__(self, spec: TrainSpec) -> None:
        super().__init__()
        self.name = loss_name(spec)
        self.smoothing = spec.loss.label_smoothing

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.name == "cross_entropy":
            return nn.functional.cross_entropy(
                out.flatten(0, -2), y.flatten(), label_smoothing=self.smoothing
            )
        out = out.reshape(y.shape).float()
        if self.name == "bce":
            return nn.functional.binary_cross_entropy_with_logits(out, y)
        if self.name == "mae":
            return nn.functional.l1_loss(out, y)
        return nn.functional.mse_loss(out, y)
