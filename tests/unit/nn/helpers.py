"""Shared checks for the architecture tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def overfit(
    model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], steps: int, lr: float = 1e-2
) -> tuple[float, float]:
    """(loss before, loss after) ``steps`` Adam steps on one fixed batch, both measured in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.eval()
    with torch.no_grad():
        before = float(loss_of(model))
    model.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_of(model).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(loss_of(model))
    return before, after
