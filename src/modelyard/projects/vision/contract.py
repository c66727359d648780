"""The vision contract: what a trained image classifier stands on, typed and parsed in one place.

Training writes it as ``preprocessing.json``; export copies it into the bundle manifest's
``preprocessing``. The task (export's example input and tensors, evaluation) and the serving
adapter read it back through :meth:`VisionContract.parse` only. The JSON keys are those of
format 1 and 2 bundles, so old bundles keep loading.

The request limits (``top_k``, upload and decoding budgets) are serving settings, not model facts:
they still come from the project's ``serving`` configuration saved in the bundle and from
``serve``'s overrides (:func:`modelyard.serving.adapter.serving_settings`).
"""

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard.core.errors import BundleError

#: Channel statistics are per RGB channel.
_CHANNELS = 3
#: How images are resized (documented in the manifest for its readers).
RESIZE = "bilinear to image_size x image_size (non-square images are squashed)"


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

    def to_preprocessing(self) -> dict[str, Any]:
        """The manifest's ``preprocessing`` (and the run's ``preprocessing.json``): plain JSON."""
        return {
            "classes": list(self.classes),
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": RESIZE,
            "test_time_augmentation": self.test_time_augmentation,
        }

    @classmethod
    def parse(cls, preprocessing: Mapping[str, Any]) -> "VisionContract":
        """The contract from a manifest's ``preprocessing`` (or a run's ``preprocessing.json``);
        bundles from before test-time augmentation have ``none``. One-line :class:`BundleError`
        that says how to re-export."""
        known = {k: v for k, v in preprocessing.items() if k in cls.model_fields}
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BundleError(
                f"the bundle's preprocessing is not a vision model's: {where}: {first['msg']}; "
                "re-export it with `modelyard export`"
            ) from None
