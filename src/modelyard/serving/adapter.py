"""What a task family provides to the server: its ``/predict`` route and offline batch prediction.

Adapters are torch-free: they see the bundle (manifest + ONNX model) and numpy only. The model
they get is a :class:`ModelRunner`: the ONNX Runtime session itself (offline prediction) or the
micro-batcher in front of it (the server); both predict a float32 batch, and both return a
model's further outputs (a vision model's embedding) from the same call when asked.

A route tells the server what it predicted with :func:`modelyard.serving.context.record_prediction`
(the inputs or their summary features, the outputs, values for the distribution metrics and
their unit, a :class:`modelyard.serving.value_units.ValueUnit`); the server logs it once the
response has been sent.

Every adapter checks its task's facts (window, appliances, classes, features) against the
manifest's tensors as soon as it is built (:meth:`ServingAdapter.check_contract`), so a bundle
whose manifest contradicts itself refuses to start instead of failing every request.

Every adapter has one example request (:meth:`ServingAdapter.example_request`), built from the
bundle alone: the OpenAPI example, the warm-up, ``GET /info``'s ``details.example`` and the load
test's payloads all start from it, and so will the UI and drift references.

The server, ``modelyard predict`` and ``serve``'s pre-flight check all build their adapter with
:func:`build_adapter`, so that offline and online prediction see the same task settings.

Every adapter says what the ground truth of one of its predictions looks like
(:meth:`ServingAdapter.truth_model`, :meth:`~ServingAdapter.truth_limits`,
:meth:`~ServingAdapter.truth_mismatch`): ``POST /feedback`` validates what clients send with it
(see :mod:`modelyard.serving.feedback_api`), and the monitor reads it back from the feedback table.
"""

import base64
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel

from modelyard.core.bundle import Bundle
from modelyard.core.errors import BundleError
from modelyard.serving.http_checks import BodyLimits

#: The multipart field an upload travels in (vision's ``POST /predict``).
UPLOAD_FIELD = "file"


@dataclass(frozen=True)
class Upload:
    """One file of a multipart request."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ExampleRequest:
    """A valid ``POST /predict`` request: a JSON body, or multipart uploads by field name."""

    json: Any = None
    files: dict[str, Upload] = field(default_factory=dict)

    def httpx_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.post`` (or a TestClient) that send this request."""
        if self.files:
            return {
                "files": {
                    name: (f.filename, f.data, f.content_type) for name, f in self.files.items()
                }
            }
        return {"json": self.json}

    def to_json(self) -> Any:
        """What ``/info`` shows as ``details.example``: the JSON body itself, or for uploads
        ``{field: {filename, content_type, base64}}``."""
        if not self.files:
            return self.json
        return {
            name: {
                "filename": f.filename,
                "content_type": f.content_type,
                "base64": base64.b64encode(f.data).decode("ascii"),
            }
            for name, f in self.files.items()
        }


class ModelRunner(Protocol):
    @property
    def input_name(self) -> str: ...

    @property
    def threads(self) -> int: ...

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    async def run_async(self, batch: np.ndarray) -> np.ndarray: ...

    async def run_outputs_async(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every output of the model (the prediction first), each row for row with ``batch``."""
        ...


class _CheckedOnceBuilt(ABCMeta):
    """Runs ``check_contract`` after the adapter's own ``__init__``, whoever builds it (the
    server, offline prediction, tests): the check needs the facts that ``__init__`` reads."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        adapter = super().__call__(*args, **kwargs)
        adapter.check_contract()
        return adapter


class ServingAdapter(metaclass=_CheckedOnceBuilt):
    """A family's serving side. Its request limits come from the bundle's contract (the
    manifest's ``preprocessing``), never from the training configuration the manifest keeps as
    provenance; ``settings`` are only the deployer's explicit overrides (``serve`` options)."""

    def __init__(self, bundle: Bundle, model: ModelRunner, settings: dict[str, Any]) -> None:
        self.bundle = bundle
        self.model = model
        self.settings = settings

    @abstractmethod
    def router(self) -> APIRouter:
        """The task's prediction routes (at least ``POST /predict``)."""

    @abstractmethod
    def predict_file(self, source: Path, output: Path) -> int:
        """Offline batch prediction from a file (or folder) to a CSV; returns rows written."""

    @abstractmethod
    def example_request(self) -> ExampleRequest:
        """The family's one example of a valid ``POST /predict`` request, from the bundle's
        facts alone (no data files): shown in the OpenAPI schema and ``/info``, predicted at
        warm-up, varied by the load test."""

    @abstractmethod
    def warm_up(self) -> None:
        """Predict :meth:`example_request` once so the first real request is not the slow one."""

    def info(self) -> dict[str, Any]:
        """Task-specific facts for ``GET /info``, with the example request (``example``)."""
        return {**self.task_info(), "example": self.example_request().to_json()}

    def task_info(self) -> dict[str, Any]:
        """The task's own facts for ``/info`` (window, classes, limits)."""
        return {}

    def check_contract(self) -> None:
        """Raise :class:`BundleError` where the task's facts contradict the manifest's tensors
        (see :meth:`require_axis`); the default has nothing task-specific to check."""

    def truth_model(self) -> type[BaseModel] | None:
        """The ground truth of one prediction as ``POST /feedback`` takes it (its ``truth``):
        a pydantic model that refuses a wrong type or shape; None: the family takes none."""
        return None

    def truth_limits(self) -> BodyLimits | None:
        """The most one valid truth holds (counted on the raw body before parsing)."""
        return None

    def truth_mismatch(self, truth: dict[str, Any], inputs: Any, outputs: Any) -> str | None:
        """A sentence when a valid ``truth`` (dumped as JSON) does not fit the logged prediction
        (its ``inputs``/``outputs`` JSON, as the log holds them): a wrong number of rows or
        readings. None when it fits, or when the logged record cannot tell."""
        return None

    def require_axis(
        self, kind: Literal["inputs", "outputs"], axis: int, size: int, fact: str
    ) -> None:
        """The first declared ``kind`` tensor has ``size`` on ``axis``, as ``fact`` implies."""
        specs = getattr(self.bundle.manifest, kind)
        shape = specs[0].shape if specs else []
        if not -len(shape) <= axis < len(shape) or shape[axis] != size:
            raise BundleError(
                f"{self.bundle.path}: the manifest contradicts itself: {fact} needs {size} on "
                f"axis {axis} of {kind[:-1]} {specs[0].name if specs else '(none)'}, which is "
                f"declared {shape}; re-export the bundle"
            )


def bundle_example(bundle: Bundle) -> ExampleRequest:
    """The example request of the bundle's task adapter, for callers that start a server on the
    bundle and need a request it accepts (the demo, the latency gate)."""
    from modelyard.serving.runtime import OnnxModel

    model = OnnxModel(bundle.model_path, threads=1, expected=bundle.manifest)
    return build_adapter(bundle, model, None).example_request()


def build_adapter(
    bundle: Bundle, model: ModelRunner, overrides: dict[str, Any] | None
) -> ServingAdapter:
    """The bundle's task adapter around ``model``, with the deployer's explicit ``overrides``
    (None values are options not given) over the limits of the bundle's contract: how every
    server worker, ``modelyard predict`` and ``serve``'s pre-flight check build one."""
    from modelyard.core.families import serving_adapter_class

    adapter_class = serving_adapter_class(bundle.manifest.task)
    chosen = {k: v for k, v in (overrides or {}).items() if v is not None}
    adapter: ServingAdapter = adapter_class(bundle, model, chosen)
    return adapter
