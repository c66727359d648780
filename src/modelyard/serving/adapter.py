"""What a task family provides to the server: its ``/predict`` route and offline batch prediction.

Adapters are torch-free: they see the bundle (manifest + ONNX model) and numpy only.
"""

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from modelyard.core.bundle import Bundle
from modelyard.serving.runtime import OnnxModel


class ServingAdapter(ABC):
    def __init__(self, bundle: Bundle, model: OnnxModel, settings: dict[str, Any]) -> None:
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
