"""Feature preprocessing for schema-driven tables: fitted on training rows, stored as plain JSON.

The same :class:`FeaturePipeline` runs at training time (on columns taken from a data frame) and
inside the prediction server (on one request), so it uses numpy and the standard library only:
importing pandas here would drag it into the server. Everything the transform needs lives in
``params``, a JSON-able dict, so a bundle carries the preprocessing as data rather than code.

Transform rules, per feature kind, in output order (numeric, then categorical, then date, each in
schema order):

* **numeric** ``x``: missing values (``None``, NaN, empty string) are imputed with the training
  median; the value is standardised with the training mean and standard deviation (of the
  observed values; std floored at ``1e-6``) and clipped to ``[-10, 10]`` so that one wild value
  cannot explode the network. A feature with ``required=False`` also gets a 0/1 ``x__missing``
  column. A feature never observed in training imputes 0 and standardises with mean 0, std 1.
* **categorical** ``c``: values are compared as strings; whole numbers are written as integers,
  so the zip code ``2100``, ``2100.0`` and ``"2100"`` are one category. One-hot columns
  ``c=<category>`` over the ``max_categories`` most frequent training categories (most frequent
  first, ties broken by the category string, so the layout is deterministic), then ``c=__other__``
  for every category not kept or not seen in training, then (``required=False`` only)
  ``c=__missing__``. A missing value of a required feature counts as "other". Those are the
  ``onehot`` encoding, the default; a feature may list other ``encodings`` too, whose columns
  follow in this order:

  - ``target``: ``c__target``, the hierarchical target code of :mod:`.target_encoding` (out of
    fold for the training rows of :meth:`FeaturePipeline.fit_transform`), and
    ``c__target_count``, ``log1p`` of the category's training rows; both standardised with the
    out-of-fold training codes' mean/std (not clipped: they cannot leave the range of the
    training targets and row counts). The statistics per category are stored in ``params``.
  - ``number``: ``c__number``, the category read as a number (missing or not a number: the
    training median), standardised like a numeric feature.
* **date** ``d`` (``datetime.date``, ``datetime.datetime``, ``numpy.datetime64`` or an ISO
  ``YYYY-MM-DD`` string; times are dropped): a missing date is imputed with the training median
  day, then each of ``parts`` in the listed order gives

  - ``ordinal``: days since 1970-01-01, standardised with the training mean/std -> ``d__ordinal``;
  - ``year``: the calendar year, standardised likewise -> ``d__year``;
  - ``month``: ``sin``/``cos`` of ``2*pi*(month-1)/12`` -> ``d__month_sin``, ``d__month_cos``;
  - ``day_of_year``: ``sin``/``cos`` of ``2*pi*(day_of_year-1)/365.25``;
  - ``day_of_week``: ``sin``/``cos`` of ``2*pi*weekday/7`` with Monday = 0.

  Standardised parts are clipped to ``[-10, 10]`` like numeric values. ``required=False`` adds a
  ``d__missing`` indicator after the parts.

The cyclic parts are looked up in tables built once with :mod:`math`, never computed by vectorised
numpy on the batch: the result of a row then cannot depend on how many rows it travels with (SIMD
kernels may round the tail of a batch differently), so one-row serving equals batch training.

Errors: a feature column absent from the input is a :class:`ConfigError` at fit time (the schema
names a column the data lacks) and a :class:`DataError` at transform time; columns of different
lengths, a value that cannot be read (naming the feature and row) and fitting on zero rows are
:class:`DataError`; malformed stored parameters are a :class:`BundleError`.
"""

import copy
import math
import numbers
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from modelyard.core.errors import BundleError, ConfigError, DataError
from modelyard.projects.tabular.feature_params import (
    FEATURE_KINDS,
    FORMAT_VERSION,
    validated_params,
)
from modelyard.projects.tabular.schema import (
    CategoricalFeature,
    DateFeature,
    Features,
    NumericFeature,
    Target,
)
from modelyard.projects.tabular.target_encoding import (
    Encoded,
    Level,
    category_stats,
    encode,
    encode_out_of_fold,
)

Columns = Mapping[str, Sequence[Any] | NDArray[Any]]
"""Column name -> values, one per row (a list, tuple or numpy array)."""

#: Seed of the permutation that deals training rows into target-encoding folds.
FOLD_SEED: Final = 0
CLIP: Final = 10.0
STD_FLOOR: Final = 1e-6
OTHER: Final = "__other__"
MISSING: Final = "__missing__"

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_PANDAS_MISSING_TYPES: Final = frozenset({"NAType", "NaTType"})


def _cycle_table(size: int, period: float) -> NDArray[np.float64]:
    """``[sin, cos]`` of ``2*pi*i/period`` for ``i < size``, computed once with :mod:`math`."""
    angles = [2.0 * math.pi * i / period for i in range(size)]
    return np.array([[math.sin(a), math.cos(a)] for a in angles], dtype=np.float64)


_MONTH_TABLE: Final = _cycle_table(12, 12.0)
_DAY_OF_YEAR_TABLE: Final = _cycle_table(366, 365.25)
_DAY_OF_WEEK_TABLE: Final = _cycle_table(7, 7.0)


# --------------------------------------------------------------------------- reading values


def _is_missing(value: Any) -> bool:
    """``None``, NaN and NaT are missing; pandas' ``NA``/``NaT`` are recognised by type name.

    The type-name check lets columns straight from a data frame through without importing pandas
    (``pd.NA`` refuses comparison and ``pd.NaT`` poses as a ``datetime``).
    """
    if value is None or type(value).__name__ in _PANDAS_MISSING_TYPES:
        return True
    if isinstance(value, np.datetime64):
        return bool(np.isnat(value))
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return math.isnan(float(value))
    return False


def _number(value: Any) -> float:
    """One numeric value as a float (NaN when missing); ValueError when it is not a number."""
    if _is_missing(value):
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        number = float(text) if text else math.nan
    elif isinstance(value, numbers.Real):
        number = float(value)
    else:
        raise ValueError("not a number")
    if math.isinf(number):
        raise ValueError("not finite")
    return number


def _read_numbers(name: str, values: Sequence[Any] | NDArray[Any]) -> NDArray[np.float64]:
    """A numeric column as float64 with NaN for missing values."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        array = values.astype(np.float64).reshape(-1)
        infinite = np.flatnonzero(np.isinf(array))
        if infinite.size:
            row = int(infinite[0])
            raise DataError(f"feature {name!r}, row {row}: {array[row]!r} is not a finite number")
        return array
    out = np.empty(len(values), dtype=np.float64)
    for row, value in enumerate(values):
        try:
            out[row] = _number(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(
                f"feature {name!r}, row {row}: cannot read {value!r} as a number ({exc})"
            ) from exc
    return out


def category_key(value: Any) -> str | None:
    """The category string of one value, ``None`` when missing.

    Whole numbers become integer strings (2100.0 -> "2100") because a zip code read as a float
    from one file and as text from another must still be the same category.
    """
    if _is_missing(value):
        return None
    if isinstance(value, str | bool | np.bool_):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value)


def _read_categories(values: Sequence[Any] | NDArray[Any]) -> list[str | None]:
    return [category_key(value) for value in values]


def _day(value: Any) -> int | None:
    """Days since 1970-01-01 of one date value, ``None`` when missing; ValueError if unreadable."""
    if _is_missing(value):
        return None
    if isinstance(value, datetime):
        return value.date().toordinal() - _EPOCH_ORDINAL
    if isinstance(value, date):
        return value.toordinal() - _EPOCH_ORDINAL
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[D]").astype(np.int64))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            parsed = date.fromisoformat(text)
        except ValueError:
            parsed = datetime.fromisoformat(text).date()
        return parsed.toordinal() - _EPOCH_ORDINAL
    raise ValueError("not a date")


def _read_days(
    name: str, values: Sequence[Any] | NDArray[Any]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """A date column as (days since 1970-01-01, missing mask); missing days hold 0."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        as_days = values.astype("datetime64[D]").reshape(-1)
        missing = np.isnat(as_days)
        days = np.where(missing, 0, as_days.astype(np.int64)).astype(np.int64)
        return days, missing
    days = np.zeros(len(values), dtype=np.int64)
    missing = np.zeros(len(values), dtype=np.bool_)
    for row, value in enumerate(values):
        try:
            day = _day(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(
                f"feature {name!r}, row {row}: cannot read {value!r} as a date ({exc})"
            ) from exc
        if day is None:
            missing[row] = True
        else:
            days[row] = day
    return days, missing


def _calendar(days: NDArray[np.int64]) -> dict[str, NDArray[np.int64]]:
    """Year, month (1-12), day of year (1-366) and weekday (Monday = 0) of day numbers."""
    stamps = days.astype("datetime64[D]")
    years = stamps.astype("datetime64[Y]")
    return {
        "year": years.astype(np.int64) + 1970,
        "month": stamps.astype("datetime64[M]").astype(np.int64) % 12 + 1,
        "day_of_year": (stamps - years.astype("datetime64[D]")).astype(np.int64) + 1,
        "day_of_week": (days + 3) % 7,  # 1970-01-01 was a Thursday
    }


# --------------------------------------------------------------------------- columns


def _row_count(columns: Columns, names: Sequence[str], missing: type[Exception]) -> int:
    """The common length of the named columns; ``missing`` is raised for an absent one."""
    absent = [name for name in names if name not in columns]
    if absent:
        raise missing(f"feature column(s) missing from the data: {', '.join(absent)}")
    lengths = {name: len(columns[name]) for name in names}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise DataError(f"feature columns have different lengths: {detail}")
    return next(iter(lengths.values()), 0)


def _stats(values: NDArray[np.float64]) -> tuple[float, float]:
    """Mean and floored population std; (0, 1) when there is nothing to learn from.

    Values near the float64 limit overflow the plain sums; they are then recomputed on values
    scaled into [-1, 1], so the stored parameters are always finite (and JSON stays valid).
    """
    if values.size == 0:
        return 0.0, 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(np.mean(values)), float(np.std(values))
        if not (math.isfinite(mean) and math.isfinite(std)):
            scale = float(np.max(np.abs(values)))
            scaled = values / scale
            mean, std = scale * float(np.mean(scaled)), scale * float(np.std(scaled))
    return mean, max(std, STD_FLOOR)


def _median(values: NDArray[np.float64]) -> float:
    """The median, as the halves' sum so that two huge middle values cannot overflow."""
    if values.size == 0:
        return 0.0
    ordered = np.sort(values)
    low, high = float(ordered[(values.size - 1) // 2]), float(ordered[values.size // 2])
    return low if low == high else low / 2 + high / 2


def _standardise(values: NDArray[np.float64], mean: float, std: float) -> NDArray[np.float64]:
    """``(x - mean) / std`` clipped to ``[-CLIP, CLIP]``: elementwise, so row-independent.

    A difference that overflows becomes infinite and is clipped like any other wild value.
    """
    with np.errstate(over="ignore"):
        return np.clip((values - mean) / std, -CLIP, CLIP)


# --------------------------------------------------------------------------- fitting


def _fit_numeric(feature: NumericFeature, values: NDArray[np.float64]) -> dict[str, Any]:
    observed = values[~np.isnan(values)]
    mean, std = _stats(observed)
    return {
        "name": feature.name,
        "required": feature.required,
        "median": _median(observed),
        "mean": mean,
        "std": std,
    }


def _category_numbers(values: list[str | None]) -> NDArray[np.float64]:
    """Category keys read as numbers; NaN for a missing key or one that is not a finite number."""
    out = np.full(len(values), np.nan, dtype=np.float64)
    for row, value in enumerate(values):
        if value is not None:
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                out[row] = number
    return out


def _fit_categorical(feature: CategoricalFeature, values: list[str | None]) -> dict[str, Any]:
    """Kept one-hot categories and, with the ``number`` encoding, the numbers' statistics.

    Target-encoding statistics need the target and the parents' estimates: :func:`_fit_targets`.
    """
    counts = Counter(value for value in values if value is not None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    onehot = "onehot" in feature.encodings
    kept = [category for category, _ in ranked[: max(feature.max_categories, 0)]] if onehot else []
    spec: dict[str, Any] = {
        "name": feature.name,
        "required": feature.required,
        "categories": kept,
        "encodings": list(feature.encodings),
    }
    if "number" in feature.encodings:
        numbers = _category_numbers(values)
        observed = numbers[~np.isnan(numbers)]
        if observed.size == 0:
            raise ConfigError(
                f"categorical {feature.name!r} has the number encoding but no training value "
                "reads as a number"
            )
        mean, std = _stats(observed)
        spec["number"] = {"median": _median(observed), "mean": mean, "std": std}
    return spec


def _levels(specs: Sequence[Mapping[str, Any]]) -> list[Level]:
    """The target-encoded categorical features, parents first (schema order guarantees it)."""
    return [
        Level(spec["name"], spec["target"]["parent"], spec["target"]["smoothing"])
        for spec in specs
        if "target" in spec["encodings"]
    ]


def _fit_targets(
    features: Features,
    specs: list[dict[str, Any]],
    keys: Mapping[str, list[str | None]],
    target: NDArray[np.float64] | None,
) -> dict[str, Encoded]:
    """Add target-encoding parameters to ``specs``; return the training rows' out-of-fold codes.

    ``target`` is the training target in model space (logged when the target is). The estimates
    and counts are standardised with the statistics of the out-of-fold training codes: those are
    what the model is trained on.
    """
    options = {f.name: f for f in features.categorical}
    encoded_specs = [spec for spec in specs if "target" in spec["encodings"]]
    if not encoded_specs:
        return {}
    if target is None:
        raise ConfigError("target-encoded features need the training target to fit")
    for spec in encoded_specs:
        option = options[spec["name"]]
        spec["target"] = {"parent": option.parent, "smoothing": float(option.smoothing)}
    levels = _levels(specs)
    out_of_fold = encode_out_of_fold(levels, keys, target, features.target_folds, FOLD_SEED)
    prior = float(np.mean(target))
    for spec in encoded_specs:
        codes = out_of_fold[spec["name"]]
        mean, std = _stats(codes.estimate)
        count_mean, count_std = _stats(np.log1p(codes.count))
        stats = category_stats(keys[spec["name"]], target)
        spec["target"].update(
            prior=prior,
            mean=mean,
            std=std,
            count_mean=count_mean,
            count_std=count_std,
            stats={key: [total, count] for key, (total, count) in sorted(stats.items())},
        )
    return out_of_fold


def _fit_date(
    feature: DateFeature, days: NDArray[np.int64], missing: NDArray[np.bool_]
) -> dict[str, Any]:
    """Median day (the lower median: an actual training day), ordinal and year statistics."""
    observed = np.sort(days[~missing])
    median_day = int(observed[(observed.size - 1) // 2]) if observed.size else 0
    ordinal_mean, ordinal_std = _stats(observed.astype(np.float64))
    year_mean, year_std = _stats(_calendar(observed)["year"].astype(np.float64))
    return {
        "name": feature.name,
        "required": feature.required,
        "parts": list(dict.fromkeys(feature.parts)),
        "median_day": median_day,
        "ordinal_mean": ordinal_mean,
        "ordinal_std": ordinal_std,
        "year_mean": year_mean,
        "year_std": year_std,
    }


# --------------------------------------------------------------------------- transforming

Block = list[NDArray[np.float64]]


def _numeric_block(spec: dict[str, Any], values: NDArray[np.float64]) -> Block:
    missing = np.isnan(values)
    filled = np.where(missing, spec["median"], values)
    block = [_standardise(filled, spec["mean"], spec["std"])]
    if not spec["required"]:
        block.append(missing.astype(np.float64))
    return block


def _categorical_block(
    spec: dict[str, Any], values: list[str | None], codes: Encoded | None
) -> Block:
    """One-hot, then target-encoded (estimate, count), then number columns, as configured."""
    block: Block = []
    if "onehot" in spec["encodings"]:
        block.extend(_onehot_block(spec, values))
    if codes is not None:
        # Not clipped: a code is a weighted mean of training targets and a count at most the
        # training rows, so both stay within what training saw.
        target = spec["target"]
        block.append((codes.estimate - target["mean"]) / target["std"])
        count = np.log1p(codes.count)
        block.append((count - target["count_mean"]) / target["count_std"])
    if "number" in spec["encodings"]:
        number = spec["number"]
        numbers = _category_numbers(values)
        filled = np.where(np.isnan(numbers), number["median"], numbers)
        block.append(_standardise(filled, number["mean"], number["std"]))
    return block


def _onehot_block(spec: dict[str, Any], values: list[str | None]) -> Block:
    categories: list[str] = spec["categories"]
    index = {category: i for i, category in enumerate(categories)}
    other = len(categories)
    width = other + (1 if spec["required"] else 2)
    missing_slot = other if spec["required"] else other + 1
    slots = np.array(
        [missing_slot if value is None else index.get(value, other) for value in values],
        dtype=np.int64,
    )
    onehot = np.zeros((len(values), width), dtype=np.float64)
    onehot[np.arange(len(values)), slots] = 1.0
    return list(onehot.T)


def _date_part(
    spec: dict[str, Any], part: str, days: NDArray[np.int64], calendar: dict[str, NDArray[np.int64]]
) -> Block:
    if part == "ordinal":
        ordinal = days.astype(np.float64)
        return [_standardise(ordinal, spec["ordinal_mean"], spec["ordinal_std"])]
    if part == "year":
        year = calendar["year"].astype(np.float64)
        return [_standardise(year, spec["year_mean"], spec["year_std"])]
    table, offset = {
        "month": (_MONTH_TABLE, 1),
        "day_of_year": (_DAY_OF_YEAR_TABLE, 1),
        "day_of_week": (_DAY_OF_WEEK_TABLE, 0),
    }[part]
    rows = table[calendar[part] - offset]
    return [rows[:, 0], rows[:, 1]]


def _date_block(spec: dict[str, Any], days: NDArray[np.int64], missing: NDArray[np.bool_]) -> Block:
    filled = np.where(missing, spec["median_day"], days).astype(np.int64)
    calendar = _calendar(filled)
    block: Block = []
    for part in spec["parts"]:
        block.extend(_date_part(spec, part, filled, calendar))
    if not spec["required"]:
        block.append(missing.astype(np.float64))
    return block


# --------------------------------------------------------------------------- names


def _numeric_names(spec: dict[str, Any]) -> list[str]:
    name: str = spec["name"]
    return [name] if spec["required"] else [name, f"{name}__missing"]


def _categorical_names(spec: dict[str, Any]) -> list[str]:
    name: str = spec["name"]
    names: list[str] = []
    if "onehot" in spec["encodings"]:
        labels = [*spec["categories"], OTHER] + ([] if spec["required"] else [MISSING])
        names.extend(f"{name}={label}" for label in labels)
    if "target" in spec["encodings"]:
        names.extend([f"{name}__target", f"{name}__target_count"])
    if "number" in spec["encodings"]:
        names.append(f"{name}__number")
    return names


def _date_names(spec: dict[str, Any]) -> list[str]:
    name: str = spec["name"]
    names: list[str] = []
    for part in spec["parts"]:
        if part in ("ordinal", "year"):
            names.append(f"{name}__{part}")
        else:
            names.extend([f"{name}__{part}_sin", f"{name}__{part}_cos"])
    return names if spec["required"] else [*names, f"{name}__missing"]


# --------------------------------------------------------------------------- the pipeline


@dataclass(frozen=True)
class FeaturePipeline:
    """A fitted preprocessing transform; ``params`` is plain JSON and fully describes it."""

    params: dict[str, Any]

    @classmethod
    def fit(
        cls,
        features: Features,
        columns: Columns,
        target: Target | None = None,
        target_values: Sequence[float] | NDArray[Any] | None = None,
    ) -> "FeaturePipeline":
        """Learn medians, means, stds, kept categories and target codes from training rows only.

        ``target`` and ``target_values`` (the training rows' target) are needed only when a
        categorical feature is target-encoded.
        """
        return cls.fit_transform(features, columns, target, target_values)[0]

    @classmethod
    def fit_transform(
        cls,
        features: Features,
        columns: Columns,
        target: Target | None = None,
        target_values: Sequence[float] | NDArray[Any] | None = None,
    ) -> tuple["FeaturePipeline", NDArray[np.float32]]:
        """:meth:`fit`, and the training rows' matrix with out-of-fold target codes.

        Use this matrix, not ``transform`` of the training rows, to train: ``transform`` encodes
        each training row with statistics that include its own target.
        """
        names = features.names()
        if not names:
            raise ConfigError("the table schema declares no features")
        n_rows = _row_count(columns, names, ConfigError)
        if n_rows == 0:
            raise DataError("cannot fit feature preprocessing on zero rows")
        keys = {f.name: _read_categories(columns[f.name]) for f in features.categorical}
        space = None
        if target is not None and target_values is not None:
            space = _target_space(target_values, target.log)
            if space.size != n_rows:
                raise DataError(f"{space.size} target values for {n_rows} feature rows")
        categorical = [_fit_categorical(f, keys[f.name]) for f in features.categorical]
        out_of_fold = _fit_targets(features, categorical, keys, space)
        params: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "numeric": [
                _fit_numeric(f, _read_numbers(f.name, columns[f.name])) for f in features.numeric
            ],
            "categorical": categorical,
            "date": [_fit_date(f, *_read_days(f.name, columns[f.name])) for f in features.date],
        }
        pipeline = cls(params=params)
        return pipeline, pipeline._transform(columns, n_rows, keys, out_of_fold)

    @property
    def output_names(self) -> list[str]:
        """One readable name per output column, in column order."""
        return [
            *(n for spec in self.params["numeric"] for n in _numeric_names(spec)),
            *(n for spec in self.params["categorical"] for n in _categorical_names(spec)),
            *(n for spec in self.params["date"] for n in _date_names(spec)),
        ]

    def _feature_names(self) -> list[str]:
        return [spec["name"] for kind in FEATURE_KINDS for spec in self.params[kind]]

    def transform(self, columns: Columns) -> NDArray[np.float32]:
        """Rows -> a float32 ``(n_rows, len(output_names))`` matrix; extra columns are ignored."""
        n_rows = _row_count(columns, self._feature_names(), DataError)
        categorical = self.params["categorical"]
        keys = {spec["name"]: _read_categories(columns[spec["name"]]) for spec in categorical}
        stats = {spec["name"]: spec["target"]["stats"] for spec in categorical if "target" in spec}
        prior = next((spec["target"]["prior"] for spec in categorical if "target" in spec), 0.0)
        codes = encode(_levels(categorical), keys, stats, prior)
        return self._transform(columns, n_rows, keys, codes)

    def _transform(
        self,
        columns: Columns,
        n_rows: int,
        keys: Mapping[str, list[str | None]],
        codes: Mapping[str, Encoded],
    ) -> NDArray[np.float32]:
        block: Block = []
        for spec in self.params["numeric"]:
            block.extend(_numeric_block(spec, _read_numbers(spec["name"], columns[spec["name"]])))
        for spec in self.params["categorical"]:
            name = spec["name"]
            block.extend(_categorical_block(spec, keys[name], codes.get(name)))
        for spec in self.params["date"]:
            block.extend(_date_block(spec, *_read_days(spec["name"], columns[spec["name"]])))
        out = np.empty((n_rows, len(block)), dtype=np.float32)
        for i, column in enumerate(block):
            out[:, i] = column
        return out

    def categories(self, name: str) -> list[str]:
        """The training categories kept for categorical feature ``name`` (others are "other")."""
        return list(self._categorical_spec(name)["categories"])

    def known_categories(self, name: str) -> set[str]:
        """Every training category the model knows something specific about: kept one-hot
        categories and, when target-encoded, every category with training rows."""
        spec = self._categorical_spec(name)
        return set(spec["categories"]) | set(spec.get("target", {}).get("stats", {}))

    def _categorical_spec(self, name: str) -> dict[str, Any]:
        for spec in self.params["categorical"]:
            if spec["name"] == name:
                return dict(spec)
        raise KeyError(f"no categorical feature {name!r}")

    def to_json(self) -> dict[str, Any]:
        """A deep copy of ``params``, safe to ``json.dumps`` and to mutate."""
        return copy.deepcopy(self.params)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FeaturePipeline":
        """Rebuild from :meth:`to_json` output; a malformed document raises BundleError."""
        return cls(params=validated_params(data))


# --------------------------------------------------------------------------- the target


def _target_params(params: Mapping[str, Any]) -> tuple[bool, float, float]:
    """``(log, mean, std)`` from stored target parameters; BundleError when malformed."""
    if not isinstance(params, Mapping):
        raise BundleError("target parameters are malformed: not an object")
    try:
        log = params["log"]
        mean, std = float(params["mean"]), float(params["std"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"target parameters are malformed: {exc}") from exc
    if not isinstance(log, bool) or not math.isfinite(mean) or not (math.isfinite(std) and std > 0):
        raise BundleError(f"target parameters are malformed: {dict(params)!r}")
    return log, mean, std


def _target_space(values: Sequence[float] | NDArray[Any], log: bool) -> NDArray[np.float64]:
    """Target values as float64, logged when asked; DataError for non-finite or non-positive."""
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"target values are not numbers: {exc}") from exc
    invalid = ~np.isfinite(array)
    if log:
        invalid |= array <= 0
    bad = np.flatnonzero(invalid)
    if bad.size:
        row = int(bad[0])
        need = "a finite positive number (the target is modelled in log)" if log else "finite"
        raise DataError(f"target row {row}: {array[row]!r} is not {need}")
    return np.log(array) if log else array


def fit_target(target: Target, values: Sequence[float] | NDArray[Any]) -> dict[str, Any]:
    """Mean and std of the (log) training target: the network then learns a unit-scale output."""
    space = _target_space(values, target.log)
    if space.size == 0:
        raise DataError("cannot fit the target on zero rows")
    mean, std = _stats(space)
    return {"log": target.log, "mean": mean, "std": std}


def encode_target(params: dict[str, Any], values: NDArray[Any]) -> NDArray[np.float32]:
    """Target units -> standardised (log) target, float32 for training."""
    log, mean, std = _target_params(params)
    return ((_target_space(values, log) - mean) / std).astype(np.float32)


def decode_target(params: dict[str, Any], scores: NDArray[Any]) -> NDArray[np.float64]:
    """Model output -> target units, float64 (``exp`` undoes the log when the target was logged)."""
    log, mean, std = _target_params(params)
    space = np.asarray(scores, dtype=np.float64) * std + mean
    return np.exp(space) if log else space
