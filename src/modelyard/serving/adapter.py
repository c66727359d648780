"""What a task family provides to the server: its ``/predict`` route and offline batch prediction.

Adapters are torch-free: they see the bundle (manifest + ONNX model) and numpy only. The model
they get is a :class:`ModelRunner`: the ONNX Runtime session itself (offline prediction) or the
micro-batcher in front of it (the server); both predict a float32 batch.

A route tells the server what it predicted with :func:`modelyard.serving.context.record_prediction`
(the inputs or their summary features, the outputs, values for the distribution metrics); the
server logs it once the response has been sent.
"""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fastapi import APIRouter

from modelyard.core.bundle import Bundle


class ModelRunner(Protocol):
    @property
    def input_name(self) -> str: ...

    @property
    def threads(self) -> int: ...

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    async def run_async(self, batch: np.ndarray) -> np.ndarray: ...


class ServingAdapter(ABC):
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
