"""Short product reviews labelled pos/neg, as JSONL ({"text": ..., "label": ...} per line).

python examples/text_classifier/make_data.py reviews.jsonl
modelhost datasets upload reviews.jsonl --name reviews --target label
"""

import json
import sys

import numpy as np

GOOD = ["great", "lovely", "superb", "works well", "would buy again", "sturdy", "fast delivery"]
BAD = ["awful", "broke after a week", "flimsy", "would not recommend", "too slow", "poor fit"]
FILLER = ["the", "this", "kettle", "lamp", "charger", "really", "quite", "and", "so", "it", "was", "is"]


def make(n: int = 2000, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        positive = bool(rng.integers(0, 2))
        words = [*rng.choice(FILLER, rng.integers(3, 8)), str(rng.choice(GOOD if positive else BAD))]
        rng.shuffle(words)
        lines.append(json.dumps({"text": " ".join(words), "label": "pos" if positive else "neg"}))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "reviews.jsonl", "w") as f:
        f.write(make())
