"""What a task family provides to the server: its ``/predict`` route and offline batch prediction.

Adapters are torch-free: they see the bundle (manifest + ONNX model) and numpy only. The model
they get is a :class:`ModelRunner`: the ONNX Runtime session itself (offline prediction) or the
micro-batcher in front of it (the server); both predict a float32 batch.

A route tells the server what it predicted with :func:`modelyard.serving.context.record_prediction`
(the inputs or their summary features, the outputs, values for the distribution metrics); the
server logs it once the response has been sent.

Every adapter checks its task's facts (window, appliances, classes, features) against the
manifest's tensors as soon as it is built (:meth:`ServingAdapter.check_contract`), so a bundle
whose manifest contradicts itself refuses to start instead of failing every request.
"""

from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from fastapi import APIRouter

from modelyard.core.bundle import Bundle
from modelyard.core.errors import BundleError


class ModelRunner(Protocol):
    @property
    def input_name(self) -> str: ...

    @property
    def threads(self) -> int: ...

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    async def run_async(self, batch: np.ndarray) -> np.ndarray: ...


class _CheckedOnceBuilt(ABCMeta):
    """Runs ``check_contract`` after the adapter's own ``__init__``, whoever builds it (the
    server, offline prediction, tests): the check needs the facts that ``__init__`` reads."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        adapter = super().__call__(*args, **kwargs)
        adapter.check_contract()
        return adapter


class ServingAdapter(metaclass=_CheckedOnceBuilt):
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
    def warm_up(self) -> None:
        """Run one realistic prediction so the first real request is not the slow one."""

    def info(self) -> dict[str, Any]:
        """Task-specific facts for ``GET /info``."""
        return {}

    def check_contract(self) -> None:
        """Raise :class:`BundleError` where the task's facts contradict the manifest's tensors
        (see :meth:`require_axis`); the default has nothing task-specific to check."""

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
