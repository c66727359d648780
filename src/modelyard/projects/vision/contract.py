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
"""

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard.core.bundle import Manifest
from modelyard.core.errors import BundleError
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


class VisionContract(BaseModel):
    """Classes in output order, the square input size, the per-channel normalisation on the 0-1
    scale, and the test-time views averaged inside the exported graph."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    classes: tuple[str, ...] = Field(min_length=1)
    image_size: int = Field(gt=0)
    mean: tuple[float, ...] = Field(min_length=_CHANNELS, max_length=_CHANNELS)
    std: tuple[float, ...] = Field(min_length=_CHANNELS, max_length=_CHANNELS)
    #: Views averaged inside the model graph; recorded so that /info can say what a call costs.
    test_time_augmentation: str = "none"
    limits: VisionLimits = VisionLimits()

    def to_preprocessing(self) -> dict[str, Any]:
        """The manifest's ``preprocessing`` (and the run's ``preprocessing.json``): plain JSON."""
        return {
            "classes": list(self.classes),
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": RESIZE,
            "test_time_augmentation": self.test_time_augmentation,
            "limits": self.limits.model_dump(mode="json"),
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
