"""The tabular contract: what a trained valuation model stands on, typed and parsed in one place.

Training writes it as ``preprocessing.json``; export copies it into the bundle manifest's
``preprocessing``. The task (export's example input and tensors, evaluation) and the serving
adapter read it back through :meth:`TabularContract.parse` only. The JSON keys are those of
format 1 and 2 bundles (``schema``, ``features``, ``target``, ``baseline``, ``example_row``), so
old bundles keep loading.

The request limit (``max_rows``, :class:`TabularLimits`) is part of the contract too
(``preprocessing.limits``): training writes it from the project's ``serving:`` configuration, and
serving reads it from here, never from the training configuration the manifest keeps as
provenance, except through :meth:`TabularContract.parse` for bundles written before the limits
were part of the contract.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError

from modelyard.core.bundle import Manifest
from modelyard.core.errors import BundleError
from modelyard.projects.serving_limits import ServingLimits
from modelyard.projects.tabular.feature_pipeline import FeaturePipeline
from modelyard.projects.tabular.schema import TableSchema

#: Rows per ``POST /predict`` where neither the bundle nor the project's ``serving:`` says.
DEFAULT_MAX_ROWS = 1000


class TabularLimits(ServingLimits):
    """What one request may hold."""

    max_rows: int = Field(default=DEFAULT_MAX_ROWS, ge=1)


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
    limits: TabularLimits = field(default_factory=TabularLimits)

    def to_preprocessing(self) -> dict[str, Any]:
        """The manifest's ``preprocessing`` (and the run's ``preprocessing.json``): plain JSON."""
        return {
            "schema": self.schema.model_dump(mode="json"),
            "example_row": self.example_row,
            "features": self.features.to_json(),
            "target": self.target,
            "baseline": self.baseline,
            "limits": self.limits.model_dump(mode="json"),
        }

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "TabularContract":
        return cls.parse(manifest.preprocessing, manifest.config)

    @classmethod
    def parse(
        cls, preprocessing: Mapping[str, Any], config: Mapping[str, Any] | None = None
    ) -> "TabularContract":
        """The contract from a manifest's ``preprocessing`` (or a run's ``preprocessing.json``);
        a one-line :class:`BundleError` that says how to re-export.

        ``config`` (the resolved training configuration saved beside it) is read only for
        bundles written before the limits were part of the contract.
        """
        try:
            saved = preprocessing.get("limits")
            limits = (
                TabularLimits.of_old_bundle(config)  # written before the contract held limits
                if saved is None
                else TabularLimits.model_validate(saved)
            )
            target = preprocessing["target"]
            if not isinstance(target, dict):
                raise BundleError(f"target must be an object, got {target!r}")
            return cls(
                schema=TableSchema.model_validate(preprocessing["schema"]),
                features=FeaturePipeline.from_json(preprocessing["features"]),
                target=target,
                baseline=preprocessing.get("baseline"),
                example_row=preprocessing.get("example_row") or None,
                limits=limits,
            )
        except KeyError as exc:
            problem = f"has no {exc}"
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "limits" if exc.title == TabularLimits.__name__ else "schema"
            problem = f"{where}.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        except BundleError as exc:
            problem = str(exc).splitlines()[0]
        raise BundleError(
            f"the bundle's preprocessing is not a tabular model's: {problem}; re-export it "
            "with `modelyard export`"
        )
