"""Sequences of 24 noisy sine samples; the class is the wave's frequency band (slow, medium,
fast). Writes an NPZ with ``x`` (N, 24, 1) and ``y`` (N,).

    python examples/lstm_sequences/make_data.py waves.npz
    modelhost datasets upload waves.npz --name waves
"""

import sys

import numpy as np


def make(n: int = 1500, steps: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    freq = np.array([0.2, 0.6, 1.4])[y] * rng.uniform(0.85, 1.15, n)
    t = np.arange(steps)[None, :] * freq[:, None] + rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.sin(t) + rng.normal(0, 0.15, (n, steps))
    return {"x": x[..., None].astype(np.float32), "y": y}


if __name__ == "__main__":
    np.savez(sys.argv[1] if len(sys.argv) > 1 else "waves.npz", **make())
