"""The vision contract: what a trained image classifier stands on, typed and parsed in one place.

Training writes it as ``preprocessing.json``; export copies it into the bundle manifest's
``preprocessing``. The task (export's example input and tensors, evaluation) and the serving
adapter read it back through :meth:`VisionContract.parse` only. The JSON keys are those of
format 1 and 2 bundles, so old bundles keep loading.

The request limits (``top_k``, upload and decoding budgets, :class:`VisionLimits`) are part of
the contract too (``preprocessing.limits``): training writes them from the project's ``serving:``
configuration, and serving reads them from here (``serve`` overrides on top), never from the
training configuration the manifest keeps as provenance, except through :meth:`parse` for bundles
written before the limits were part of the contract.

A two-class model's decision threshold (:class:`DecisionThreshold`: positive class, threshold,
the rule that chose it on the validation split and what it reached there) is part of it too
(``preprocessing.decision``): training adds it after fitting, serving and offline predict apply
it (:func:`.binary.binary_decisions`). The rule itself is configuration
(``project.decision``, :class:`DecisionRule`).
"""

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelyard.core.bundle import Manifest
from modelyard.core.errors import BundleError, ConfigError
from modelyard.projects.serving_limits import ServingLimits
from modelyard.projects.vision.image_decoding import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_PIXELS

#: Channel statistics are per RGB channel.
_CHANNELS = 3
#: How images are resized (documented in the manifest for its readers).
RESIZE = "bilinear to image_size x image_size (non-square images are squashed)"


class VisionLimits(ServingLimits):
    """What one upload may cost; the adapter checks the ranges (one-line ConfigErrors)."""

    #: Classes returned per image.
    top_k: int = 3
    max_upload_bytes: int = 10_000_000
    #: Refused from the header, before decoding (see :class:`.image_decoding.ImageLimits`).
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    #: Decodes at once per worker; others wait up to ``max_decode_wait_s``, then 503.
    max_concurrent_decodes: int = 2
    max_decode_wait_s: float = 10.0


#: How a two-class model's decision threshold is chosen on the validation split.
RULES = ("max_f1", "precision", "recall")


class DecisionRule(BaseModel):
    """``project.decision``: the rule that chooses a two-class model's threshold, and the
    positive class (``None``: the second class in the model's class order)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["max_f1", "precision", "recall"] = "max_f1"
    #: The precision or recall to reach (``rule: precision|recall`` only), in (0, 1].
    target: float | None = Field(default=None, gt=0.0, le=1.0)
    positive: str | None = None

    @model_validator(mode="after")
    def _target_fits_rule(self) -> "DecisionRule":
        if self.rule == "max_f1" and self.target is not None:
            raise ValueError("rule max_f1 takes no target (set rule: precision or recall)")
        if self.rule != "max_f1" and self.target is None:
            raise ValueError(f"rule {self.rule} needs a target in (0, 1], e.g. 0.9")
        return self

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "DecisionRule":
        """From the project's ``decision:`` (absent: the defaults); a one-line ConfigError."""
        try:
            return cls.model_validate(dict(section or {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            if first["type"] == "literal_error":
                message = f"must be one of {', '.join(RULES)}, got {first['input']!r}"
            raise ConfigError(
                f"project.decision{'.' + where if where else ''}: {message}"
            ) from None


class DecisionThreshold(BaseModel):
    """A two-class model's decision: positive when the positive class's probability is
    ``>= threshold``; how it was chosen, and what it achieved where it was chosen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positive_class: str
    threshold: float = Field(ge=0.0, le=1.0)
    rule: Literal["max_f1", "precision", "recall"]
    target: float | None = None
    #: False when no threshold reached the target precision (the most precise one was taken).
    target_met: bool = True
    #: Which images it was chosen on (the validation split, with its size).
    chosen_on: str
    precision: float
    recall: float
    f1: float


class PretrainedRecord(BaseModel):
    """Which pretrained weights the model started from (provenance; serving needs only the
    statistics): ``model.pretrained`` as configured and the file's sha256 (None for timm's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    sha256: str | None = None


#: Where a contract's ``mean``/``std`` come from (``model.normalisation``, :mod:`.pretrained`).
NormalisationOrigin = Literal["data", "imagenet", "custom", "pretrained run"]


class VisionContract(BaseModel):
    """Classes in output order, the square input size, the per-channel normalisation on the 0-1
    scale (and where it comes from), and the test-time views averaged inside the exported graph.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    classes: tuple[str, ...] = Field(min_length=1)
    image_size: int = Field(gt=0)
    mean: tuple[float, ...] = Field(min_length=_CHANNELS, max_length=_CHANNELS)
    std: tuple[float, ...] = Field(min_length=_CHANNELS, max_length=_CHANNELS)
    #: ``data``: fitted on the training split (every bundle before pretrained weights);
    #: ``imagenet``: the ImageNet weights' statistics; ``custom``; ``pretrained run``.
    normalisation: NormalisationOrigin = "data"
    #: The weights training started from; None when trained from scratch.
    pretrained: PretrainedRecord | None = None
    #: Views averaged inside the model graph; recorded so that /info can say what a call costs.
    test_time_augmentation: str = "none"
    limits: VisionLimits = VisionLimits()
    #: Two-class models only: the threshold chosen on validation after training (None before,
    #: for more classes, and in bundles exported before it existed: those answer top-k only).
    decision: DecisionThreshold | None = None

    @model_validator(mode="after")
    def _decision_fits_classes(self) -> "VisionContract":
        if self.decision is not None:
            if len(self.classes) != 2:
                raise ValueError(f"a decision threshold needs 2 classes, not {len(self.classes)}")
            if self.decision.positive_class not in self.classes:
                raise ValueError(f"positive class {self.decision.positive_class!r} is not a class")
        return self

    def to_preprocessing(self) -> dict[str, Any]:
        """The manifest's ``preprocessing`` (and the run's ``preprocessing.json``): plain JSON."""
        return {
            "classes": list(self.classes),
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "normalisation": self.normalisation,
            **(
                {}
                if self.pretrained is None
                else {"pretrained": self.pretrained.model_dump(mode="json")}
            ),
            "resize": RESIZE,
            "test_time_augmentation": self.test_time_augmentation,
            "limits": self.limits.model_dump(mode="json"),
            **(
                {} if self.decision is None else {"decision": self.decision.model_dump(mode="json")}
            ),
        }

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "VisionContract":
        return cls.parse(manifest.preprocessing, manifest.config)

    @classmethod
    def parse(
        cls, preprocessing: Mapping[str, Any], config: Mapping[str, Any] | None = None
    ) -> "VisionContract":
        """The contract from a manifest's ``preprocessing`` (or a run's ``preprocessing.json``);
        bundles from before test-time augmentation have ``none``. One-line :class:`BundleError`
        that says how to re-export.

        ``config`` (the resolved training configuration saved beside it) is read only for
        bundles written before the limits were part of the contract.
        """
        known = {k: v for k, v in preprocessing.items() if k in cls.model_fields}
        try:
            if "limits" not in known:  # a bundle written before the contract held its limits
                known["limits"] = VisionLimits.of_old_bundle(config)
            return cls.model_validate(known)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BundleError(
                f"the bundle's preprocessing is not a vision model's: {where}: {first['msg']}; "
                "re-export it with `modelyard export`"
            ) from None
