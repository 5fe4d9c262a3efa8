"""From a model's raw output to the version's named outputs: the same for every runtime."""

from __future__ import annotations

import numpy as np

from modelhost.registry.manifest import Manifest


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probs


def classifier_outputs(manifest: Manifest, out: np.ndarray) -> dict[str, np.ndarray]:
    """Logits -> ``label`` + ``probabilities`` for classifiers; ``prediction`` for regression."""
    if manifest.task == "regression" or not manifest.classes:
        return {"prediction": out.reshape(len(out), -1)[:, 0].astype(np.float32)}
    if manifest.task == "binary":  # one logit: sigmoid gives the second class's probability
        positive = (1.0 / (1.0 + np.exp(-out.reshape(len(out))))).astype(np.float32)
        probs = np.stack([1.0 - positive, positive], axis=1)
    else:
        probs = softmax(out)
    return {"label": np.asarray(manifest.classes)[probs.argmax(axis=-1)], "probabilities": probs}
