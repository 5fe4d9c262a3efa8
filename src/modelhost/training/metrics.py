"""Evaluation metrics per task, from a split's model outputs (numpy; no torch state touched).

Scalars are what the store logs per epoch; the confusion matrix is returned apart, since it
is a table, not a number.
"""

from __future__ import annotations

import math

import numpy as np

LOWER_IS_BETTER = ("loss", "mae", "rmse", "mse", "perplexity")


def lower_is_better(metric: str) -> bool:
    return metric.split("_")[-1] in LOWER_IS_BETTER


def confusion_matrix(pred: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: the true class; columns: the predicted one."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (true, pred), 1)
    return m


def _precision_recall_f1(m: np.ndarray) -> dict[str, float]:
    """Macro averages over the classes: each class counts the same, however rare."""
    tp = np.diag(m).astype(np.float64)
    predicted, actual = m.sum(axis=0), m.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = actual > 0  # classes absent from this split would drag the mean to 0 for nothing
    return {
        "precision": float(precision[present].mean()),
        "recall": float(recall[present].mean()),
        "f1": float(f1[present].mean()),
    }


def classification_metrics(logits: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    pred = logits.argmax(-1)
    m = confusion_matrix(pred, y, logits.shape[-1])
    return {"accuracy": float((pred == y).mean()), **_precision_recall_f1(m)}, m


def binary_metrics(logits: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    pred = (logits.reshape(-1) > 0).astype(np.int64)
    m = confusion_matrix(pred, y.reshape(-1).astype(np.int64), 2)
    tp, fp, fn = m[1, 1], m[0, 1], m[1, 0]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float((pred == y.reshape(-1)).mean()),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }, m


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    err = pred.reshape(y.shape).astype(np.float64) - y
    total = float(((y - y.mean(axis=0)) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": 1.0 - float((err**2).sum()) / total if total > 0 else 0.0,
    }


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # exp overflows a float past ~709
