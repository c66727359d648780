"""The NILM contract: the facts a trained seq2point model stands on, typed and parsed in one place.

Training builds it from the configuration (:class:`ApplianceSettings`, one table per appliance)
and writes it to ``preprocessing.json``; export copies it into the bundle manifest's
``preprocessing``, its home in the bundle. Evaluation, export, the serving adapter, offline
prediction and ``/info`` read it back through :meth:`NilmContract.parse` only, and the load
test reads what ``/info`` shows of it as :class:`NilmRequestBounds`. Serving never reads the
training configuration that the manifest keeps as provenance (``manifest.config``), except to
complete bundles written before the contract existed (see :meth:`NilmContract.parse`).

The JSON keys are those of format 1 and 2 bundles (``window``, ``interval_s``, ``appliances`` as
an ordered list, ``normalisation``, ``on_threshold_w`` by appliance), plus ``limit_w``,
``max_aggregate_w``, ``min_length`` and ``max_length``, so old bundles keep loading.
"""

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelyard.core.bundle import Manifest
from modelyard.core.errors import BundleError, first_error
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.nilm.windows import check_window

#: Longest accepted ``POST /predict`` series (readings) where a bundle does not say: two weeks of
#: minutes.
DEFAULT_MAX_LENGTH = 20160
#: How serving treats the ends of a series (documented in the manifest for its readers).
EDGES = "edge readings repeated window//2 times; every input reading gets an output"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApplianceSettings(_Frozen):
    """One row of the configuration's ``project.appliances`` table."""

    #: On above this power (W): oversampling, the gated loss, activation cutting and on/off F1.
    on_threshold_w: float = Field(ge=0, allow_inf_nan=False)
    #: Readings above this power (W) are physically impossible and become missing.
    limit_w: float = Field(gt=0, allow_inf_nan=False)
    #: How augmentation cuts this appliance's activations (None: the augment section's default);
    #: checked by :func:`..augmentation.activation_rules`, which knows the window and interval.
    activations: dict[str, Any] | None = None


class Appliance(_Frozen):
    """What the bundle keeps of an appliance's settings."""

    on_threshold_w: float = Field(ge=0)
    #: ``inf`` for bundles written before limits were part of the contract and without one.
    limit_w: float = Field(gt=0)


class NilmRequestBounds(BaseModel):
    """What a ``POST /predict`` request must respect: ``GET /info``'s details, read back by the
    load test (``extra`` keys such as the example are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    window: int
    interval_s: int = Field(gt=0)
    appliances: tuple[str, ...] = ()
    min_length: int = Field(ge=1)
    max_length: int = Field(ge=1)
    #: None: the server does not say (no physical limit on a reading).
    max_aggregate_w: float | None = None


class NilmContract(_Frozen):
    """The window, sampling interval, appliances (in output order, each with its thresholds),
    normalisation statistics and accepted request lengths of one trained model."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    window: int
    interval_s: int = Field(gt=0)
    appliances: dict[str, Appliance] = Field(min_length=1)
    normalisation: Normalisation
    min_length: int = Field(ge=1)
    max_length: int = Field(ge=1)
    #: Mains readings above this (W) are refused; ``inf`` for old bundles without a limit.
    max_aggregate_w: float = Field(gt=0)

    @field_validator("window")
    @classmethod
    def _odd_window(cls, window: int) -> int:
        check_window(window)
        return window

    @property
    def names(self) -> list[str]:
        """Appliance names in the model's output order."""
        return list(self.appliances)

    @property
    def on_thresholds(self) -> list[float]:
        return [a.on_threshold_w for a in self.appliances.values()]

    def with_lengths(self, min_length: int | None, max_length: int | None) -> "NilmContract":
        """The contract with the accepted request lengths overridden (``serve --max-length``);
        a minimum below 1 means 1: an empty series has no edge to pad from."""
        least = None if min_length is None else max(1, int(min_length))
        update = {"min_length": least, "max_length": max_length}
        changed = {k: v for k, v in update.items() if v is not None}
        return NilmContract.model_validate(self.model_dump() | changed) if changed else self

    def request_bounds(self) -> NilmRequestBounds:
        return NilmRequestBounds(
            window=self.window,
            interval_s=self.interval_s,
            appliances=tuple(self.appliances),
            min_length=self.min_length,
            max_length=self.max_length,
            max_aggregate_w=self.max_aggregate_w,
        )

    def to_preprocessing(self) -> dict[str, Any]:
        """The manifest's ``preprocessing`` (and the run's ``preprocessing.json``): plain JSON."""
        return {
            "window": self.window,
            "interval_s": self.interval_s,
            "appliances": self.names,
            "normalisation": self.normalisation.to_json(),
            "on_threshold_w": {n: a.on_threshold_w for n, a in self.appliances.items()},
            "limit_w": {n: a.limit_w for n, a in self.appliances.items()},
            "max_aggregate_w": self.max_aggregate_w,
            "min_length": self.min_length,
            "max_length": self.max_length,
            "edges": EDGES,
        }

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "NilmContract":
        return cls.parse(manifest.preprocessing, manifest.config)

    @classmethod
    def parse(
        cls, preprocessing: Mapping[str, Any], config: Mapping[str, Any] | None = None
    ) -> "NilmContract":
        """The contract from a manifest's ``preprocessing`` (or a run's ``preprocessing.json``).

        ``config`` (the resolved training configuration saved beside it) is read only for
        bundles and runs written before limits and lengths were part of the contract: their
        ``project.data.limits_w`` and ``project.serving`` complete it. Raises
        :class:`BundleError` in one line, saying how to re-export.
        """
        try:
            names = [str(a) for a in preprocessing["appliances"]]
            thresholds = preprocessing["on_threshold_w"]
            window = int(preprocessing["window"])
            legacy = _LegacyFacts(config or {}, window)
            limits = preprocessing.get("limit_w") or legacy.limits_w(names)
            lacking = [n for n in names if n not in thresholds or n not in limits]
            if lacking:
                raise BundleError(
                    f"the manifest contradicts itself: preprocessing.appliances lists {lacking} "
                    "without an on_threshold_w or limit_w; re-export the bundle"
                )
            return cls(
                window=window,
                interval_s=int(preprocessing["interval_s"]),
                appliances={
                    n: Appliance(on_threshold_w=thresholds[n], limit_w=limits[n]) for n in names
                },
                normalisation=Normalisation.from_json(preprocessing["normalisation"]),
                min_length=preprocessing.get("min_length", legacy.min_length()),
                max_length=preprocessing.get("max_length", legacy.max_length()),
                max_aggregate_w=preprocessing.get("max_aggregate_w", legacy.max_aggregate_w()),
            )
        except KeyError as exc:
            raise BundleError(
                f"the bundle's preprocessing has no {exc}: not a NILM bundle of this version; "
                "re-export it with `modelyard export`"
            ) from None
        except (TypeError, ValueError) as exc:
            raise BundleError(
                f"the bundle's preprocessing is malformed: {first_error(exc)}; re-export it "
                "with `modelyard export`"
            ) from None


class _LegacyFacts:
    """Facts that bundles written before the contract held them kept only in their training
    configuration (``project.data.limits_w``, ``project.serving``). For those bundles only."""

    def __init__(self, config: Mapping[str, Any], window: int) -> None:
        project = config.get("project") or {}
        self.limits: Mapping[str, Any] = (project.get("data") or {}).get("limits_w") or {}
        self.serving: Mapping[str, Any] = project.get("serving") or {}
        self.window = window

    def limits_w(self, names: list[str]) -> dict[str, float]:
        return {n: float(self.limits.get(n, math.inf)) for n in names}

    def max_aggregate_w(self) -> float:
        return float(self.limits.get("aggregate", math.inf))

    def min_length(self) -> int:
        # At least one reading: an empty series has no edge to pad from.
        return max(1, int(self.serving.get("min_length", self.window)))

    def max_length(self) -> int:
        return int(self.serving.get("max_length", DEFAULT_MAX_LENGTH))
