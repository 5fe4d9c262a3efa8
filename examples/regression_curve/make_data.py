"""A noisy curve y = sin(x) + x/4 on [-3, 3], as a CSV with columns x and y.

python examples/regression_curve/make_data.py curve.csv
modelhost datasets upload curve.csv --name curve --target y
"""

import sys

import numpy as np


def make(n: int = 500, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, n)
    y = np.sin(x) + x / 4 + rng.normal(0, 0.05, n)
    return "x,y\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(x, y, strict=True))


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "curve.csv", "w") as f:
        f.write(make())
