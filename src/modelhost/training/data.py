"""From a dataset and a spec to tensors: inputs, targets, a seeded train/validation/test split,
and preprocessing fitted on the training split only (saved with the version, so serving
applies exactly the same).

Which path a dataset takes follows from its kind and the spec's architecture:
tables and 2-D arrays → features (scaled, one-hot); a text column → token ids; 3-D arrays →
sequences; images (or image-shaped arrays for a CNN) → normalised pixels; a text corpus →
next-token windows for a language model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from modelhost.artifacts import ArtifactStore
from modelhost.datasets.formats import Table
from modelhost.datasets.images import ImagePreprocessing
from modelhost.datasets.preprocessing import NoPreprocessing, Preprocessing, TabularPreprocessing
from modelhost.datasets.service import get_dataset
from modelhost.datasets.sources import (
    ArraySource,
    DataSource,
    ImageSource,
    TableSource,
    TextSource,
    load_source,
)
from modelhost.datasets.tokenizers import TextPreprocessing
from modelhost.errors import InvalidInput
from modelhost.registry.manifest import TensorSpec
from modelhost.training.spec import TrainSpec

Labels = list[int] | list[float] | list[str]
AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
MAX_CLASSES = 10_000


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class PreparedData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    preprocessing: Preprocessing
    classes: Labels | None
    input: TensorSpec
    """What clients send: raw features, pixels or text, before preprocessing."""
    arch_config: dict[str, Any] = field(default_factory=dict)
    """Sizes the data decides (inputs, outputs, vocabulary), merged into the model's config."""
    augment: AugmentFn | None = None


@dataclass(frozen=True)
class Given:
    """How many examples at the end of the combined data came from the spec's own
    validation and test datasets (in that order)."""

    val: int = 0
    test: int = 0


def split_indices(n: int, spec: TrainSpec, given: Given = Given()) -> Split:
    """A seeded split of the dataset's own ``n - given`` examples by the spec's ratios — for
    the splits no dataset was given for — and the given ones as they are."""
    own = n - given.val - given.test
    seed = spec.split.seed if spec.split.seed is not None else spec.seed
    order = np.random.default_rng(seed).permutation(own)
    n_val = 0 if given.val else round(own * spec.split.validation)
    n_test = 0 if given.test else round(own * spec.split.test)
    if own - n_val - n_test < 1:
        raise InvalidInput(f"split: the dataset has {own} examples; the split leaves none for training")
    val = np.arange(own, own + given.val) if given.val else order[:n_val]
    test = np.arange(own + given.val, n) if given.test else order[n_val : n_val + n_test]
    return Split(train=order[n_val + n_test :], val=val, test=test)


def combine(
    source: DataSource, validation: DataSource | None, test: DataSource | None
) -> tuple[DataSource, Given]:
    """The dataset with the spec's validation and test datasets appended, and their sizes.
    They must be of the same kind and shape of record as the training dataset."""
    parts = [p for p in (validation, test) if p is not None]
    if not parts:
        return source, Given()
    for p, role in ((validation, "validation_dataset"), (test, "test_dataset")):
        if p is not None and type(p) is not type(source):
            raise InvalidInput(f"split.{role}: it is not the same kind of data as the training dataset")
    sizes = [_size(p) if p is not None else 0 for p in (validation, test)]
    given = Given(val=sizes[0], test=sizes[1])
    if isinstance(source, TableSource):
        tables = [source.table, *(p.table for p in parts if isinstance(p, TableSource))]
        if any(tb.columns != source.table.columns for tb in tables):
            raise InvalidInput(
                f"split: the given datasets need the training dataset's columns {tables[0].columns}"
            )
        types = [
            t if all(tb.types[i] == t for tb in tables) else "str" for i, t in enumerate(tables[0].types)
        ]
        rows = [r for tb in tables for r in tb.rows]
        return TableSource(Table(tables[0].columns, types, rows)), given
    if isinstance(source, ArraySource):
        sets = [source.arrays, *(p.arrays for p in parts if isinstance(p, ArraySource))]
        if any(set(a) != set(source.arrays) for a in sets):
            raise InvalidInput(f"split: the given datasets need the arrays {sorted(source.arrays)}")
        return ArraySource({k: np.concatenate([a[k] for a in sets]) for k in source.arrays}), given
    if isinstance(source, ImageSource):
        folders = [source, *(p for p in parts if isinstance(p, ImageSource))]
        labels = [lab for f in folders for lab in f.labels]
        return ImageSource([im for f in folders for im in f.images], labels, sorted(set(labels))), given
    return source, given  # a corpus takes its parts apart: see _corpus


def given_splits(
    s: Session, store: ArtifactStore, spec: TrainSpec
) -> tuple[DataSource | None, DataSource | None]:
    """The sources of the spec's validation and test datasets, where it names them."""

    def load(name: str | None) -> DataSource | None:
        return None if name is None else load_source(s, store, get_dataset(s, name).id)

    return load(spec.split.validation_dataset), load(spec.split.test_dataset)


def _size(source: DataSource) -> int:
    if isinstance(source, TableSource):
        return len(source.table.rows)
    if isinstance(source, ArraySource):
        return len(next(iter(source.arrays.values())))
    if isinstance(source, ImageSource):
        return len(source.images)
    return len(source.text)


# --- targets -------------------------------------------------------------------------------


def _sorted_labels(values: Sequence[Any]) -> Labels:
    uniq = set(values)
    try:
        numbers = sorted(float(v) for v in uniq)
    except (TypeError, ValueError):
        return sorted(str(v) for v in uniq)
    if all(n.is_integer() for n in numbers):
        return [int(n) for n in numbers]
    return numbers


def encode_targets(
    raw: Sequence[Any] | np.ndarray, spec: TrainSpec, what: str
) -> tuple[np.ndarray, Labels | None]:
    """Class indices (classification), 0/1 floats (binary) or floats (regression)."""
    if spec.task == "regression":
        try:
            return np.asarray(raw, dtype=np.float32), None
        except (TypeError, ValueError):
            raise InvalidInput(f"target: {what} holds text; a regression target must be numeric") from None
    values = np.asarray(raw).reshape(-1).tolist()
    classes = _sorted_labels(values)
    if len(classes) < 2:
        raise InvalidInput(f"target: {what} has a single class; {spec.task} needs two")
    if spec.task == "binary" and len(classes) != 2:
        raise InvalidInput(f"target: {what} has {len(classes)} classes; task binary needs exactly two")
    if len(classes) > MAX_CLASSES:
        raise InvalidInput(f"target: {what} has {len(classes)} classes; is it a regression target?")
    key: Callable[[Any], object] = str if isinstance(classes[0], str) else float
    index = {key(c): i for i, c in enumerate(classes)}
    y = np.array([index[key(v)] for v in values], dtype=np.int64)
    return (y.astype(np.float32) if spec.task == "binary" else y), classes


def out_size(spec: TrainSpec, y: np.ndarray, classes: Labels | None) -> int:
    if spec.task == "classification":
        return len(classes or ())
    if spec.task == "regression" and y.ndim == 2:
        return int(y.shape[1])
    return 1


# --- the paths -------------------------------------------------------------------------------


def _prepared(x: np.ndarray, y: np.ndarray, s: Split, **rest: Any) -> PreparedData:
    return PreparedData(x[s.train], y[s.train], x[s.val], y[s.val], x[s.test], y[s.test], **rest)


def _head(spec: TrainSpec, y: np.ndarray, classes: Labels | None) -> dict[str, Any]:
    """The output-size keys each architecture's config names its head by."""
    n = out_size(spec, y, classes)
    arch = spec.model.architecture
    if arch == "mlp":
        return {"out_features": n}
    if arch in ("lstm", "gru"):
        return {"num_classes": n} if spec.task != "regression" else {"num_classes": None, "output_size": n}
    return {"num_classes": n}


def _table(source: TableSource, spec: TrainSpec, given: Given) -> PreparedData:
    table = source.table
    target = spec.target
    assert target is not None, "submit_run resolves the target"
    if target not in table.columns:
        raise InvalidInput(f"target: column {target!r} is not in the dataset")
    types = dict(zip(table.columns, table.types, strict=True))
    features = spec.features or [c for c in table.columns if c != target]
    text = [f for f in features if types[f] == "str" and f not in spec.preprocessing.categorical]
    y, classes = encode_targets(table.column(target), spec, f"column {target!r}")
    s = split_indices(len(table.rows), spec, given)
    if spec.model.architecture in ("lstm", "gru", "transformer"):
        if len(text) != 1 or len(features) != 1:
            raise InvalidInput(
                f"features: a {spec.model.architecture} reads one text column; name it in features"
            )
        return _text_classification(np.array(table.column(text[0]), dtype=object), y, classes, s, spec)
    if text:
        raise InvalidInput(
            f"features: column {text[0]!r} holds text; list it in preprocessing.categorical "
            "to one-hot encode it, or leave it out of features"
        )
    columns = {f: table.column(f) for f in features}
    prep = TabularPreprocessing.fit(
        {f: [columns[f][i] for i in s.train] for f in features},
        numeric=[f for f in features if f not in spec.preprocessing.categorical],
        categorical=[f for f in features if f in spec.preprocessing.categorical],
        scaling=spec.preprocessing.scaling,
    )
    raw = np.array([[columns[f][i] for f in features] for i in range(len(table.rows))], dtype=object)
    x = prep.transform(raw)
    dtype = "BYTES" if spec.preprocessing.categorical else "FP32"
    return _prepared(
        x,
        y,
        s,
        preprocessing=prep,
        classes=classes,
        input=TensorSpec(name="input", datatype=dtype, shape=[-1, len(features)]),
        arch_config={"in_features": prep.out_features, **_head(spec, y, classes)},
    )


def _text_classification(
    texts: np.ndarray, y: np.ndarray, classes: Labels | None, s: Split, spec: TrainSpec
) -> PreparedData:
    p = spec.preprocessing
    prep = TextPreprocessing.fit(
        (str(t) for t in texts[s.train]), kind=p.tokenizer, vocab_size=p.vocab_size, max_length=p.max_length
    )
    x = prep.encode_batch([str(t) for t in texts])
    arch = {"vocab_size": prep.vocab_size, **_head(spec, y, classes)}
    arch |= (
        {"max_len": p.max_length, "pad_id": prep.pad_id} if spec.model.architecture == "transformer" else {}
    )
    return _prepared(
        x,
        y,
        s,
        preprocessing=prep,
        classes=classes,
        input=TensorSpec(name="text", datatype="BYTES", shape=[-1]),
        arch_config=arch,
    )


def _arrays(source: ArraySource, spec: TrainSpec, given: Given) -> PreparedData:
    arrays = source.arrays
    x_name = (spec.features or ["x"])[0]
    y_name = spec.target or "y"
    for name, role in ((x_name, "features"), (y_name, "target")):
        if name not in arrays:
            raise InvalidInput(f"{role}: array {name!r} is not in the dataset; it has {', '.join(arrays)}")
    x, (y, classes) = arrays[x_name], encode_targets(arrays[y_name], spec, f"array {y_name!r}")
    s = split_indices(len(x), spec, given)
    arch = spec.model.architecture
    if arch == "cnn":
        return _images(list(x), y, classes, s, spec)
    if x.dtype.kind in "iu" and x.ndim == 2 and arch in ("lstm", "gru", "transformer"):
        ids = x.astype(np.int64)  # token ids pass through exactly
        vocab = int(ids.max()) + 1
        head = _head(spec, y, classes)
        extra = {"max_len": ids.shape[1], "pad_id": 0} if arch == "transformer" else {}
        return _prepared(
            ids,
            y,
            s,
            preprocessing=NoPreprocessing(),
            classes=classes,
            input=TensorSpec(name="input", datatype="INT64", shape=[-1, ids.shape[1]]),
            arch_config={"vocab_size": vocab, **head, **extra},
        )
    if x.ndim == 3 and arch in ("lstm", "gru"):  # (N, T, F) float sequences
        return _sequences(x.astype(np.float32), y, classes, s, spec)
    if x.ndim != 2 or arch != "mlp":
        raise InvalidInput(
            f"features: array {x_name!r} has shape {list(x.shape)}; a {arch} needs "
            + {"mlp": "(N, F)", "lstm": "(N, T, F)", "gru": "(N, T, F)"}.get(arch, "token ids (N, T)")
        )
    names = [f"x{i}" for i in range(x.shape[1])]
    prep = TabularPreprocessing.fit(
        {n: x[s.train, i] for i, n in enumerate(names)},
        numeric=names,
        categorical=[],
        scaling=spec.preprocessing.scaling,
    )
    return _prepared(
        prep.transform(x.astype(np.float32)),
        y,
        s,
        preprocessing=prep,
        classes=classes,
        input=TensorSpec(name="input", datatype="FP32", shape=[-1, x.shape[1]]),
        arch_config={"in_features": prep.out_features, **_head(spec, y, classes)},
    )


def _sequences(
    x: np.ndarray, y: np.ndarray, classes: Labels | None, s: Split, spec: TrainSpec
) -> PreparedData:
    n, steps, feats = x.shape
    names = [f"x{i}" for i in range(feats)]
    train = x[s.train].reshape(-1, feats)  # every step of every training sequence
    prep = TabularPreprocessing.fit(
        {n_: train[:, i] for i, n_ in enumerate(names)},
        numeric=names,
        categorical=[],
        scaling=spec.preprocessing.scaling,
    )
    scaled = prep.transform(x.reshape(-1, feats)).reshape(n, steps, feats)
    return _prepared(
        scaled,
        y,
        s,
        preprocessing=prep,
        classes=classes,
        input=TensorSpec(name="input", datatype="FP32", shape=[-1, -1, feats]),
        arch_config={"input_size": feats, **_head(spec, y, classes)},
    )


def _images(
    images: list[np.ndarray], y: np.ndarray, classes: Labels | None, s: Split, spec: TrainSpec
) -> PreparedData:
    if spec.model.architecture != "cnn":
        raise InvalidInput(f"model.architecture: images need a cnn, not a {spec.model.architecture}")
    p = spec.preprocessing
    train = [images[i] for i in s.train]
    size = p.image_size or max(max(im.shape[0], im.shape[1]) for im in train)
    channels = p.channels or (3 if any(im.ndim == 3 and im.shape[-1] == 3 for im in train) else 1)
    prep = ImagePreprocessing.fit(train, height=size, width=size, channels=channels)
    x = prep.transform(images)
    aug = p.augment
    augment_fn: AugmentFn | None = None
    if aug.enabled:
        augment_fn = lambda batch, gen: prep.augment(batch, aug, gen)  # noqa: E731
    shape = [-1, -1, -1] if channels == 1 else [-1, -1, -1, 3]
    return _prepared(
        x,
        y,
        s,
        preprocessing=prep,
        classes=classes,
        input=TensorSpec(name="image", datatype="FP32", shape=shape),
        arch_config={"in_channels": channels, "image_size": size, **_head(spec, y, classes)},
        augment=augment_fn,
    )


def _corpus(
    source: TextSource, spec: TrainSpec, validation: TextSource | None, test: TextSource | None
) -> PreparedData:
    """A contiguous split (the last part of the text is held out, unless the spec gives the
    held-out texts), cut into windows."""
    p, text = spec.preprocessing, source.text
    n_val = 0 if validation else round(len(text) * spec.split.validation)
    n_test = 0 if test else round(len(text) * spec.split.test)
    train_text = text[: len(text) - n_val - n_test]
    val_text = validation.text if validation else text[len(train_text) : len(train_text) + n_val]
    test_text = test.text if test else text[len(text) - n_test :]
    block = spec.model.block_size  # type: ignore[union-attr]
    prep = TextPreprocessing.fit([train_text], kind=p.tokenizer, vocab_size=p.vocab_size, max_length=block)

    def windows(part: str) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(prep.encode(part), dtype=np.int64)
        n = (len(ids) - 1) // block
        if n < 1:
            return np.zeros((0, block), np.int64), np.zeros((0, block), np.int64)
        w = np.lib.stride_tricks.sliding_window_view(ids, block + 1)[: n * block : block]
        return w[:, :-1].copy(), w[:, 1:].copy()  # copies: the windows are a read-only view

    x_tr, y_tr = windows(train_text)
    if len(x_tr) == 0:
        raise InvalidInput(f"model.block_size: the training text is shorter than one block ({block} tokens)")
    x_va, y_va = windows(val_text)
    x_te, y_te = windows(test_text)
    return PreparedData(
        x_tr,
        y_tr,
        x_va,
        y_va,
        x_te,
        y_te,
        preprocessing=prep,
        classes=None,
        input=TensorSpec(name="input_ids", datatype="INT64", shape=[-1, -1]),
        arch_config={"vocab_size": prep.vocab_size},
    )


def prepare(
    source: DataSource,
    spec: TrainSpec,
    validation: DataSource | None = None,
    test: DataSource | None = None,
) -> PreparedData:
    """The run's tensors; ``validation``/``test``: the spec's given split datasets, if any."""
    if spec.task == "language_model" and not isinstance(source, TextSource):
        raise InvalidInput("task: a language model trains on a text dataset")
    if isinstance(source, TextSource):
        if spec.task != "language_model":
            raise InvalidInput("task: a text corpus trains a language_model (architecture gpt)")
        combine(source, validation, test)  # the kinds must match
        return _corpus(source, spec, validation, test)  # type: ignore[arg-type]
    source, given = combine(source, validation, test)
    if isinstance(source, ImageSource):
        y, classes = encode_targets(source.labels, spec, "the image classes")
        return _images(source.images, y, classes, split_indices(len(source.images), spec, given), spec)
    if isinstance(source, ArraySource):
        return _arrays(source, spec, given)
    assert isinstance(source, TableSource)
    return _table(source, spec, given)
