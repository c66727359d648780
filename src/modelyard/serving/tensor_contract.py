"""The ONNX model must take and return exactly the tensors its manifest declares.

Checked when a model is opened for serving, so that a manifest that disagrees with its model
(an edited shape, a swapped model file) stops the server at start with one clear error instead of
passing readiness and answering 500 to every request. Names, count, element types and every
static axis are compared; an axis the model leaves dynamic is accepted for any declared size.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from modelyard.core.bundle import TensorSpec
from modelyard.core.errors import BundleError

# ONNX Runtime's element type names -> the numpy names manifests use
_ONNX_TYPES = {"float": "float32", "double": "float64", "string": "str"}


class _Tensor(Protocol):
    """What ONNX Runtime's ``NodeArg`` offers."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def shape(self) -> Sequence[Any]: ...


def element_type(onnx_type: str) -> str:
    """``tensor(float)`` -> ``float32``, ``tensor(int64)`` -> ``int64``."""
    inner = onnx_type.removeprefix("tensor(").removesuffix(")")
    return _ONNX_TYPES.get(inner, inner)


def check_tensors(
    path: Path, kind: str, actual: Sequence[_Tensor], declared: Sequence[TensorSpec]
) -> None:
    """Raise :class:`BundleError` where the model's ``kind`` tensors (inputs or outputs) differ
    from the ``declared`` ones."""
    where = f"{path.name} does not match its manifest"
    if [t.name for t in actual] != [s.name for s in declared]:
        raise BundleError(
            f"{where}: the model's {kind} are {[t.name for t in actual]}, "
            f"the manifest declares {[s.name for s in declared]}"
        )
    for tensor, spec in zip(actual, declared, strict=True):
        dtype = element_type(tensor.type)
        if dtype != spec.dtype:
            raise BundleError(f"{where}: {kind[:-1]} {spec.name} is {dtype}, not {spec.dtype}")
        model_shape = list(tensor.shape)
        if len(model_shape) != len(spec.shape) or not all(
            _axis_fits(model, declared_axis)
            for model, declared_axis in zip(model_shape, spec.shape, strict=True)
        ):
            raise BundleError(
                f"{where}: {kind[:-1]} {spec.name} has shape {_show(model_shape)}, "
                f"the manifest declares {_show(spec.shape)}"
            )


def _axis_fits(model: object, declared: int | str) -> bool:
    """A static model axis must equal a static declared one, and a declared dynamic axis
    (e.g. ``batch``) must be dynamic in the model too; a dynamic model axis fits any size."""
    if not isinstance(model, int):
        return True
    return isinstance(declared, int) and model == declared


def _show(shape: Sequence[object]) -> str:
    return "[" + ", ".join("?" if axis is None else str(axis) for axis in shape) + "]"
