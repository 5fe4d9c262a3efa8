"""The training loop: small, CPU-testable pieces (``train_step``, ``evaluate``) and ``fit``,
which owns cadence: per-step loss, per-epoch validation, and the cancel check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modelhost.nn import build_model
from modelhost.training.data import PreparedData
from modelhost.training.spec import TrainSpec

# on_progress(step, total_steps, epoch | None, metrics) -> True to stop (cancel requested)
ProgressFn = Callable[[int, int, int | None, dict[str, float]], bool]


class Cancelled(Exception):
    """The run was cancelled between steps."""


@dataclass
class FitResult:
    model: nn.Module
    config: dict[str, object]
    metrics: dict[str, float]


def make_optimizer(spec: TrainSpec, params: object) -> torch.optim.Optimizer:
    o = spec.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)  # type: ignore[arg-type]
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)  # type: ignore[arg-type]


def loss_fn(task: str) -> nn.Module:
    return nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()


def train_step(
    model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, opt: torch.optim.Optimizer, loss: nn.Module
) -> float:
    model.train()
    opt.zero_grad(set_to_none=True)
    out = model(xb)
    value = loss(
        out.squeeze(-1) if out.shape[-1] == 1 and yb.dim() == 1 and yb.is_floating_point() else out, yb
    )
    value.backward()
    opt.step()
    return float(value.detach())


@torch.inference_mode()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, task: str) -> dict[str, float]:
    if len(x) == 0:
        return {}
    model.eval()
    out = model(torch.from_numpy(x))
    if task == "classification":
        yt = torch.from_numpy(y)
        return {
            "loss": float(nn.functional.cross_entropy(out, yt)),
            "accuracy": float((out.argmax(-1) == yt).float().mean()),
        }
    pred = out.squeeze(-1).numpy()
    err = pred - y
    return {
        "loss": float(np.mean(err**2)),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
    }


def fit(spec: TrainSpec, data: PreparedData, on_progress: ProgressFn) -> FitResult:
    torch.manual_seed(spec.seed)
    out_features = len(data.classes) if data.classes else 1
    config = {"in_features": data.x_train.shape[1], "out_features": out_features, **spec.model.model_dump()}
    config.pop("architecture")
    model = build_model(spec.model.architecture, config)
    opt, loss = make_optimizer(spec, model.parameters()), loss_fn(spec.task)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    steps_per_epoch = -(-len(x) // spec.batch_size)
    total, step = steps_per_epoch * spec.epochs, 0
    gen = torch.Generator().manual_seed(spec.seed)
    metrics: dict[str, float] = {}
    for epoch in range(1, spec.epochs + 1):
        perm, losses = torch.randperm(len(x), generator=gen), []
        for i in range(steps_per_epoch):
            idx = perm[i * spec.batch_size : (i + 1) * spec.batch_size]
            losses.append(train_step(model, x[idx], y[idx], opt, loss))
            step += 1
            if not np.isfinite(losses[-1]):
                raise FloatingPointError(f"loss became {losses[-1]} at step {step}; lower optimizer.lr")
            if i < steps_per_epoch - 1 and on_progress(step, total, None, {"train_loss": losses[-1]}):
                raise Cancelled(f"cancelled at step {step}")
        metrics = {"train_loss": float(np.mean(losses))}
        metrics.update({f"val_{k}": v for k, v in evaluate(model, data.x_val, data.y_val, spec.task).items()})
        if on_progress(step, total, epoch, metrics):
            raise Cancelled(f"cancelled at step {step}")
    return FitResult(model=model, config=config, metrics=metrics)
