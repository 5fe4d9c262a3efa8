"""The training loop a PyTorch user writes by hand: the baseline of ``bench/training.py``.

Index batching over tensors already in memory (no DataLoader), then per batch zero_grad →
forward → loss → backward → (clip) → step, a validation pass after every epoch and a test
pass at the end. Nothing here imports modelhost: the benchmark hands it the same model,
optimiser, arrays and loss that the modelhost run gets.

The batch order of epoch ``e`` comes from a generator seeded with ``seed + e``, the order
modelhost's loop uses, so from the same initial weights both loops take the same steps and
end at the same validation loss. The benchmark checks that: it shows both did the same work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

EVAL_BATCH = 1024
Metric = Literal["accuracy", "binary_accuracy", "none"]


XY = tuple[np.ndarray, np.ndarray]
"""Inputs and targets of one split."""


@dataclass
class PlainResult:
    val_loss: float
    val_metric: float | None
    test_loss: float | None
    test_metric: float | None
    train_loss: list[float] = field(default_factory=list)
    """Mean training loss of each epoch."""


def logits_of(out: torch.Tensor | tuple[torch.Tensor, object]) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # a GPT returns (logits, loss)


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_xy: XY,
    val_xy: XY,
    test_xy: XY,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    metric: Metric,
    grad_clip: float | None = None,
) -> PlainResult:
    x, y = torch.from_numpy(train_xy[0]), torch.from_numpy(train_xy[1])
    n, history = len(x), []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        total, steps = 0.0, 0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(logits_of(model(x[idx])), y[idx])
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            total, steps = total + loss.item(), steps + 1
        history.append(total / steps)
        val_loss, val_metric = evaluate(model, loss_fn, *val_xy, metric)
    test_loss, test_metric = evaluate(model, loss_fn, *test_xy, metric) if len(test_xy[0]) else (None, None)
    return PlainResult(val_loss, val_metric, test_loss, test_metric, history)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: np.ndarray,
    y: np.ndarray,
    metric: Metric,
) -> tuple[float, float | None]:
    """Mean loss over ``x`` and the metric (accuracy), in batches of EVAL_BATCH."""
    model.eval()
    loss_sum, right = 0.0, 0
    for i in range(0, len(x), EVAL_BATCH):
        xb, yb = torch.from_numpy(x[i : i + EVAL_BATCH]), torch.from_numpy(y[i : i + EVAL_BATCH])
        out = logits_of(model(xb))
        loss_sum += loss_fn(out, yb).item() * len(xb)
        if metric == "accuracy":
            right += int((out.argmax(-1) == yb).sum())
        elif metric == "binary_accuracy":
            right += int(((out.reshape(yb.shape) > 0).float() == yb).sum())
    return loss_sum / len(x), (right / len(x) if metric != "none" else None)
