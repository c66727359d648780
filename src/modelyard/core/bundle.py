"""The model bundle: the only thing that leaves training and the only thing serving needs.

A bundle is a directory holding ``model.onnx`` and ``manifest.json``. The manifest is plain JSON:
what the model is, the tensors it takes and returns, the preprocessing parameters needed to turn a
request into those tensors, its evaluation metrics, and where it came from (git commit, data
fingerprint, resolved config). Loading a bundle verifies the model file's sha256, so a bundle that
was edited or truncated after export is refused. Nothing in a bundle is a pickle.

This module must stay importable without torch or pandas: the server imports it.
"""

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from modelyard.core.errors import BundleError
from modelyard.core.hashing import sha256_file

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
FORMAT_VERSION = 1


class TensorSpec(BaseModel):
    """Name, element type and shape of a model input or output; ``"batch"`` is a dynamic axis."""

    name: str
    dtype: str
    shape: list[int | str]


class ParityCheck(BaseModel):
    """How closely the exported ONNX model reproduced the framework model at export time."""

    max_abs_diff: float
    tolerance: float
    samples: int


class Manifest(BaseModel):
    """Everything known about a bundled model, as plain JSON."""

    format_version: int = FORMAT_VERSION
    project: str = Field(description="Configured project, e.g. 'nilm'.")
    task: str = Field(description="Task family whose serving adapter handles this bundle.")
    name: str
    version: str
    created_at: datetime
    model_file: str = MODEL_FILE
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    parity: ParityCheck | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    data_fingerprint: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    tracking: dict[str, str] | None = Field(
        default=None, description="The tracked training run (backend, run id, location)."
    )


class Bundle(BaseModel):
    """A loaded, verified bundle."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file


def new_version() -> str:
    """A sortable, unique-enough version label: UTC time of export."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def write_bundle(target: Path, model_file: Path, manifest_fields: dict[str, Any]) -> Bundle:
    """Write a bundle directory atomically and return it loaded.

    ``manifest_fields`` holds every manifest field except ``sha256`` and ``model_file``, which are
    computed here. The bundle is assembled in a temporary sibling directory and renamed into place,
    so a crash never leaves a half-written bundle at ``target``.
    """
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copyfile(model_file, staging / MODEL_FILE)
        manifest = Manifest(
            **manifest_fields, model_file=MODEL_FILE, sha256=sha256_file(staging / MODEL_FILE)
        )
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(target)


def load_bundle(path: Path) -> Bundle:
    """Load and verify a bundle; raise :class:`BundleError` with a precise reason otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle directory not found: {path}")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a bundle: {MANIFEST_FILE} is missing")
    try:
        raw = json.loads(manifest_path.read_text())
        manifest = Manifest.model_validate(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        raise BundleError(f"{manifest_path} is not a valid manifest: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path} has format_version {manifest.format_version}; "
            f"this modelyard reads version {FORMAT_VERSION}"
        )
    model_path = path / manifest.model_file
    if not model_path.is_file():
        raise BundleError(f"{path}: model file {manifest.model_file} is missing")
    actual = sha256_file(model_path)
    if actual != manifest.sha256:
        raise BundleError(
            f"{model_path} failed its integrity check: sha256 is {actual}, "
            f"the manifest says {manifest.sha256}"
        )
    return Bundle(path=path, manifest=manifest)
