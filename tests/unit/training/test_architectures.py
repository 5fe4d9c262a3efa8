"""Every architecture trains from a spec on its kind of data, at a small size, learns, and the
version it packages answers raw inputs (pixels, text, features) the way the trained model did."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load
from sklearn.datasets import load_digits

from modelhost.datasets.formats import Table
from modelhost.datasets.sources import ArraySource, ImageSource, TableSource, TextSource
from modelhost.registry.manifest import TOKENIZER_FILE, WEIGHTS_FILE
from modelhost.serving.runtimes.torch import TorchRuntime
from modelhost.training.data import prepare
from modelhost.training.loop import fit
from modelhost.training.package import package
from modelhost.training.spec import parse_spec


def never(*_args) -> bool:
    return False


def train(source, **spec):
    s = parse_spec({"dataset": "d", "target": "y", **spec})
    data = prepare(source, s)
    result = fit(s, data, never)
    manifest, files = package(s, data, result, run_id=1, dataset_sha256="0" * 64)
    return data, result, TorchRuntime(manifest, files[WEIGHTS_FILE]), manifest, files


def test_cnn_on_digit_images_with_augmentation() -> None:
    digits = load_digits()
    images = [(im * 255 / 16).astype(np.uint8) for im in digits.images]  # 8x8 grey, 0..255
    source = ImageSource(
        images=images, labels=[str(t) for t in digits.target], classes=[str(i) for i in range(10)]
    )
    data, result, runtime, manifest, _ = train(
        source,
        model={"architecture": "cnn", "channels": [16, 32], "dense": 32},
        preprocessing={"image_size": 16, "augment": {"shift": 1, "rotate": 10}},
        epochs=4,
        batch_size=32,
        optimizer={"lr": 0.003},
    )
    assert data.x_train.shape[1:] == (1, 16, 16) and data.augment is not None
    assert result.metrics["val_accuracy"] > 0.9
    assert manifest.config["in_channels"] == 1 and manifest.config["image_size"] == 16
    assert np.asarray(result.confusion).sum() == len(data.x_val)
    raw = np.stack(images[:20])  # clients send the raw 8x8 pixels; the runtime resizes
    out = runtime.predict({"image": raw})
    with torch.inference_mode():
        expected = result.model.eval()(torch.from_numpy(data.preprocessing.transform(raw))).argmax(-1)
    assert (out["label"] == np.asarray(data.classes)[expected.numpy()]).all()
    assert (out["label"] == digits.target[:20]).mean() > 0.8


def test_lstm_classifies_sequences() -> None:
    rng = np.random.default_rng(0)
    n, steps = 600, 16
    freq = rng.integers(0, 2, n)  # class 0: slow wave, class 1: fast wave
    t = np.arange(steps)[None, :] * np.where(freq == 0, 0.3, 1.2)[:, None] + rng.uniform(0, 6, (n, 1))
    x = np.sin(t)[..., None].astype(np.float32) + rng.normal(0, 0.1, (n, steps, 1)).astype(np.float32)
    _, result, runtime, _, _ = train(
        ArraySource({"x": x, "y": freq}),
        model={"architecture": "lstm", "hidden_size": 16, "bidirectional": True},
        epochs=8,
        batch_size=32,
        optimizer={"lr": 0.01},
    )
    assert result.metrics["val_accuracy"] > 0.9
    out = runtime.predict({"input": x[:50]})
    assert (out["label"] == freq[:50]).mean() > 0.9


def test_regression_mlp_one_ten_one_fits_a_curve() -> None:
    x = np.linspace(-3, 3, 400, dtype=np.float32)[:, None]
    y = np.sin(x[:, 0]).astype(np.float32)
    _, result, runtime, _, _ = train(
        ArraySource({"x": x, "y": y}),
        task="regression",
        model={"hidden_sizes": [10], "activation": "tanh"},
        loss={"name": "mse"},
        optimizer={"name": "adam", "lr": 0.01},
        epochs=150,
        batch_size=32,
    )
    assert result.metrics["val_r2"] > 0.95
    out = runtime.predict({"input": np.array([[0.0], [1.5]], dtype=np.float32)})
    assert np.allclose(out["prediction"], np.sin([0.0, 1.5]), atol=0.15)


def test_binary_classifier_100_64_32_1_with_sigmoid_and_bce() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 100)).astype(np.float32)
    y = (x @ rng.normal(size=100) > 0).astype(np.int64)
    _, result, runtime, manifest, files = train(
        ArraySource({"x": x, "y": y}),
        task="binary",
        model={"hidden_sizes": [64, 32]},
        epochs=15,
        batch_size=64,
    )
    shapes = {k: tuple(v.shape) for k, v in load(files[WEIGHTS_FILE]).items()}
    assert shapes["net.0.weight"] == (64, 100) and shapes["net.4.weight"] == (1, 32)  # 100→64→32→1
    assert result.metrics["val_accuracy"] > 0.85 and 0 < result.metrics["val_f1"] <= 1
    out = runtime.predict({"input": x[:100]})
    assert out["probabilities"].shape == (100, 2) and np.allclose(out["probabilities"].sum(1), 1)
    assert (out["label"] == y[:100]).mean() > 0.85
    assert manifest.task == "binary" and manifest.classes == [0, 1]


def _reviews(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    good, bad = ["great", "lovely", "superb", "fine"], ["awful", "dull", "broken", "poor"]
    filler = ["the", "film", "was", "really", "quite", "and", "plot", "cast"]
    texts, labels = [], []
    for _ in range(n):
        positive = bool(rng.integers(0, 2))
        words = [*rng.choice(filler, 5), str(rng.choice(good if positive else bad))]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append("pos" if positive else "neg")
    return texts, labels


def test_transformer_classifies_raw_text() -> None:
    texts, labels = _reviews(800, 0)
    table = Table(
        columns=["text", "y"],
        types=["str", "str"],
        rows=[[t, lab] for t, lab in zip(texts, labels, strict=True)],
    )
    _, result, runtime, manifest, files = train(
        TableSource(table),
        features=["text"],
        model={"architecture": "transformer", "d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64},
        preprocessing={"tokenizer": "char", "max_length": 64},
        epochs=6,
        batch_size=32,
        optimizer={"lr": 0.003},
    )
    assert result.metrics["val_accuracy"] > 0.9
    assert TOKENIZER_FILE in files and manifest.signature.inputs[0].datatype == "BYTES"
    test_texts, test_labels = _reviews(50, 1)
    out = runtime.predict({"text": np.array(test_texts, dtype=object)})
    assert (out["label"] == np.array(test_labels)).mean() > 0.9


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_gpt_learns_a_corpus(tokenizer) -> None:
    text = "the quick brown fox jumps over the lazy dog. " * 150
    data, result, _, manifest, files = train(
        TextSource(text),
        target=None,
        task="language_model",
        model={"architecture": "gpt", "block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32},
        preprocessing={"tokenizer": tokenizer, "vocab_size": 300 if tokenizer == "bpe" else None},
        epochs=3 if tokenizer == "char" else 30,  # BPE packs the text into ~5x fewer tokens
        batch_size=16,
        optimizer={"lr": 0.005},
    )
    assert data.x_train.shape[1] == 32 and (data.y_train[:, :-1] == data.x_train[:, 1:]).all()
    uniform = np.log(manifest.config["vocab_size"])
    assert result.metrics["val_loss"] < 0.5 * uniform  # far better than guessing
    assert result.metrics["val_perplexity"] == pytest.approx(np.exp(result.metrics["val_loss"]), rel=1e-6)
    assert TOKENIZER_FILE in files and manifest.config["block_size"] == 32
