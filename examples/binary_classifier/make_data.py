"""100 features, a label from a hidden linear rule plus noise: NPZ with x (N, 100), y (N,).

python examples/binary_classifier/make_data.py binary.npz
modelhost datasets upload binary.npz --name binary100
"""

import sys

import numpy as np


def make(n: int = 3000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 100)).astype(np.float32)
    w = rng.normal(size=100)
    y = (x @ w + rng.normal(0, 2.0, n) > 0).astype(np.int64)
    return {"x": x, "y": y}


if __name__ == "__main__":
    np.savez(sys.argv[1] if len(sys.argv) > 1 else "binary.npz", **make())
