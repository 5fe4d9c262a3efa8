"""Preprocessing fitted on a run's training split and saved in the version's manifest, so that
serving applies exactly what training applied.

Every kind is a pydantic model whose fields are its whole fitted state (JSON, never pickle),
built by a ``fit`` classmethod and applied by a pure ``transform`` (numpy in, numpy out:
float32 features, int64 token ids). :data:`Preprocessing` is their discriminated union, the
type a manifest stores; :func:`preprocess` is the one call serving makes for a batch.

Tabular columns, here: numeric columns are scaled, categorical (text) columns one-hot encoded
over the categories seen in training. A category never seen in training is refused with an
:class:`InvalidInput` naming the column and the value, rather than encoded as all zeros: a
typo in a request should get an error, not a confident prediction for "none of the above".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from modelhost.datasets.images import ImagePreprocessing
from modelhost.datasets.tokenizers import TextPreprocessing
from modelhost.errors import InvalidInput

Scaling = Literal["standardize", "minmax", "none"]
MAX_CATEGORIES = 1024
"""More distinct values than this in a categorical column is an id or free text, not a category."""
_TINY = 1e-8  # a spread below this is a constant column: scale 1, so nothing is divided by ~0


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class NumericColumn(_State):
    """A number column, mapped to ``(x - center) / scale``."""

    type: Literal["numeric"] = "numeric"
    name: str = Field(min_length=1)
    center: float = 0.0
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)


class CategoricalColumn(_State):
    """A text column, mapped to one indicator per category, in the order of ``categories``."""

    type: Literal["categorical"] = "categorical"
    name: str = Field(min_length=1)
    categories: list[str] = Field(min_length=1, max_length=MAX_CATEGORIES)

    @model_validator(mode="after")
    def _distinct(self) -> CategoricalColumn:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories of {self.name!r} repeat a value")
        return self

    def one_hot(self, values: np.ndarray) -> np.ndarray:
        """(N,) category values -> (N, len(categories)) float32 indicators; unseen: InvalidInput."""
        index = {c: i for i, c in enumerate(self.categories)}
        positions = np.empty(len(values), dtype=np.int64)
        for row, key in enumerate(_category_keys(self.name, values)):
            pos = index.get(key)
            if pos is None:
                known = ", ".join(repr(c) for c in self.categories[:20])
                more = ", ..." if len(self.categories) > 20 else ""
                raise InvalidInput(
                    f"column {self.name!r}: unknown category {key!r} (row {row}); training saw {known}{more}"
                )
            positions[row] = pos
        out = np.zeros((len(values), len(self.categories)), dtype=np.float32)
        out[np.arange(len(values)), positions] = 1.0
        return out


Column = Annotated[NumericColumn | CategoricalColumn, Field(discriminator="type")]


class TabularPreprocessing(_State):
    """Rows of named columns -> float32 features: numeric columns scaled, categorical one-hot.

    Output layout: the columns in ``features`` order; a numeric column is one output, a
    categorical column ``len(categories)`` outputs (see :attr:`out_names`).
    """

    kind: Literal["tabular"] = "tabular"
    scaling: Scaling = "standardize"
    """How the numeric columns were fitted: z-score, to [0, 1] on the training range, or as is."""
    columns: list[Column] = Field(min_length=1)
    """The input columns, in the order clients send them."""

    @model_validator(mode="after")
    def _unique_names(self) -> TabularPreprocessing:
        names = self.features
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"column {dup!r} appears twice")
        return self

    @property
    def features(self) -> list[str]:
        """Input column names in order: what a client sends."""
        return [c.name for c in self.columns]

    @property
    def out_features(self) -> int:
        return sum(1 if isinstance(c, NumericColumn) else len(c.categories) for c in self.columns)

    @property
    def out_names(self) -> list[str]:
        """A name per output feature: ``age``, ``colour=red``, ``colour=blue``, ..."""
        return [
            n
            for c in self.columns
            for n in ([c.name] if isinstance(c, NumericColumn) else [f"{c.name}={v}" for v in c.categories])
        ]

    @classmethod
    def fit(
        cls,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
        scaling: Scaling = "standardize",
    ) -> TabularPreprocessing:
        """Fit on the training split only. ``features`` keep the order of ``columns``; columns
        named in neither list (the target, say) are left out. Numeric cells may be numbers or
        numeric strings (a CSV's cells); categorical cells text or integers."""
        _check_fit_columns(columns, numeric, categorical)
        wanted_numeric, fitted = set(numeric), list[Column]()
        for name, values in columns.items():
            if name in wanted_numeric:
                fitted.append(_fit_numeric(name, np.asarray(values), scaling))
            elif name in categorical:
                keys = _category_keys(name, np.asarray(values, dtype=object))
                cats = sorted(set(keys))
                if len(cats) > MAX_CATEGORIES:
                    raise InvalidInput(
                        f"categorical: column {name!r} has {len(cats)} distinct values, more than "
                        f"{MAX_CATEGORIES}; is it an id or free text?"
                    )
                fitted.append(CategoricalColumn(name=name, categories=cats))
        return cls(scaling=scaling, columns=fitted)

    def transform(self, rows: np.ndarray | Sequence[Any]) -> np.ndarray:
        """``rows``: an (N, len(features)) array (float, int, or object when text columns
        exist) or a list of ``{column: value}`` dicts. Returns (N, out_features) float32.
        Numbers only: any (..., len(features)) array, such as (N, T, F) sequences, keeps its
        leading axes (a sequence model's features were fitted over every step)."""
        if isinstance(rows, np.ndarray) and rows.dtype.kind in "iuf" and self._all_numeric:
            if rows.ndim > 2 and rows.shape[-1] == len(self.columns):
                flat = self.transform(rows.reshape(-1, rows.shape[-1]))
                return flat.reshape(*rows.shape[:-1], self.out_features)
            x = self._shaped(rows).astype(np.float64)
            if np.isfinite(x).all():  # the fast path; otherwise the per-column one names the column
                center, scale = self._affine
                out: np.ndarray = ((x - center) / scale).astype(np.float32)
                return out
        table = self._table(rows)
        parts = [
            ((_numbers(c.name, v) - c.center) / c.scale).astype(np.float32)[:, None]
            if isinstance(c, NumericColumn)
            else c.one_hot(v)
            for c, v in zip(self.columns, table, strict=True)
        ]
        return np.concatenate(parts, axis=1)

    @property
    def _all_numeric(self) -> bool:
        return all(isinstance(c, NumericColumn) for c in self.columns)

    @property
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        cols = [c for c in self.columns if isinstance(c, NumericColumn)]
        return np.array([c.center for c in cols]), np.array([c.scale for c in cols])

    def _shaped(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            raise InvalidInput(
                f"rows: expected shape (N, {len(self.columns)}) for columns {self.features}, "
                f"got {tuple(x.shape)}"
            )
        return x

    def _table(self, rows: np.ndarray | Sequence[Any]) -> list[np.ndarray]:
        """The batch as one (N,) array per column, in ``features`` order."""
        if not isinstance(rows, np.ndarray) and len(rows) and isinstance(rows[0], Mapping):
            return _dict_rows(rows, self.features)
        x = self._shaped(rows if isinstance(rows, np.ndarray) else np.asarray(rows, dtype=object))
        return [x[:, j] for j in range(x.shape[1])]


class NoPreprocessing(_State):
    """Features go to the model as sent: floats as float32, integers (token ids) untouched."""

    kind: Literal["none"] = "none"
    features: list[str] = Field(default_factory=list)
    """Input column names, where the model's input has named columns."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        if x.dtype.kind in "iub":
            return x
        if x.dtype == np.float32:  # the serving path's own dtype: checked, never copied
            if not np.isfinite(x).all():
                raise InvalidInput("input: NaN or infinity")
            return x
        return _numbers("input", x).astype(np.float32)


def _from_legacy(value: Any) -> Any:
    """Manifests written before this module stored ``{"kind": "standardize", "mean", "std"}``."""
    if not isinstance(value, dict) or value.get("kind") != "standardize":
        return value
    features, mean, std = value.get("features", []), value.get("mean"), value.get("std")
    if mean is None or std is None:
        return {"kind": "none", "features": features}
    cols = [
        {"type": "numeric", "name": f, "center": m, "scale": s}
        for f, m, s in zip(features, mean, std, strict=True)
    ]
    return {"kind": "tabular", "scaling": "standardize", "columns": cols}


Preprocessing = Annotated[
    TabularPreprocessing | ImagePreprocessing | TextPreprocessing | NoPreprocessing,
    Field(discriminator="kind"),
    BeforeValidator(_from_legacy),
]
"""What a version's manifest stores under ``preprocessing``; ``kind`` selects the variant."""


def preprocess(p: Preprocessing, x: Any) -> np.ndarray:
    """A request batch as the model's input: what serving calls, the same transform training used.

    Raises :class:`InvalidInput` naming the column, image or value that does not fit.
    """
    out: np.ndarray = p.transform(x)
    return out


def _check_fit_columns(
    columns: Mapping[str, Sequence[Any] | np.ndarray], numeric: Sequence[str], categorical: Sequence[str]
) -> None:
    both = set(numeric) & set(categorical)
    if both:
        raise InvalidInput(f"categorical: {sorted(both)[0]!r} is also listed as numeric")
    for field, names in (("numeric", numeric), ("categorical", categorical)):
        missing = [n for n in names if n not in columns]
        if missing:
            raise InvalidInput(f"{field}: no column {missing[0]!r}; the data has {list(columns)}")
    if not numeric and not categorical:
        raise InvalidInput("numeric, categorical: no feature columns to fit")
    lengths = {n: len(columns[n]) for n in [*numeric, *categorical]}
    if len(set(lengths.values())) > 1:
        raise InvalidInput(f"columns have different lengths: {lengths}")
    if not next(iter(lengths.values())):
        raise InvalidInput("columns: no training rows to fit on")


def _fit_numeric(name: str, values: np.ndarray, scaling: Scaling) -> NumericColumn:
    x = _numbers(name, values)
    if scaling == "standardize":
        center, spread = float(x.mean()), float(x.std())
    elif scaling == "minmax":
        center, spread = float(x.min()), float(x.max() - x.min())
    else:
        center, spread = 0.0, 1.0
    if not np.isfinite(spread):
        raise InvalidInput(f"column {name!r}: values too large to scale")
    return NumericColumn(name=name, center=center, scale=spread if spread >= _TINY else 1.0)


def _numbers(name: str, values: np.ndarray) -> np.ndarray:
    """Cells as float64; InvalidInput naming the column (and row) of a non-number or non-finite."""
    if values.dtype.kind == "b" or (
        values.dtype.kind == "O" and any(isinstance(v, bool | np.bool_) for v in values.flat)
    ):
        raise InvalidInput(f"column {name!r}: true/false is not a number")
    try:
        x = values.astype(np.float64)
    except (TypeError, ValueError):
        row, bad = _first_non_number(values)
        raise InvalidInput(f"column {name!r}: {bad!r} is not a number (row {row})") from None
    if not np.isfinite(x).all():
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise InvalidInput(f"column {name!r}: NaN or infinity (row {row})")
    return x


def _first_non_number(values: np.ndarray) -> tuple[int, Any]:
    for row, v in enumerate(values.reshape(len(values), -1)):
        for cell in v:
            try:
                float(cell)
            except (TypeError, ValueError):
                return row, _plain(cell)
    return 0, values  # unreachable when astype failed


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, so messages show ``''``, not ``np.str_('')``."""
    return value.item() if isinstance(value, np.generic) else value


def _category_keys(name: str, values: np.ndarray) -> list[str]:
    """Categories are text (str, or UTF-8 bytes); integers (codes such as 3) match their decimal text."""
    keys = []
    for row, v in enumerate(values):
        if isinstance(v, str):
            keys.append(v)
        elif isinstance(v, bytes):  # OIP v2 BYTES tensors arrive as bytes
            try:
                keys.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(f"column {name!r}: not valid UTF-8 (row {row})") from None
        elif isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_):
            keys.append(str(int(v)))
        else:
            raise InvalidInput(f"column {name!r}: expected a category (text), got {_plain(v)!r} (row {row})")
    return keys


def _dict_rows(rows: Sequence[Any], features: list[str]) -> list[np.ndarray]:
    wanted = set(features)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInput(f"rows[{i}]: expected an object of {features}, got {type(row).__name__}")
        if row.keys() != wanted:
            missing = [f for f in features if f not in row]
            if missing:
                raise InvalidInput(f"rows[{i}]: missing column {missing[0]!r}")
            extra = sorted(str(k) for k in row if k not in wanted)
            raise InvalidInput(f"rows[{i}]: unknown column {extra[0]!r}; the model takes {features}")
    cols = [np.empty(len(rows), dtype=object) for _ in features]
    for j, f in enumerate(features):
        cols[j][:] = [row[f] for row in rows]
    return cols
