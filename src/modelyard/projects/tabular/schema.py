"""The table schema: everything a tabular project is, declared in configuration.

A project such as ``project=avm`` is nothing but one of these: how to read the source file, which
columns to derive, which rows to keep, how to treat outliers, which columns are numeric,
categorical or date features, and what the target is. The same schema generates the serving
request model, so the API, training and preprocessing cannot disagree.

Pure pydantic (no pandas): the server imports it.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard.core.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ReadSpec(_Strict):
    """How to read the source file."""

    file: str = Field(description="File name inside the fetched raw data directory.")
    header: bool = Field(True, description="Whether the first line names the columns.")
    columns: list[str] | None = Field(
        None, description="Column names, in file order (required without a header; renames with)."
    )
    separator: str = ","
    decimal: str = "."
    thousands: str | None = None
    encoding: str = "utf-8"
    dates: dict[str, str] = Field(
        default_factory=dict, description="Date columns and their strptime format."
    )

    @model_validator(mode="after")
    def _columns_without_header(self) -> "ReadSpec":
        if not self.header and not self.columns:
            raise ValueError("read.columns is required when read.header is false")
        return self


class Derivation(_Strict):
    """A column computed from others before filtering.

    ``regex``: first capture group of ``pattern`` in ``source`` (text); ``danish_floor``: floor
    number from a Danish address (``st.`` = 0, ``kl.`` = -1, ``3.`` = 3; missing = not an
    apartment); ``danish_side``: ``tv``/``th``/``mf`` from a Danish address; ``ratio``:
    ``source[0] / source[1]``; ``copy``: the source column unchanged; ``concat``: the sources'
    text joined with `` | `` (e.g. a building key that is unique across towns).
    """

    name: str
    op: Literal["regex", "danish_floor", "danish_side", "ratio", "copy", "concat"]
    source: str | list[str]
    pattern: str | None = None

    @model_validator(mode="after")
    def _arguments(self) -> "Derivation":
        if self.op == "regex" and not self.pattern:
            raise ValueError(f"derivation {self.name!r}: op regex needs a pattern")
        if self.op == "ratio" and (not isinstance(self.source, list) or len(self.source) != 2):
            raise ValueError(f"derivation {self.name!r}: op ratio needs two source columns")
        return self


class RowFilter(_Strict):
    """Keep rows whose ``column`` is within [min, max], present, and/or one of ``allowed``."""

    column: str
    min: float | None = None
    max: float | None = None
    not_null: bool = False
    allowed: list[str] | None = None


class OutlierRule(_Strict):
    """Drop rows whose ``column`` is far from typical, optionally within groups.

    ``iqr``: outside [Q1 - k*IQR, Q3 + k*IQR]; ``quantile``: outside [lower, upper] quantiles.
    With ``group_by``, bounds are computed per group (e.g. per zip code, since a normal price in
    central Copenhagen is an outlier in Jutland); groups smaller than ``min_group_size`` use the
    global bounds. Bounds are fitted on training rows only and applied to training rows only:
    evaluation data is never cleaned by looking at its own target.
    """

    column: str
    method: Literal["iqr", "quantile"] = "iqr"
    k: float = 3.0
    lower: float = 0.01
    upper: float = 0.99
    group_by: str | None = None
    min_group_size: int = 20


DatePart = Literal["year", "month", "day_of_year", "day_of_week", "ordinal"]
DEFAULT_DATE_PARTS: tuple[DatePart, ...] = ("ordinal", "month")


class NumericFeature(_Strict):
    name: str
    required: bool = True
    min: float | None = Field(None, description="Smallest accepted value (API: 422 below).")
    max: float | None = Field(None, description="Largest accepted value (API: 422 above).")
    description: str = ""


CategoryEncoding = Literal["onehot", "target", "number"]


def _one_hot() -> list[CategoryEncoding]:
    return ["onehot"]


class CategoricalFeature(_Strict):
    """A category and how it becomes model inputs (one or more ``encodings``).

    ``onehot``: a column per kept category (``max_categories`` most frequent). ``target``: the
    category's mean (log) training target shrunk towards ``parent``'s estimate (another
    target-encoded categorical listed earlier) with pseudo-count ``smoothing``, plus how many
    training rows it has; out of fold for training rows (:mod:`.target_encoding`). ``number``:
    the category read as a number (e.g. Danish zip codes, which are assigned by region).
    """

    name: str
    required: bool = True
    max_categories: int = Field(
        200, description="Most frequent training categories kept; others share one code."
    )
    encodings: list[CategoryEncoding] = Field(default_factory=_one_hot, min_length=1)
    parent: str | None = Field(None, description="Coarser target-encoded feature to shrink to.")
    smoothing: float = Field(1.0, gt=0, description="Pseudo-count of the parent's estimate.")
    description: str = ""

    @model_validator(mode="after")
    def _target_options(self) -> "CategoricalFeature":
        if len(set(self.encodings)) != len(self.encodings):
            raise ValueError(f"categorical {self.name!r}: encodings repeat: {self.encodings}")
        if self.parent is not None and "target" not in self.encodings:
            raise ValueError(f"categorical {self.name!r}: parent needs the target encoding")
        return self


class DateFeature(_Strict):
    name: str
    required: bool = True
    parts: list[DatePart] = Field(default_factory=lambda: list(DEFAULT_DATE_PARTS))
    description: str = ""


class Features(_Strict):
    numeric: list[NumericFeature] = Field(default_factory=list)
    categorical: list[CategoricalFeature] = Field(default_factory=list)
    date: list[DateFeature] = Field(default_factory=list)
    target_folds: int = Field(
        5, ge=2, description="Folds for out-of-fold target encoding of training rows."
    )

    @model_validator(mode="after")
    def _parents(self) -> "Features":
        encoded: set[str] = set()
        for feature in self.categorical:
            if feature.parent is not None and feature.parent not in encoded:
                raise ValueError(
                    f"categorical {feature.name!r}: parent {feature.parent!r} must be a "
                    "target-encoded categorical feature listed before it"
                )
            if "target" in feature.encodings:
                encoded.add(feature.name)
        return self

    def names(self) -> list[str]:
        return [
            *(f.name for f in self.numeric),
            *(f.name for f in self.categorical),
            *(f.name for f in self.date),
        ]


class Target(_Strict):
    name: str
    log: bool = Field(True, description="Model log(target): prices are multiplicative.")
    unit: str = ""


class TotalPrice(_Strict):
    """Derive a total from the prediction: ``target * multiply_by`` (e.g. price/m2 * area)."""

    name: str = "total_price"
    multiply_by: str


class SplitSpec(_Strict):
    """Deterministic split: random (seeded) or by time on a date column (newest = test)."""

    method: Literal["random", "time"] = "random"
    time_column: str | None = None
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _time_column(self) -> "SplitSpec":
        if self.method == "time" and not self.time_column:
            raise ValueError("split.time_column is required for a time split")
        return self


class TableSchema(_Strict):
    read: ReadSpec
    derive: list[Derivation] = Field(default_factory=list)
    filters: list[RowFilter] = Field(default_factory=list)
    outliers: list[OutlierRule] = Field(default_factory=list)
    features: Features
    target: Target
    total: TotalPrice | None = None
    split: SplitSpec = SplitSpec()
    baseline_group: str | None = Field(
        None, description="Baseline = median target per value of this column (global median else)."
    )

    @model_validator(mode="after")
    def _names(self) -> "TableSchema":
        names = self.features.names()
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"features listed twice: {duplicates}")
        if self.target.name in names:
            raise ValueError(f"the target {self.target.name!r} is also a feature")
        required_numbers = {f.name for f in self.features.numeric if f.required}
        if self.total is not None and self.total.multiply_by not in required_numbers:
            raise ValueError(
                f"total.multiply_by {self.total.multiply_by!r} must be a required numeric feature"
            )
        return self


def parse_schema(raw: dict[str, Any]) -> TableSchema:
    """Validate the ``project.table`` config section, with a one-paragraph error."""
    try:
        return TableSchema.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"project.table is invalid: {problems}") from exc
