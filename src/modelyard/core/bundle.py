"""The model bundle: the only thing that leaves training and the only thing serving needs.

A bundle is a directory holding ``model.onnx`` and ``manifest.json``. The manifest is plain JSON:
what the model is, the tensors it takes and returns, the preprocessing parameters needed to turn a
request into those tensors, its evaluation metrics, and where it came from (git commit, data
fingerprint, resolved config). Nothing in a bundle is a pickle.

Loading a bundle trusts nothing in it blindly: every file it names must be a plain file of the
bundle directory (:mod:`.bundle_files`), each model file must have the sha256 the manifest records,
and the manifest must still have the content digest recorded at export, signed with the operator's
key when one was given (:mod:`.bundle_integrity`). Bundles written before the integrity record
(format version 1) still load, with a warning, as "legacy (model sha256 only)"; serving with
``--require-signature`` refuses them.

A bundle exported since issue 16 also holds ``reference_profile.json``: what drift is measured
against (:mod:`.reference_profile`), named with its sha256 in the manifest's ``reference_profile``
record and verified like the model files; :meth:`Bundle.reference_profile` reads it. Bundles
exported before it load and serve as before; only the monitor needs the profile.

A bundle exported since issue 17 also holds a few example inputs in ``examples/`` (a NILM day, test
images, table rows; :mod:`.bundle_examples`), listed with their sha256 in the manifest's
``examples`` and verified like the model files; the server hands them out (``GET /examples``).

A bundle exported with ``--quantize`` also holds ``model.int8.onnx``, verified the same way, and a
``quantization`` record in the manifest: how the INT8 model scored against the fp32 one on the
evaluation data. :func:`serving_model_path` hands out the INT8 model only when that record says it
stayed within its tolerance.

This module must stay importable without torch or pandas: the server imports it.
"""

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from modelyard.core.bundle_examples import (
    EXAMPLES_DIR,
    ExampleFile,
    ExampleRecord,
    read_example,
    verify_examples,
    write_examples,
)
from modelyard.core.bundle_files import bundle_file
from modelyard.core.bundle_files import check_file_name as check_plain_name
from modelyard.core.bundle_integrity import (
    BundleKey,
    Integrity,
    Trust,
    check_digest,
    check_signature,
    seal,
)
from modelyard.core.errors import BundleError
from modelyard.core.hashing import sha256_file
from modelyard.core.reference_profile import PROFILE_FILE, ReferenceProfile

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
INT8_MODEL_FILE = "model.int8.onnx"
#: 2 adds the integrity record; version 1 bundles load as legacy (model sha256 only)
FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1

log = logging.getLogger("modelyard.bundle")


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


def check_file_name(name: str) -> str:
    """A model file name inside the bundle directory: plain, and not the manifest's."""
    if check_plain_name(name) == MANIFEST_FILE:
        raise ValueError(f"{name!r} is not a plain file name inside the bundle")
    return name


class MetricChange(BaseModel):
    """One gate metric on the evaluation data, scored with the fp32 and with the INT8 model."""

    fp32: float
    int8: float
    relative_change: float | None = Field(
        description="(int8 - fp32) / |fp32|, signed; null when the fp32 value is 0."
    )
    higher_is_better: bool
    within_tolerance: bool

    @classmethod
    def between(
        cls, fp32: float, int8: float, higher_is_better: bool, tolerance: float
    ) -> "MetricChange":
        """Compare like the promotion gate: INT8 may be worse by at most ``tolerance`` * |fp32|."""
        return cls(
            fp32=fp32,
            int8=int8,
            relative_change=(int8 - fp32) / abs(fp32) if fp32 != 0 else None,
            higher_is_better=higher_is_better,
            within_tolerance=_within(fp32, int8, higher_is_better, tolerance),
        )

    def worsening(self) -> float:
        """How much worse INT8 is, relative to |fp32| (negative: better; inf: worse than 0)."""
        worse_by = self.fp32 - self.int8 if self.higher_is_better else self.int8 - self.fp32
        if self.fp32 != 0:
            return worse_by / abs(self.fp32)
        return float("inf") if worse_by > 0 else 0.0


def _within(fp32: float, int8: float, higher_is_better: bool, tolerance: float) -> bool:
    slack = abs(fp32) * tolerance
    return int8 >= fp32 - slack if higher_is_better else int8 <= fp32 + slack


class SizeBytes(BaseModel):
    fp32: int
    int8: int


class SpeedCheck(BaseModel):
    """Single-thread ONNX Runtime latency of one batch, both models timed in the same process.

    Informative only (it depends on the exporting machine), never a gate.
    """

    batch: int
    threads: int
    fp32_ms: float
    int8_ms: float
    speedup: float = Field(description="fp32_ms / int8_ms: above 1, the INT8 model is faster.")


class Quantization(BaseModel):
    """The INT8 copy of the model and the evidence on whether it may be served."""

    model_file: str = INT8_MODEL_FILE
    sha256: str
    method: str = Field(description="static_qdq (calibrated) or dynamic.")
    calibration_rows: int = Field(description="Real input rows calibrated on (0 for dynamic).")
    quantized_ops: list[str]
    tolerance: float = Field(ge=0, description="Largest allowed relative worsening per metric.")
    metrics: dict[str, MetricChange] = Field(min_length=1)
    within_tolerance: bool
    size_bytes: SizeBytes
    speed: SpeedCheck
    note: str | None = None

    @field_validator("model_file")
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        return check_file_name(name)

    @model_validator(mode="after")
    def _verdicts_agree(self) -> Self:
        """A verdict must follow from the numbers, so a hand-edited flag cannot serve INT8."""
        for name, change in self.metrics.items():
            expected = _within(change.fp32, change.int8, change.higher_is_better, self.tolerance)
            if change.within_tolerance != expected:
                raise ValueError(f"metrics.{name}.within_tolerance contradicts its values")
        if self.within_tolerance != all(m.within_tolerance for m in self.metrics.values()):
            raise ValueError("within_tolerance contradicts the per-metric verdicts")
        return self

    def worst(self) -> tuple[str, MetricChange]:
        """The metric the INT8 model made worst, relative to its fp32 value."""
        return max(self.metrics.items(), key=lambda item: item[1].worsening())


class ProfileRecord(BaseModel):
    """The reference profile file of the bundle and its sha256 (covered by the digest)."""

    file: str = PROFILE_FILE
    sha256: str

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        return check_file_name(name)


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
    quantization: Quantization | None = Field(
        default=None, description="The INT8 model, when exported with --quantize."
    )
    reference_profile: ProfileRecord | None = Field(
        default=None, description="The drift reference sample; None: exported before it."
    )
    examples: list[ExampleRecord] = Field(
        default_factory=list,
        description="Example inputs in examples/ (GET /examples); empty: exported before them.",
    )
    integrity: Integrity | None = Field(
        default=None, description="Digest of everything above (and signature); None: legacy."
    )

    @field_validator("model_file")
    @classmethod
    def _plain_file_name(cls, name: str) -> str:
        return check_file_name(name)

    @model_validator(mode="after")
    def _distinct_model_files(self) -> Self:
        names = [self.model_file]
        if self.quantization is not None:
            if self.quantization.model_file in names:
                raise ValueError("quantization.model_file must differ from model_file")
            names.append(self.quantization.model_file)
        if self.reference_profile is not None and self.reference_profile.file in names:
            raise ValueError("reference_profile.file must differ from the model files")
        return self


class Bundle(BaseModel):
    """A loaded, verified bundle."""

    path: Path
    manifest: Manifest
    trust: Trust = Field(description="What loading verified (digest, signature).")

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    def reference_profile(self) -> ReferenceProfile:
        """The drift reference written at export (its file was verified at load); BundleError
        for a bundle exported before profiles existed, or one whose profile does not parse."""
        record = self.manifest.reference_profile
        if record is None:
            raise BundleError(
                f"{self.path} has no reference profile (it was exported before modelyard wrote "
                "one); re-export it with `modelyard export` to monitor it for drift"
            )
        root = self.path.resolve()
        _verify_file(root, "reference profile", record.file, record.sha256)  # changed since load?
        return ReferenceProfile.read(root / record.file)

    def example(self, name: str) -> tuple[ExampleRecord, bytes] | None:
        """The example listed as ``name`` and its bytes, verified again now (the bytes served
        are the bytes exported; BundleError when they changed); None when the manifest lists no
        such example. Only listed names are looked up: no name reaches the file system
        unchecked."""
        for record in self.manifest.examples:
            if record.name == name:
                return record, read_example(self.path.resolve(), record)
        return None

    def check_signature(self, key: BundleKey | None, required: bool) -> None:
        """Verify the signature with the operator's ``key``; refuse an unsigned (or legacy)
        bundle when ``required``. Records what was verified in :attr:`trust`; a legacy bundle
        that may be used is let through with a warning."""
        self.trust = check_signature(
            self.manifest.integrity, self.trust, key, required, self.path / MANIFEST_FILE
        )
        if self.manifest.integrity is None:
            log.warning(
                "%s is a legacy bundle: only its model files are verified, not its manifest; "
                "re-export it or sign it with `modelyard bundle sign`",
                self.path,
            )


def new_version() -> str:
    """A sortable, unique-enough version label: UTC time of export."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def write_bundle(
    target: Path,
    model_file: Path,
    manifest_fields: dict[str, Any],
    extra_files: Mapping[str, Path] | None = None,
    key: BundleKey | None = None,
    profile_file: Path | None = None,
    examples: Sequence[ExampleFile] = (),
) -> Bundle:
    """Write a bundle directory atomically and return it loaded.

    ``manifest_fields`` holds every manifest field except ``sha256``, ``model_file``,
    ``reference_profile`` and ``integrity``, which are computed here (those given are replaced);
    with ``key`` the integrity record is signed. ``extra_files`` maps file names inside the
    bundle (e.g. ``model.int8.onnx``) to the files to copy there; ``profile_file`` is copied as
    ``reference_profile.json`` and recorded with its sha256; ``examples`` are written into
    ``examples/`` and listed with theirs (bounded, see :mod:`.bundle_examples`). The bundle is
    assembled and verified in a temporary sibling directory and renamed into place, so a crash
    never leaves a half-written bundle at ``target`` and a bundle whose manifest does not match
    its files is never written.
    """
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copyfile(model_file, staging / MODEL_FILE)
        for name, source in (extra_files or {}).items():
            if check_file_name(name) in (MODEL_FILE, PROFILE_FILE, EXAMPLES_DIR):
                raise ValueError(f"extra file {name!r} would replace the model or its profile")
            shutil.copyfile(source, staging / name)
        computed = ("integrity", "reference_profile", "examples")
        fields = {k: v for k, v in manifest_fields.items() if k not in computed}
        profile = None
        if profile_file is not None:
            shutil.copyfile(profile_file, staging / PROFILE_FILE)
            profile = ProfileRecord(sha256=sha256_file(staging / PROFILE_FILE))
        manifest = Manifest(
            **fields,
            model_file=MODEL_FILE,
            sha256=sha256_file(staging / MODEL_FILE),
            reference_profile=profile,
            examples=write_examples(staging, examples),
        )
        _verify_files(staging.resolve(), manifest)
        _write_manifest(staging, json.loads(manifest.model_dump_json(exclude={"integrity"})), key)
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(target)


def _write_manifest(directory: Path, raw: dict[str, Any], key: BundleKey | None) -> None:
    """Write ``raw`` as the manifest, sealed (and signed with ``key``), through a temporary file."""
    sealed = seal({**raw, "format_version": FORMAT_VERSION}, key)
    partial = directory / f".{MANIFEST_FILE}.partial"
    partial.write_text(json.dumps(sealed, indent=2, ensure_ascii=False) + "\n")
    partial.replace(directory / MANIFEST_FILE)


def load_bundle(
    path: Path, key: BundleKey | None = None, require_signature: bool = False
) -> Bundle:
    """Load and verify a bundle; raise :class:`BundleError` with a precise reason otherwise.

    Verified: the files it names (plain files inside the bundle), their sha256, the manifest's
    content digest, and, with ``key``, its signature (``require_signature``: refuse a bundle
    that is not signed). Without either, the signature policy is left to the caller
    (:meth:`Bundle.check_signature`; the server applies it when it opens the model).
    """
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle directory not found: {path}")
    raw, manifest = _read_manifest(path)
    manifest_path = path / MANIFEST_FILE
    if manifest.format_version == FORMAT_VERSION and manifest.integrity is None:
        raise BundleError(
            f"{manifest_path} has no integrity record; a version {FORMAT_VERSION} bundle always "
            "has one: re-export the bundle"
        )
    trust = check_digest(raw, manifest.integrity, manifest_path)
    _verify_files(path.resolve(), manifest)
    bundle = Bundle(path=path, manifest=manifest, trust=trust)
    if key is not None or require_signature:
        bundle.check_signature(key, require_signature)
    return bundle


def reseal_bundle(path: Path, key: BundleKey | None, accept_edits: bool = False) -> Bundle:
    """Record a fresh integrity record (signed with ``key``) for the bundle at ``path``.

    The bundle is verified first: files, sha256s and, unless ``accept_edits``, the manifest's
    current digest, so a manifest changed by someone else is not signed by mistake. A legacy
    bundle becomes a version-2 bundle. Returns it loaded again.
    """
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle directory not found: {path}")
    raw, manifest = _read_manifest(path)
    if not accept_edits:
        check_digest(raw, manifest.integrity, path / MANIFEST_FILE)
    _verify_files(path.resolve(), manifest)
    _write_manifest(path, raw, key)
    return load_bundle(path, key)


def _read_manifest(path: Path) -> tuple[dict[str, Any], Manifest]:
    """The manifest as parsed JSON and as a validated :class:`Manifest`."""
    if not (path / MANIFEST_FILE).is_symlink() and not (path / MANIFEST_FILE).is_file():
        raise BundleError(f"{path} is not a bundle: {MANIFEST_FILE} is missing")
    manifest_path = bundle_file(path.resolve(), MANIFEST_FILE, "manifest")
    try:
        raw = json.loads(manifest_path.read_text())
        if not isinstance(raw, dict):
            raise BundleError(f"{path / MANIFEST_FILE} does not hold a JSON object")
        manifest = Manifest.model_validate(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path / MANIFEST_FILE} is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        raise BundleError(
            f"{path / MANIFEST_FILE} is not a valid manifest: {_first_error(exc)}"
        ) from exc
    return raw, _check_format_version(manifest, path / MANIFEST_FILE)


def _first_error(exc: ValidationError) -> str:
    """One line: where and what of the first error (pydantic's own text spans several lines and
    echoes the input, which may be large)."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "manifest"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _check_format_version(manifest: Manifest, manifest_path: Path) -> Manifest:
    if manifest.format_version not in (FORMAT_VERSION, LEGACY_FORMAT_VERSION):
        raise BundleError(
            f"{manifest_path} has format_version {manifest.format_version}; "
            f"this modelyard reads version {FORMAT_VERSION} (and {LEGACY_FORMAT_VERSION})"
        )
    return manifest


def _verify_files(root: Path, manifest: Manifest) -> None:
    """Every file the manifest names (models, reference profile, examples) is a plain file of
    the bundle (``root``, resolved) with the sha256 the manifest records."""
    _verify_file(root, "model file", manifest.model_file, manifest.sha256)
    if manifest.quantization is not None:
        quantized = manifest.quantization
        _verify_file(root, "INT8 model file", quantized.model_file, quantized.sha256)
    if manifest.reference_profile is not None:
        profile = manifest.reference_profile
        _verify_file(root, "reference profile", profile.file, profile.sha256)
    verify_examples(root, manifest.examples)


def _verify_file(root: Path, what: str, name: str, expected: str) -> None:
    file = bundle_file(root, name, what)
    actual = sha256_file(file)
    if actual != expected:
        raise BundleError(
            f"{file} failed its integrity check: sha256 is {actual}, the manifest says {expected}"
        )


def serving_model_path(bundle: Bundle, quantized: bool) -> Path:
    """The model file to serve: fp32, or INT8 when asked for and measured within tolerance.

    Raises :class:`BundleError` saying why when INT8 is asked for but may not be served.
    """
    if not quantized:
        return bundle.model_path
    record = bundle.manifest.quantization
    if record is None:
        raise BundleError(f"{bundle.path}: this bundle has no INT8 model; export with --quantize")
    if not record.within_tolerance:
        name, change = record.worst()
        raise BundleError(
            f"{bundle.path}: the INT8 model changed {name} by {_describe(change)}, above the "
            f"{record.tolerance:.2%} tolerance; serve the fp32 model"
        )
    bundle_file(bundle.path.resolve(), record.model_file, "INT8 model file")
    return bundle.path / record.model_file


def _describe(change: MetricChange) -> str:
    """'+4.20% (12.5 -> 13.025, lower is better)', from the values themselves."""
    direction = "higher" if change.higher_is_better else "lower"
    values = f"{change.fp32:.6g} -> {change.int8:.6g}, {direction} is better"
    if change.fp32 == 0:
        return f"an unbounded fraction ({values})"
    return f"{(change.int8 - change.fp32) / abs(change.fp32):+.2%} ({values})"
