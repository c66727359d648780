"""Prepared image sets on disk: uint8 pixel arrays per split (``.npz``, no pickles)."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.core.errors import DataError

PARTS = ("train", "val", "test")
CLASSES_FILE = "classes.json"


def save_part(directory: Path, part: str, pixels: np.ndarray, labels: np.ndarray) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{part}.npz"
    temporary = directory / f".{part}.tmp.npz"
    np.savez(temporary, pixels=pixels, labels=labels.astype(np.int64))
    temporary.replace(path)
    return path


def load_part(directory: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(directory) / f"{part}.npz"
    if not path.is_file():
        raise DataError(f"prepared images not found: {path} (run `modelyard data prepare` first)")
    with np.load(path, allow_pickle=False) as data:
        return data["pixels"], data["labels"]


def save_classes(directory: Path, classes: list[str], extra: dict[str, Any]) -> None:
    (directory / CLASSES_FILE).write_text(json.dumps({"classes": classes, **extra}, indent=2))


def load_classes(directory: Path) -> list[str]:
    path = Path(directory) / CLASSES_FILE
    if not path.is_file():
        raise DataError(f"{path} not found (run `modelyard data prepare` first)")
    return [str(c) for c in json.loads(path.read_text())["classes"]]
