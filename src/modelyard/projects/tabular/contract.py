"""The tabular contract: what a trained valuation model stands on, typed and parsed in one place.

Training writes it as ``preprocessing.json``; export copies it into the bundle manifest's
``preprocessing``. The task (export's example input and tensors, evaluation) and the serving
adapter read it back through :meth:`TabularContract.parse` only. The JSON keys are those of
format 1 and 2 bundles (``schema``, ``features``, ``target``, ``baseline``, ``example_row``), so
old bundles keep loading.

``max_rows`` (rows per request) is a serving setting, not a model fact: it still comes from the
project's ``serving`` configuration saved in the bundle and from ``serve``'s overrides.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelyard.core.errors import BundleError
from modelyard.projects.tabular.feature_pipeline import FeaturePipeline
from modelyard.projects.tabular.schema import TableSchema


@dataclass(frozen=True)
class TabularContract:
    """The table's schema (features, target), the fitted feature pipeline, the target's scaling,
    the group-median baseline and one real row as the example request."""

    schema: TableSchema
    features: FeaturePipeline
    #: How model scores decode to the target (:func:`.target_scaling.decode_target`).
    target: dict[str, Any]
    #: Group medians of the training target (evaluation's baseline); None in no bundle so far.
    baseline: dict[str, Any] | None
    #: A real validation row (bundles from before it: None, serving builds one from the schema).
    example_row: dict[str, Any] | None

    def to_preprocessing(self) -> dict[str, Any]:
        """The manifest's ``preprocessing`` (and the run's ``preprocessing.json``): plain JSON."""
        return {
            "schema": self.schema.model_dump(mode="json"),
            "example_row": self.example_row,
            "features": self.features.to_json(),
            "target": self.target,
            "baseline": self.baseline,
        }

    @classmethod
    def parse(cls, preprocessing: Mapping[str, Any]) -> "TabularContract":
        """The contract from a manifest's ``preprocessing`` (or a run's ``preprocessing.json``);
        a one-line :class:`BundleError` that says how to re-export."""
        try:
            target = preprocessing["target"]
            if not isinstance(target, dict):
                raise BundleError(f"target must be an object, got {target!r}")
            return cls(
                schema=TableSchema.model_validate(preprocessing["schema"]),
                features=FeaturePipeline.from_json(preprocessing["features"]),
                target=target,
                baseline=preprocessing.get("baseline"),
                example_row=preprocessing.get("example_row") or None,
            )
        except KeyError as exc:
            problem = f"has no {exc}"
        except ValidationError as exc:
            first = exc.errors()[0]
            problem = f"schema.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        except BundleError as exc:
            problem = str(exc).splitlines()[0]
        raise BundleError(
            f"the bundle's preprocessing is not a tabular model's: {problem}; re-export it "
            "with `modelyard export`"
        )
