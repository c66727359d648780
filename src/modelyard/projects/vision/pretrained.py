"""Pretrained weights for an image backbone: where they come from, checking them, loading them.

``model.pretrained`` names the weights:

* a file of a ``state_dict`` in torchvision's layout (``resnet18-f37072fd.pth``, a local path or
  an ``http(s)://`` / ``file://`` URL): URLs are fetched by :func:`modelyard.core.fetch
  .fetch_dataset` into ``paths.weights`` (under the modelyard home) once and reused; the file's
  sha256 must equal ``model.pretrained_sha256`` when that is given;
* a modelyard training run's directory: its best checkpoint's network, and its normalisation
  (not a bundle: its ONNX graph has BatchNorm folded into the convolutions);
* ``true`` with a ``timm:<model>`` backbone: timm's own pretrained weights (timm downloads them).

A file is loaded only when it fits the backbone exactly (:func:`load_weights`): every key of the
network present with its shape and no other, except the classification head, which is left out
when its shape differs (another number of classes) and starts from scratch, and BatchNorm's
``num_batches_tracked`` counters, which torchvision's published files do not hold. Anything else
is refused in one line naming the missing and unexpected keys and the shape mismatches.

``model.normalisation`` (``auto``, ``data``, ``imagenet``, or ``{mean: [...], std: [...]}``)
says which statistics the pixels are normalised with; ``auto`` follows the weights: ImageNet's for
ImageNet weights, the run's own for a modelyard run, the training split's without pretraining.
"""

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import torch
from torch import nn

from modelyard.core.bundle import MANIFEST_FILE
from modelyard.core.errors import ConfigError
from modelyard.core.fetch import FileSpec, fetch_dataset
from modelyard.core.hashing import sha256_file
from modelyard.core.run_dir import RunDir
from modelyard.projects.vision.contract import NormalisationOrigin

#: The statistics torchvision's and most timm ImageNet weights were trained with (0-1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``model.normalisation`` names (besides an explicit ``{mean, std}``).
NORMALISATIONS = ("auto", "data", "imagenet")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
#: Keys a file may lack: BatchNorm step counters (absent from torchvision's published files).
_OPTIONAL_SUFFIX = "num_batches_tracked"
#: At most this many keys are named per kind of problem in a refusal.
_NAMED = 3


@dataclass(frozen=True)
class PretrainedSettings:
    """``model.pretrained`` and its companions, checked (one-line ConfigErrors)."""

    #: A path or URL, ``"timm"`` for timm's own weights, or None (train from scratch).
    source: str | None
    sha256: str | None
    freeze: str
    #: Learning-rate factor of the pretrained (body) layers; 1 without pretraining.
    lr_scale: float
    normalisation: str | tuple[tuple[float, ...], tuple[float, ...]]

    @property
    def from_timm(self) -> bool:
        return self.source == "timm"

    @classmethod
    def from_config(cls, model: Mapping[str, Any]) -> "PretrainedSettings":
        backbone = str(model.get("backbone", ""))
        raw = model.get("pretrained")
        sha256 = model.get("pretrained_sha256")
        freeze = str(model.get("freeze", "none"))
        source: str | None
        if raw is None or raw is False:
            source = None
        elif raw is True:
            if not backbone.startswith("timm:"):
                raise ConfigError(
                    f"model.pretrained=true means timm's own weights and needs a timm:<model> "
                    f"backbone; for {backbone} give the weights file's path or URL"
                )
            source = "timm"
        elif isinstance(raw, str) and raw.strip():
            if backbone.startswith("timm:"):
                raise ConfigError(
                    "model.pretrained for a timm backbone must be true (timm's own weights); "
                    "files and URLs load into backbone resnet18, resnet34 or resnet_small"
                )
            source = raw.strip()
        else:
            raise ConfigError(f"model.pretrained must be a path, a URL, true or null, got {raw!r}")
        if sha256 is not None:
            if source is None or source == "timm":
                raise ConfigError("model.pretrained_sha256 needs model.pretrained set to a file")
            if not _SHA256.fullmatch(str(sha256)):
                raise ConfigError(f"model.pretrained_sha256 must be 64 hex digits, got {sha256!r}")
            sha256 = str(sha256).lower()
        if freeze != "none" and source is None:
            raise ConfigError(
                f"model.freeze={freeze} needs model.pretrained: frozen random layers learn nothing"
            )
        given = model.get("pretrained_lr_scale", 1.0)
        try:
            scale = float(given)
        except (TypeError, ValueError):
            scale = float("nan")
        if not 0.0 < scale <= 1.0:
            raise ConfigError(f"model.pretrained_lr_scale must be in (0, 1], got {given!r}")
        return cls(
            source=source,
            sha256=sha256,
            freeze=freeze,
            lr_scale=scale if source is not None else 1.0,
            normalisation=_normalisation_setting(model.get("normalisation", "auto")),
        )


def _normalisation_setting(
    value: Any,
) -> str | tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(value, str) and value in NORMALISATIONS:
        return value
    if isinstance(value, Mapping) and set(value) == {"mean", "std"}:
        try:
            mean = tuple(float(v) for v in value["mean"])
            std = tuple(float(v) for v in value["std"])
        except (TypeError, ValueError):
            mean = std = ()
        if len(mean) == 3 and len(std) == 3 and all(s > 0 for s in std):
            return mean, std
    raise ConfigError(
        f"model.normalisation must be one of {', '.join(NORMALISATIONS)} or "
        f"{{mean: [r, g, b], std: [r, g, b]}} with positive std, got {value!r}"
    )


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file on this machine, its sha256, and the statistics it was trained with
    (None: unknown, e.g. a plain state_dict; a modelyard run knows its own)."""

    source: str
    path: Path
    sha256: str
    statistics: tuple[tuple[float, ...], tuple[float, ...]] | None
    #: True for a modelyard run's checkpoint (its network's keys start with ``net.``).
    run: bool = False


def resolve_weights(
    source: str, sha256: str | None, cache: Path, *, progress: bool = True
) -> ResolvedWeights:
    """The weights file ``source`` names, fetched into ``cache`` when it is a URL, its sha256
    checked against ``sha256`` when given (a DataError or ConfigError in one line)."""
    parsed = urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https", "file"):
        name = Path(unquote(parsed.path)).name
        if not name:
            raise ConfigError(f"model.pretrained URL names no file: {source}")
        base = (
            source[: source.rindex("/")]
            if scheme != "file"
            else f"file://{Path(unquote(parsed.path)).parent}"
        )
        # one folder per host (a port after "_": no ":" in a file name on every system)
        folder = parsed.netloc.replace(":", "_") or "local"
        spec = FileSpec(path=f"{folder}/{name}", remote=name, sha256=sha256)
        fetch_dataset(base, cache, [spec], progress=progress)
        path = cache / folder / name
        return ResolvedWeights(source, path, sha256 or sha256_file(path), None)
    if "://" in source:
        raise ConfigError(f"model.pretrained: unsupported URL scheme {scheme!r} in {source}")
    path = Path(source).expanduser()
    if path.is_dir() and (path / MANIFEST_FILE).is_file():
        raise ConfigError(
            f"model.pretrained: {path} is a bundle, whose ONNX graph cannot give the network's "
            "weights back (BatchNorm is folded into the convolutions); give the directory of "
            "the training run it was exported from"
        )
    if path.is_dir():
        run = RunDir(path)
        if not run.checkpoint.is_file():
            raise ConfigError(
                f"model.pretrained: {path} is a directory but not a trained modelyard run "
                f"(no {run.checkpoint.relative_to(path)})"
            )
        preprocessing = run.read_preprocessing() if run.preprocessing.is_file() else {}
        stats = None
        if "mean" in preprocessing and "std" in preprocessing:
            stats = (tuple(preprocessing["mean"]), tuple(preprocessing["std"]))
        return ResolvedWeights(
            source, run.checkpoint, _checked(run.checkpoint, sha256), stats, True
        )
    if not path.is_file():
        raise ConfigError(f"model.pretrained: no such file or run directory: {path}")
    return ResolvedWeights(source, path, _checked(path, sha256), None)


def _checked(path: Path, sha256: str | None) -> str:
    actual = sha256_file(path)
    if sha256 is not None and actual != sha256:
        raise ConfigError(
            f"model.pretrained: checksum mismatch for {path}: expected sha256 {sha256}, "
            f"got {actual}"
        )
    return actual


def read_state_dict(weights: ResolvedWeights) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (tensors only: ``torch.load(weights_only=True)``, no code
    runs); a Lightning checkpoint's ``state_dict``, a modelyard run's network's keys."""
    try:
        loaded = torch.load(weights.path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        if not _looks_saved_by_torch(weights.path):
            raise ConfigError(
                f"model.pretrained: {weights.path} is not a PyTorch weights file (neither "
                "torch.save's zip format nor a pickle)"
            ) from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError):
            reason = (
                "it holds Python objects besides tensors, which are never loaded; save the "
                "state_dict alone (torch.save(model.state_dict(), path))"
            )
        raise ConfigError(f"model.pretrained: cannot read {weights.path}: {reason}") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise ConfigError(
            f"model.pretrained: {weights.path} holds a {type(loaded).__name__}, not a state_dict "
            "(a mapping of parameter names to tensors)"
        )
    state = dict(loaded)
    if weights.run:
        state = {key[4:]: value for key, value in state.items() if key.startswith("net.")}
    return state


def _looks_saved_by_torch(path: Path) -> bool:
    """torch.save writes a zip archive (or, before PyTorch 1.6, a pickle: protocol 2+)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` loaded: tensors, and whether the head came from the file."""

    tensors: int
    head_loaded: bool


def load_weights(network: nn.Module, state: Mapping[str, torch.Tensor], label: str) -> LoadReport:
    """Load ``state`` into ``network`` when it fits exactly (see the module's docstring); the
    head (``network.head_name``) is left out when its shapes differ. One-line ConfigError."""
    own = network.state_dict()
    head = str(getattr(network, "head_name", "\0"))
    file_head = {key for key in state if key.startswith(head + ".")}
    head_fits = all(
        key in own and tuple(state[key].shape) == tuple(own[key].shape) for key in file_head
    ) and file_head == {key for key in own if key.startswith(head + ".")}
    usable = {key: value for key, value in state.items() if head_fits or key not in file_head}
    missing = [
        key
        for key in own
        if key not in usable
        and not key.endswith(_OPTIONAL_SUFFIX)
        and not (key.startswith(head + ".") and not head_fits)
    ]
    unexpected = [key for key in usable if key not in own]
    mismatched = [
        f"{key}: file {list(value.shape)}, model {list(own[key].shape)}"
        for key, value in usable.items()
        if key in own and tuple(value.shape) != tuple(own[key].shape)
    ]
    problems = [
        _listed(len(missing), "missing key", missing),
        _listed(len(unexpected), "unexpected key", unexpected),
        _listed(len(mismatched), "shape mismatch", mismatched, plural="shape mismatches"),
    ]
    found = [problem for problem in problems if problem]
    if found:
        raise ConfigError(
            f"model.pretrained: {label} does not fit backbone "
            f"{getattr(network, 'variant', type(network).__name__)}: {'; '.join(found)}"
        )
    complete = dict(usable)
    for key, value in own.items():
        if key not in complete:  # BatchNorm counters, or a head of another class count
            complete[key] = value
    network.load_state_dict(complete, strict=True)
    return LoadReport(tensors=len(usable), head_loaded=bool(file_head) and head_fits)


def _listed(count: int, what: str, keys: list[str], plural: str | None = None) -> str:
    if not count:
        return ""
    shown = ", ".join(keys[:_NAMED]) + (f", ... ({count - _NAMED} more)" if count > _NAMED else "")
    return f"{count} {what if count == 1 else plural or what + 's'} ({shown})"


def statistics(
    settings: PretrainedSettings, weights: ResolvedWeights | None
) -> tuple[NormalisationOrigin, tuple[tuple[float, ...], tuple[float, ...]] | None]:
    """What the pixels are normalised with: its name for the contract (``data``, ``imagenet``,
    ``custom``, ``pretrained run``) and the (mean, std), None to fit them on the training split."""
    setting = settings.normalisation
    if isinstance(setting, tuple):
        return "custom", setting
    if setting == "data" or (setting == "auto" and settings.source is None):
        return "data", None
    if setting == "auto" and weights is not None and weights.statistics is not None:
        return "pretrained run", weights.statistics
    return "imagenet", (IMAGENET_MEAN, IMAGENET_STD)
