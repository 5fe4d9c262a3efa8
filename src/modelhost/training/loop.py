"""The training loop. ``Trainer`` owns one run's model, optimiser, schedule, RNG streams and
position in the data; ``fit`` drives it: steps, per-epoch evaluation, early stopping,
checkpoints and the cancel check.

Exactness: the order of the examples in epoch ``e`` is a function of (seed, e) alone, and
every random stream a step draws from (dropout: torch's global generator; augmentation:
its own generator) is in the checkpoint, so a run resumed from step k takes the same steps
as one never stopped, and ends with bitwise-equal weights on the same machine.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from modelhost.nn import build_model
from modelhost.training import metrics as m
from modelhost.training.checkpoints import Checkpoint, CheckpointStore
from modelhost.training.data import PreparedData
from modelhost.training.optim import Loss, Schedule, make_optimizer
from modelhost.training.spec import TrainSpec

# on_progress(step, total_steps, epoch | None, metrics) -> True to stop (cancel requested)
ProgressFn = Callable[[int, int, int | None, dict[str, float]], bool]
EVAL_BATCH = 1024
_NO_AUTOCAST = contextlib.nullcontext()  # reusable: it holds no state


class Cancelled(Exception):
    """The run was cancelled between steps; its last checkpoint is kept."""


@dataclass
class FitResult:
    model: nn.Module
    config: dict[str, Any]
    metrics: dict[str, float]
    confusion: list[list[int]] | None = None
    stopped_early_at: int | None = None


@dataclass
class Position:
    """Where the run is: the next batch of ``epoch`` (1-based) is ``batch`` (0-based)."""

    epoch: int = 1
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0


@dataclass
class Best:
    """Early stopping's memory: the best monitored value, when, and the weights then."""

    value: float | None = None
    epoch: int = 0
    bad_epochs: int = 0
    weights: dict[str, torch.Tensor] = field(default_factory=dict)


def resolve_device(spec: TrainSpec) -> torch.device:
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for and no CUDA device is available")
    return torch.device("cuda" if spec.device != "cpu" and torch.cuda.is_available() else "cpu")


def _autocast_dtype(spec: TrainSpec, device: torch.device) -> torch.dtype | None:
    if spec.precision == "fp32":
        return None
    if spec.precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision: fp16 needs a CUDA device; use bf16 on a CPU")
        return torch.float16
    if spec.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None  # auto on a CPU: fp32 (bf16 autocast costs more than it saves on small models)


def _logits(out: torch.Tensor | tuple[torch.Tensor, Any]) -> torch.Tensor:
    """The GPT returns (logits, loss) as nanoGPT does; every other model its output alone."""
    return out[0] if isinstance(out, tuple) else out


class Trainer:
    """One run's training state. ``rank``/``world_size`` shard each global batch for DDP;
    wrap ``self.model`` before the first step in that case (see training/distributed.py)."""

    def __init__(self, spec: TrainSpec, data: PreparedData, rank: int = 0, world_size: int = 1) -> None:
        self.spec, self.data, self.rank, self.world_size = spec, data, rank, world_size
        self.device = resolve_device(spec)
        torch.manual_seed(spec.seed)  # initial weights and dropout
        self.config = {**data.arch_config, **spec.model.model_dump()}
        self.config.pop("architecture")
        self.model = build_model(spec.model.architecture, self.config).to(self.device)
        self.module = self.model  # the unwrapped model: what is saved and registered
        self.opt = make_optimizer(spec, self.model.parameters())
        self.loss = Loss(spec)
        self.n_train = len(data.x_train)
        rem = self.n_train % spec.batch_size
        if 0 < rem < world_size:  # too few left over to give every rank one: the epoch drops them
            self.steps_per_epoch = self.n_train // spec.batch_size
        else:
            self.steps_per_epoch = -(-self.n_train // spec.batch_size)
        self.total_steps = self.steps_per_epoch * spec.epochs
        self.schedule = Schedule(spec.schedule, self.opt, self.steps_per_epoch, self.total_steps)
        self.amp_dtype = _autocast_dtype(spec, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.augment_gen = torch.Generator().manual_seed(spec.seed + 1)
        self.pos, self.best = Position(), Best()
        self.x = torch.from_numpy(data.x_train).to(self.device)
        self.y = torch.from_numpy(data.y_train).to(self.device)
        es = spec.early_stopping
        self.monitor = es.metric if es else "val_loss"
        mode = es.mode if es else "auto"
        self.lower_is_better = m.lower_is_better(self.monitor) if mode == "auto" else mode == "min"

    # --- one step -----------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return _NO_AUTOCAST
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        if not self.module.training:  # evaluation switched it off (the module: DDP wraps it)
            self.model.train()
        if self.data.augment is not None:
            xb = self.data.augment(xb, self.augment_gen)
        self.opt.zero_grad(set_to_none=True)
        with self._autocast():
            value = self.loss(_logits(self.model(xb)), yb)
        if self.scaler is not None:
            self.scaler.scale(value).backward()
            self.scaler.unscale_(self.opt)
        else:
            value.backward()
        if self.spec.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.schedule.after_step()
        return float(value.detach())

    def batches(self, epoch: int, start: int) -> Iterator[torch.Tensor]:
        """This rank's example indices for each step of ``epoch`` from batch ``start`` on."""
        order = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(self.spec.seed + epoch))
        bs, world = self.spec.batch_size, self.world_size
        for i in range(start, self.steps_per_epoch):
            batch = order[i * bs : (i + 1) * bs]
            if world == 1:
                yield batch
            else:  # equal shards, so the mean of the ranks' gradients is the global batch's gradient
                yield batch[: len(batch) - len(batch) % world][self.rank :: world]

    def agree(self, stop: bool) -> bool:
        """Rank 0's decision (cancel, stop) for every rank, so all leave the loop together."""
        if self.world_size == 1:
            return stop
        flag = torch.tensor([1.0 if stop else 0.0])
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    # --- evaluation ---------------------------------------------------------------------

    @torch.inference_mode()
    def outputs(self, x: np.ndarray) -> np.ndarray:
        self.module.eval()
        chunks = []
        for i in range(0, len(x), EVAL_BATCH):
            xb = torch.from_numpy(x[i : i + EVAL_BATCH]).to(self.device)
            with self._autocast():
                chunks.append(_logits(self.module(xb)).float().cpu().numpy())
        return np.concatenate(chunks)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], np.ndarray | None]:
        """Metrics of the task on one split, and the confusion matrix for classifiers."""
        if len(x) == 0:
            return {}, None
        out = self.outputs(x)
        with torch.inference_mode():
            loss = float(self.loss(torch.from_numpy(out), torch.from_numpy(y)))
        task = self.spec.task
        if task == "classification":
            scores, confusion = m.classification_metrics(out, y)
            return {"loss": loss, **scores}, confusion
        if task == "binary":
            scores, confusion = m.binary_metrics(out, y)
            return {"loss": loss, **scores}, confusion
        if task == "language_model":
            return {"loss": loss, "perplexity": m.perplexity(loss)}, None
        return {"loss": loss, **m.regression_metrics(out, y)}, None

    # --- early stopping -----------------------------------------------------------------

    def _improved(self, value: float) -> bool:
        best, delta = self.best.value, self.spec.early_stopping.min_delta if self.spec.early_stopping else 0
        if best is None:
            return True
        return value < best - delta if self.lower_is_better else value > best + delta

    def end_epoch(self, epoch_metrics: dict[str, float]) -> bool:
        """Book-keeping after an epoch's evaluation; True when early stopping says stop."""
        monitored = epoch_metrics.get(self.monitor)
        self.schedule.after_epoch(monitored, self.lower_is_better)
        es = self.spec.early_stopping
        if es is None:
            return False
        if monitored is None:
            raise ValueError(
                f"early_stopping.metric: {self.monitor!r} is not measured; "
                f"this run measures {', '.join(sorted(epoch_metrics))}"
            )
        if self._improved(monitored):
            self.best = Best(monitored, self.pos.epoch, 0, self._weights() if es.restore_best else {})
            return False
        self.best.bad_epochs += 1
        return self.best.bad_epochs >= es.patience

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    # --- checkpoints --------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        ckpt = Checkpoint()
        ckpt.put_tensors("model", self.module.state_dict())
        ckpt.put_optimizer(self.opt)
        ckpt.put_tensors("best", self.best.weights)
        ckpt.tensors["rng.torch"] = torch.get_rng_state()
        ckpt.tensors["rng.augment"] = self.augment_gen.get_state()
        if self.device.type == "cuda":
            ckpt.tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        ckpt.state.update(
            position=vars(self.pos),
            best={"value": self.best.value, "epoch": self.best.epoch, "bad_epochs": self.best.bad_epochs},
            schedule=self.schedule.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
        )
        return ckpt

    def restore(self, ckpt: Checkpoint) -> None:
        self.module.load_state_dict(ckpt.get_tensors("model"), strict=True)
        ckpt.load_optimizer(self.opt)
        self.schedule.load_state_dict(ckpt.state["schedule"])
        torch.set_rng_state(ckpt.tensors["rng.torch"])
        self.augment_gen.set_state(ckpt.tensors["rng.augment"])
        if "rng.cuda" in ckpt.tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt.tensors["rng.cuda"], self.device)
        if self.scaler is not None and ckpt.state.get("scaler"):
            self.scaler.load_state_dict(ckpt.state["scaler"])
        self.pos = Position(**ckpt.state["position"])
        self.best = Best(**ckpt.state["best"], weights=ckpt.get_tensors("best"))


def fit(
    spec: TrainSpec,
    data: PreparedData,
    on_progress: ProgressFn,
    checkpoints: CheckpointStore | None = None,
    trainer: Trainer | None = None,
    on_resume: Callable[[Position], None] | None = None,
) -> FitResult:
    """Train to the end (or early stop), resuming from ``checkpoints`` when it holds one.

    Raises Cancelled (after saving a checkpoint) when ``on_progress`` asks to stop, and
    FloatingPointError when the loss stops being finite.
    """
    t = trainer or Trainer(spec, data)
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        t.restore(saved)
        if on_resume is not None:
            on_resume(t.pos)
    last_saved = t.pos.step if saved is not None else -1

    def save() -> None:
        nonlocal last_saved
        if checkpoints is not None and t.rank == 0 and last_saved != t.pos.step:
            checkpoints.save(t.checkpoint())
            last_saved = t.pos.step

    def stop_if_asked(asked: bool) -> None:
        if t.agree(asked):
            save()  # a cancelled run keeps where it got to
            raise Cancelled(f"cancelled at step {t.pos.step}")

    every, stopped_early = spec.checkpoint_every, None
    epoch_metrics: dict[str, float] = {}
    while t.pos.epoch <= spec.epochs:
        p = t.pos
        for idx in t.batches(p.epoch, p.batch):
            loss = t.train_step(t.x[idx], t.y[idx])
            p.batch, p.step = p.batch + 1, p.step + 1
            p.loss_sum, p.loss_count = p.loss_sum + loss, p.loss_count + 1
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {p.step}; lower optimizer.lr")
            if every and p.step % every == 0:
                save()
            if p.batch < t.steps_per_epoch:  # the epoch's own report covers its last step
                lr = t.opt.param_groups[0]["lr"]
                stop_if_asked(on_progress(p.step, t.total_steps, None, {"train_loss": loss, "lr": lr}))
        epoch_metrics = {"train_loss": p.loss_sum / max(1, p.loss_count)}
        scores, _ = t.evaluate(data.x_val, data.y_val)
        epoch_metrics.update({f"val_{k}": v for k, v in scores.items()})
        early_stop = t.end_epoch(epoch_metrics)
        t.pos = Position(epoch=p.epoch + 1, step=p.step)
        if not every:
            save()
        stop_if_asked(on_progress(p.step, t.total_steps, p.epoch, epoch_metrics))
        if early_stop:
            stopped_early = p.epoch
            break
    return _result(t, epoch_metrics, stopped_early)


def _result(t: Trainer, epoch_metrics: dict[str, float], stopped_early: int | None) -> FitResult:
    if t.best.weights:  # early stopping's best epoch, not the last one
        t.module.load_state_dict(t.best.weights)
        epoch_metrics = {**epoch_metrics, f"best_{t.monitor}": float(t.best.value or 0.0)}
    final = dict(epoch_metrics)
    scores, confusion = t.evaluate(t.data.x_test, t.data.y_test)
    final.update({f"test_{k}": v for k, v in scores.items()})
    if confusion is None and t.spec.task in ("classification", "binary"):  # no test split: validation's
        _, confusion = t.evaluate(t.data.x_val, t.data.y_val)
    return FitResult(
        model=t.module,
        config=t.config,
        metrics=final,
        confusion=confusion.tolist() if confusion is not None else None,
        stopped_early_at=stopped_early,
    )
