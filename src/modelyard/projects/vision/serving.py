"""Vision serving: ``POST /predict`` with an uploaded image (multipart) -> top-k classes, and for
a two-class bundle with a decision threshold also ``decision``: the positive class's
probability, the threshold and the decision (:func:`.binary.binary_decisions`, which offline
``modelyard predict`` applies too).

Preprocessing is :func:`.image_decoding.image_pixels` (what training cached) normalised with the
training statistics. The prediction log gets the upload's drift features
(:mod:`.drift_features`: size, image statistics, and the model's embedding output when the
bundle has one, from the same ONNX Runtime call as the probabilities).

Uploads are refused with a precise 4xx: not multipart (415), no ``file`` part
(422), larger than ``max_upload_bytes`` (413), not an image / truncated / unsupported format /
over ``max_pixels`` / over ``max_decoded_bytes`` (422, naming the project's limit).

Decoding memory per worker is bounded: the header is checked against the budget first (no pixel
decoded), then at most ``max_concurrent_decodes`` decodes run at once; others wait up to
``max_decode_wait_s`` (then 503 with ``Retry-After``). A worker's decode memory is therefore at
most ``max_concurrent_decodes x max_decoded_bytes``, and large decodes give it back afterwards.
"""

import asyncio
import io
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool

from modelyard.core.errors import ConfigError, DataError
from modelyard.core.spreadsheet import SpreadsheetSafeWriter
from modelyard.projects.vision.binary import binary_decisions
from modelyard.projects.vision.contract import VisionContract
from modelyard.projects.vision.drift_features import (
    EMBEDDING_KEY,
    logged_embedding,
    upload_features,
)
from modelyard.projects.vision.image_decoding import (
    ImageError,
    ImageLimits,
    OpenedImage,
    normalise,
    open_image,
    opened_pixels,
    return_large_blocks_to_the_os,
)
from modelyard.projects.vision.logged_outputs import logged_outputs
from modelyard.projects.vision.metrics import ranked_classes
from modelyard.serving.adapter import UPLOAD_FIELD, ExampleRequest, ServingAdapter, Upload
from modelyard.serving.context import PredictionEvent, record_prediction
from modelyard.serving.http_checks import BodyLimits
from modelyard.serving.value_units import RATIO

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: Offline predict's columns for a two-class bundle's decision (the served ``decision``'s keys).
DECISION_COLUMNS = ("positive_class", "positive_probability", "threshold", "is_positive", "label")


class ClassProbability(BaseModel):
    label: str = Field(examples=["Forest"])
    probability: float = Field(examples=[0.97])


class ImagePrediction(BaseModel):
    model: str
    version: str
    top: list[ClassProbability] = Field(description="Most probable classes, most probable first.")


class BinaryDecision(BaseModel):
    """A two-class model's decision: positive when ``positive_probability >= threshold``."""

    positive_class: str = Field(examples=["AnnualCrop"])
    positive_probability: float = Field(examples=[0.83])
    threshold: float = Field(
        examples=[0.41], description="Chosen on the validation split at training (see /info)."
    )
    is_positive: bool
    label: str = Field(examples=["AnnualCrop"], description="The decided class.")


class BinaryImagePrediction(ImagePrediction):
    decision: BinaryDecision


class VisionServing(ServingAdapter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contract = VisionContract.from_manifest(self.bundle.manifest)
        self.classes = list(self.contract.classes)
        self.size = self.contract.image_size
        self.test_time_augmentation = self.contract.test_time_augmentation
        self.mean = list(self.contract.mean)
        self.std = list(self.contract.std)
        # The contract's request limits, with the deployer's explicit settings on top.
        limits = self.contract.limits.with_overrides(self.settings)
        self.top_k = limits.top_k
        self.max_upload_bytes = limits.max_upload_bytes
        self.limits = ImageLimits(
            max_pixels=limits.max_pixels,
            max_decoded_bytes=limits.max_decoded_bytes,
            owner=f"project {self.bundle.manifest.project}",
        )
        self.max_concurrent_decodes = positive_setting(
            "max_concurrent_decodes", limits.max_concurrent_decodes
        )
        self.max_decode_wait_s = limits.max_decode_wait_s
        if not 0 <= self.max_decode_wait_s < float("inf"):
            raise ConfigError(
                f"serving setting max_decode_wait_s must be seconds >= 0, "
                f"got {self.max_decode_wait_s!r}"
            )
        self._decode_slots = asyncio.Semaphore(self.max_concurrent_decodes)
        self.example_png = example_png(self.size, self.mean)
        return_large_blocks_to_the_os()

    def check_contract(self) -> None:
        """A square RGB image of image_size in, one logit per class out."""
        for axis in (-2, -1):
            self.require_axis("inputs", axis, self.size, f"image_size {self.size}")
        self.require_axis("outputs", -1, len(self.classes), f"{len(self.classes)} classes")

    def task_info(self) -> dict[str, Any]:
        decision = self.contract.decision
        return {
            "classes": self.classes,
            # two-class bundles: the threshold /predict applies and how it was chosen
            **({} if decision is None else {"decision": decision.model_dump(mode="json")}),
            "image_size": self.size,
            "test_time_augmentation": self.test_time_augmentation,
            "top_k": self.top_k,
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.limits.max_pixels,
            "max_decoded_bytes": self.limits.max_decoded_bytes,
            "max_concurrent_decodes": self.max_concurrent_decodes,
            "max_decode_wait_s": self.max_decode_wait_s,
        }

    def open(self, data: bytes) -> OpenedImage:
        """Check the upload's header against this project's limits; decodes nothing."""
        return open_image(data, self.limits, self.size)

    def decode_opened(self, opened: OpenedImage, data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
        """A checked header -> the model's (1, 3, size, size) input and the image's features.

        The pixels are :func:`.image_decoding.image_pixels`'s, step for step (training's cache).
        """
        pixels = opened_pixels(opened, self.size)
        batch = normalise(pixels, self.mean, self.std)[None]
        features = {
            # size as sent and the drift statistics (drift_features.log_rows reads them back)
            **upload_features(len(data), opened.original_size, pixels),
            # per-channel mean of the normalised input: ~0 for images like the training data
            "channel_means": [round(float(v), 4) for v in batch[0].mean(axis=(1, 2))],
        }
        return batch, features

    def decode(self, data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
        """Upload bytes -> the model's (1, 3, size, size) input and the image's summary features."""
        return self.decode_opened(self.open(data), data)

    async def decode_async(self, data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`decode` off the event loop, with at most ``max_concurrent_decodes`` at once.

        The header check runs before waiting for a slot, so refusals never queue. A slot is
        given back when the decode thread finishes, not when the request gives up (504 or a
        client gone): a thread cannot be stopped, and its memory counts until it ends.
        """
        opened = await run_in_threadpool(self.open, data)
        try:
            async with asyncio.timeout(self.max_decode_wait_s):
                await self._decode_slots.acquire()
        except TimeoutError:
            raise HTTPException(
                503,
                f"busy decoding other images (at most {self.max_concurrent_decodes} at once); "
                "retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        decoding = asyncio.ensure_future(run_in_threadpool(self.decode_opened, opened, data))
        decoding.add_done_callback(self._free_decode_slot)
        return await asyncio.shield(decoding)

    def _free_decode_slot(self, decoding: "asyncio.Future[Any]") -> None:
        self._decode_slots.release()
        if not decoding.cancelled():
            decoding.exception()  # retrieved: nobody awaits it once its request has given up

    def top_classes(self, scores: np.ndarray) -> list[dict[str, Any]]:
        return ranked_classes(scores, self.classes, self.top_k)[0]

    def decision(self, scores: np.ndarray) -> dict[str, Any] | None:
        """The decision for one image's logits, None without a decision threshold."""
        if self.contract.decision is None:
            return None
        return binary_decisions(scores, self.classes, self.contract.decision)[0]

    def classify(self, data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Upload bytes -> the top classes and (two-class bundles) the decision."""
        batch, _ = self.decode(data)
        scores = self.model.run(batch)
        return self.top_classes(scores), self.decision(scores)

    def example_request(self) -> ExampleRequest:
        """A synthetic PNG upload of the model's size (see :func:`example_png`)."""
        upload = Upload("example.png", "image/png", self.example_png)
        return ExampleRequest(files={UPLOAD_FIELD: upload})

    def warm_up(self) -> None:
        self.classify(self.example_png)  # decoding included: the first upload pays for neither

    def router(self) -> APIRouter:
        router = APIRouter(tags=["prediction"])
        manifest = self.bundle.manifest
        answer = ImagePrediction if self.contract.decision is None else BinaryImagePrediction

        @router.post(
            "/predict",
            response_model=answer,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {
                                        "type": "string",
                                        "format": "binary",
                                        "description": "A JPEG or PNG image",
                                    }
                                },
                            }
                        }
                    },
                }
            },
            responses={
                413: {"description": "Upload too large"},
                415: {"description": "Not a multipart upload"},
                422: {
                    "description": "Missing file, not an image, corrupt, too many pixels, "
                    "too many bytes to decode"
                },
                503: {"description": "Too many images being decoded; retry (Retry-After)"},
            },
        )
        async def predict(request: Request) -> ImagePrediction:
            """Classify one uploaded image (multipart field ``file``)."""
            data = await self._read_upload(request)
            try:
                batch, features = await self.decode_async(data)
            except ImageError as exc:
                raise HTTPException(422, str(exc)) from exc
            outputs = await self.model.run_outputs_async(batch)
            top = self.top_classes(outputs[0])
            decided = self.decision(outputs[0])
            if len(outputs) > 1:  # bundles exported before the embedding output have one
                features[EMBEDDING_KEY] = logged_embedding(outputs[1][0])
            record_prediction(logged_prediction(features, top, decided))
            ranked = [ClassProbability(**t) for t in top]
            if decided is not None:
                return BinaryImagePrediction(
                    model=manifest.name,
                    version=manifest.version,
                    top=ranked,
                    decision=BinaryDecision(**decided),
                )
            return ImagePrediction(model=manifest.name, version=manifest.version, top=ranked)

        return router

    async def _read_upload(self, request: Request) -> bytes:
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise HTTPException(415, f"expected a multipart/form-data upload, got {content_type!r}")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_upload_bytes + 4096:
            raise HTTPException(413, f"upload larger than {self.max_upload_bytes} bytes")
        try:
            form = await request.form(max_files=1, max_fields=10)
        except HTTPException:
            raise  # e.g. the server's body size limit (413)
        except Exception as exc:  # starlette raises several parser errors for bad multipart
            raise HTTPException(422, f"malformed multipart body: {exc}") from exc
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "no file part named 'file' in the upload")
        data = await upload.read(self.max_upload_bytes + 1)
        if len(data) > self.max_upload_bytes:
            raise HTTPException(413, f"upload larger than {self.max_upload_bytes} bytes")
        return data

    def predict_file(self, source: Path, output: Path) -> int:
        """A folder of images (searched recursively) -> CSV: file, top-k labels, probabilities,
        and for a two-class bundle with a threshold the decision columns the server answers."""
        if not source.is_dir():
            raise DataError(f"expected a folder of images, got {source}")
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"no .jpg/.jpeg/.png images under {source}")
        output.parent.mkdir(parents=True, exist_ok=True)
        k = min(self.top_k, len(self.classes))
        decided = DECISION_COLUMNS if self.contract.decision is not None else ()
        with output.open("w", newline="") as handle:
            writer = SpreadsheetSafeWriter(handle)  # file names and class names are text
            writer.writerow(
                [
                    "file",
                    *(f"{kind}_{i + 1}" for i in range(k) for kind in ("label", "probability")),
                    *decided,
                    "error",
                ]
            )
            for path in files:
                name = path.relative_to(source).as_posix()
                try:
                    top, decision = self.classify(path.read_bytes())
                    cells = [v for t in top for v in (t["label"], t["probability"])]
                    extra = [decision[c] for c in decided] if decision is not None else []
                    writer.writerow([name, *cells, *extra, ""])
                except ImageError as exc:
                    writer.writerow([name, *[""] * (2 * k + len(decided)), exc])
        return len(files)

    # -- ground truth (POST /feedback) -------------------------------------------------------
    def truth_model(self) -> type[BaseModel]:
        """``{"label": CLASS}``: the image's true class, one of the bundle's classes."""
        return truth_model(tuple(self.classes))

    def truth_limits(self) -> BodyLimits:
        longest = max((len(c) for c in self.classes), default=1)
        return BodyLimits(
            max_bytes=_TRUTH_BYTES + _ESCAPED_CHAR_BYTES * longest,
            max_containers=1,
            max_strings=2,
            max_separators=1,
            too_many="a truth holds one label",
        )


def logged_prediction(
    features: dict[str, Any], top: list[dict[str, Any]], decided: dict[str, Any] | None
) -> PredictionEvent:
    """What one classified image adds to the prediction log and the metrics: the answered
    class (the decision's label for a two-class model with a threshold, else the most probable
    class) is the counted label; a decision's positive probability is exported beside the top
    class's (``.logged_outputs`` says what ``outputs`` holds)."""
    values = {"top1_probability": [top[0]["probability"]]}
    label = top[0]["label"]
    if decided is not None:
        values["positive_probability"] = [decided["positive_probability"]]
        label = decided["label"]
    return PredictionEvent(
        inputs=features,
        outputs=logged_outputs(top, decided),
        values=values,
        labels=[label],
        unit=RATIO,
    )


def example_png(size: int, mean: list[float]) -> bytes:
    """A ``size`` x ``size`` PNG of the training images' mean colour, darkening from top to
    bottom: the normalised input stays near 0, as for a typical image, and the file is small
    (every row is one colour), so ``/info`` can carry it."""
    from PIL import Image

    centre = np.clip(np.asarray(mean, dtype=np.float64) * 255.0, 24.0, 231.0)
    shade = np.linspace(24.0, -24.0, size)[:, None, None]
    pixels = np.broadcast_to(centre + shade, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels).astype(np.uint8)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def positive_setting(name: str, value: int) -> int:
    """A whole-number setting of at least 1, or a :class:`ConfigError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"serving setting {name} must be a whole number >= 1, got {value!r}")
    return value


#: Bytes of a truth beside its label's characters (braces, key, quotes, whitespace).
_TRUTH_BYTES = 256
_ESCAPED_CHAR_BYTES = 12


@cache
def truth_model(classes: Sequence[str]) -> type[BaseModel]:
    """The vision truth: ``label`` is one of ``classes`` (anything else is refused by name)."""
    label: Any = Literal[tuple(classes)]
    model: type[BaseModel] = create_model(
        "VisionTruth",
        __config__=ConfigDict(extra="forbid"),
        label=(label, Field(description="The image's true class.")),
    )
    return model
