"""Feature preprocessing for schema-driven tables: fitted on training rows, stored as plain JSON.

The same :class:`FeaturePipeline` runs at training time (on columns taken from a data frame) and
inside the prediction server (on one request), so it uses numpy and the standard library only:
importing pandas here would drag it into the server. Everything the transform needs lives in
``params``, a JSON-able dict, so a bundle carries the preprocessing as data rather than code; its
format is checked on load by :mod:`.feature_params` and must stay readable by older bundles.

This module orchestrates; the rules of each feature kind live with its encoder. Output columns
come in this order: numeric features (:mod:`.numeric_encoding`), then categorical features
(:mod:`.categorical_encoding`: one-hot, target and number encodings), then date features
(:mod:`.date_encoding`), each kind in schema order.

Errors: a feature column absent from the input is a :class:`ConfigError` at fit time (the schema
names a column the data lacks) and a :class:`DataError` at transform time; columns of different
lengths, a value that cannot be read (naming the feature and row) and fitting on zero rows are
:class:`DataError`; malformed stored parameters are a :class:`BundleError`.
"""

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.tabular.categorical_encoding import (
    categorical_block,
    categorical_names,
    fit_categorical,
)
from modelyard.projects.tabular.date_encoding import date_block, date_names, fit_date, read_days
from modelyard.projects.tabular.feature_params import (
    FEATURE_KINDS,
    FORMAT_VERSION,
    validated_params,
)
from modelyard.projects.tabular.feature_values import (
    Block,
    Columns,
    read_categories,
    read_numbers,
    row_count,
)
from modelyard.projects.tabular.numeric_encoding import fit_numeric, numeric_block, numeric_names
from modelyard.projects.tabular.schema import Features, Target
from modelyard.projects.tabular.target_encoding import (
    Encoded,
    encode_categorical,
    fit_target_encoding,
)
from modelyard.projects.tabular.target_scaling import model_space


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
        n_rows = row_count(columns, names, ConfigError)
        if n_rows == 0:
            raise DataError("cannot fit feature preprocessing on zero rows")
        keys = {f.name: read_categories(columns[f.name]) for f in features.categorical}
        space = None
        if target is not None and target_values is not None:
            space = model_space(target_values, target.log)
            if space.size != n_rows:
                raise DataError(f"{space.size} target values for {n_rows} feature rows")
        categorical = [fit_categorical(f, keys[f.name]) for f in features.categorical]
        out_of_fold = fit_target_encoding(features, categorical, keys, space)
        params: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "numeric": [
                fit_numeric(f, read_numbers(f.name, columns[f.name])) for f in features.numeric
            ],
            "categorical": categorical,
            "date": [fit_date(f, *read_days(f.name, columns[f.name])) for f in features.date],
        }
        pipeline = cls(params=params)
        return pipeline, pipeline._transform(columns, n_rows, keys, out_of_fold)

    @property
    def output_names(self) -> list[str]:
        """One readable name per output column, in column order."""
        return [
            *(n for spec in self.params["numeric"] for n in numeric_names(spec)),
            *(n for spec in self.params["categorical"] for n in categorical_names(spec)),
            *(n for spec in self.params["date"] for n in date_names(spec)),
        ]

    def _feature_names(self) -> list[str]:
        return [spec["name"] for kind in FEATURE_KINDS for spec in self.params[kind]]

    def transform(self, columns: Columns) -> NDArray[np.float32]:
        """Rows -> a float32 ``(n_rows, len(output_names))`` matrix; extra columns are ignored."""
        n_rows = row_count(columns, self._feature_names(), DataError)
        categorical = self.params["categorical"]
        keys = {spec["name"]: read_categories(columns[spec["name"]]) for spec in categorical}
        return self._transform(columns, n_rows, keys, encode_categorical(categorical, keys))

    def _transform(
        self,
        columns: Columns,
        n_rows: int,
        keys: Mapping[str, list[str | None]],
        codes: Mapping[str, Encoded],
    ) -> NDArray[np.float32]:
        block: Block = []
        for spec in self.params["numeric"]:
            block.extend(numeric_block(spec, read_numbers(spec["name"], columns[spec["name"]])))
        for spec in self.params["categorical"]:
            name = spec["name"]
            block.extend(categorical_block(spec, keys[name], codes.get(name)))
        for spec in self.params["date"]:
            block.extend(date_block(spec, *read_days(spec["name"], columns[spec["name"]])))
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
