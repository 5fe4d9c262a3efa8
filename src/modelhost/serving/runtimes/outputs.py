"""From a model's raw output to the version's named outputs: the same for every runtime."""

from __future__ import annotations

import numpy as np

from modelhost.registry.manifest import Manifest


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32, copy=False)
    return probs


class ClassifierOutputs:
    """Logits -> ``label`` + ``probabilities`` for classifiers; ``prediction`` for regression.

    What the manifest fixes (the task, the label of each class) is worked out once per loaded
    version: this runs on every batch, on the serving thread, holding the GIL.
    """

    def __init__(self, manifest: Manifest) -> None:
        self._regression = manifest.task == "regression" or not manifest.classes
        self._binary = manifest.task == "binary"
        self._classes = np.asarray(manifest.classes or [])

    def __call__(self, out: np.ndarray) -> dict[str, np.ndarray]:
        if self._regression:
            return {"prediction": out.reshape(len(out), -1)[:, 0].astype(np.float32)}
        if self._binary:  # one logit: sigmoid gives the second class's probability
            positive = (1.0 / (1.0 + np.exp(-out.reshape(len(out))))).astype(np.float32, copy=False)
            probs = np.empty((len(positive), 2), dtype=np.float32)
            probs[:, 0] = 1.0 - positive
            probs[:, 1] = positive
            chosen = (probs[:, 1] > probs[:, 0]).astype(np.intp)  # argmax: a tie picks the first
        else:
            probs = softmax(out)
            chosen = probs.argmax(axis=-1)
        return {"label": self._classes[chosen], "probabilities": probs}
