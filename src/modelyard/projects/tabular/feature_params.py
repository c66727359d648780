"""Checking stored feature-pipeline parameters: preprocessing in a bundle is data, so it is checked.

:func:`validated_params` turns the JSON document of :meth:`FeaturePipeline.to_json
<modelyard.projects.tabular.feature_pipeline.FeaturePipeline.to_json>` back into parameters the
transform can trust, or raises :class:`BundleError` naming the first malformed entry. numpy-free and
pandas-free: the prediction server runs it when it loads a bundle.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from modelyard.core.errors import BundleError
from modelyard.projects.tabular.schema import DatePart

FORMAT_VERSION: Final = 1
ENCODINGS: Final = ("onehot", "target", "number")
DATE_PARTS: Final[tuple[DatePart, ...]] = ("year", "month", "day_of_year", "day_of_week", "ordinal")
#: The feature kinds, in output column order.
FEATURE_KINDS: Final = ("numeric", "categorical", "date")


def _bad(message: str) -> BundleError:
    return BundleError(f"feature pipeline parameters are malformed: {message}")


def _get(spec: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``spec[key]``, which must exist and be of ``kind`` (bool is never a number here)."""
    if key not in spec:
        raise _bad(f"{where} lacks {key!r}")
    value = spec[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _bad(f"{where}.{key} is {value!r}")
    return value


def _finite(spec: Mapping[str, Any], key: str, where: str, positive: bool = False) -> float:
    value = float(_get(spec, key, (int, float), where))
    if not math.isfinite(value) or (positive and value <= 0):
        raise _bad(f"{where}.{key} is {value!r}")
    return value


def _check_common(spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise _bad(f"{where} is not an object")
    name = _get(spec, "name", str, where)
    return {"name": name, "required": _get(spec, "required", bool, where)}


def _check_numeric(spec: Any, where: str) -> dict[str, Any]:
    out = _check_common(spec, where)
    out["median"] = _finite(spec, "median", where)
    out["mean"] = _finite(spec, "mean", where)
    out["std"] = _finite(spec, "std", where, positive=True)
    return out


def _check_categorical(spec: Any, where: str) -> dict[str, Any]:
    out = _check_common(spec, where)
    categories = _get(spec, "categories", list, where)
    if not all(isinstance(c, str) for c in categories) or len(set(categories)) != len(categories):
        raise _bad(f"{where}.categories must be distinct strings")
    out["categories"] = list(categories)
    # Parameters written before encodings existed are one-hot only.
    encodings = spec.get("encodings", ["onehot"])
    if (
        not isinstance(encodings, list)
        or not encodings
        or any(e not in ENCODINGS for e in encodings)
        or len(set(encodings)) != len(encodings)
    ):
        raise _bad(f"{where}.encodings is {encodings!r}")
    out["encodings"] = list(encodings)
    if "number" in encodings:
        number = _get(spec, "number", Mapping, where)
        out["number"] = {
            "median": _finite(number, "median", f"{where}.number"),
            "mean": _finite(number, "mean", f"{where}.number"),
            "std": _finite(number, "std", f"{where}.number", positive=True),
        }
    if "target" in encodings:
        out["target"] = _check_target_encoding(_get(spec, "target", Mapping, where), where)
    return out


def _check_target_encoding(target: Mapping[str, Any], where: str) -> dict[str, Any]:
    where = f"{where}.target"
    parent = target.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise _bad(f"{where}.parent is {parent!r}")
    out: dict[str, Any] = {
        "parent": parent,
        "smoothing": _finite(target, "smoothing", where, positive=True),
        "prior": _finite(target, "prior", where),
        "mean": _finite(target, "mean", where),
        "std": _finite(target, "std", where, positive=True),
        "count_mean": _finite(target, "count_mean", where),
        "count_std": _finite(target, "count_std", where, positive=True),
    }
    stats = _get(target, "stats", Mapping, where)
    checked: dict[str, tuple[float, int]] = {}
    for key, pair in stats.items():
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or isinstance(pair[0], bool)
            or not isinstance(pair[0], int | float)
            or not math.isfinite(pair[0])
            or isinstance(pair[1], bool)
            or not isinstance(pair[1], int)
            or pair[1] < 1
        ):
            raise _bad(f"{where}.stats[{key!r}] is {pair!r}")
        checked[str(key)] = (float(pair[0]), int(pair[1]))
    out["stats"] = checked
    return out


def _check_parents(categorical: list[dict[str, Any]]) -> None:
    """Every target-encoding parent is a target-encoded feature listed earlier."""
    encoded: set[str] = set()
    for spec in categorical:
        parent = spec.get("target", {}).get("parent")
        if parent is not None and parent not in encoded:
            raise _bad(f"categorical {spec['name']!r}: parent {parent!r} is not encoded before it")
        if "target" in spec["encodings"]:
            encoded.add(spec["name"])


def _check_date(spec: Any, where: str) -> dict[str, Any]:
    out = _check_common(spec, where)
    parts = _get(spec, "parts", list, where)
    if any(part not in DATE_PARTS for part in parts) or len(set(parts)) != len(parts):
        raise _bad(f"{where}.parts is {parts!r}")
    out["parts"] = list(parts)
    median_day = _get(spec, "median_day", int, where)
    if not -700_000 < median_day < 3_000_000:  # within the years numpy and datetime both handle
        raise _bad(f"{where}.median_day is {median_day!r}")
    out["median_day"] = median_day
    for key in ("ordinal", "year"):
        out[f"{key}_mean"] = _finite(spec, f"{key}_mean", where)
        out[f"{key}_std"] = _finite(spec, f"{key}_std", where, positive=True)
    return out


_CHECKS: Final[dict[str, Callable[[Any, str], dict[str, Any]]]] = {
    "numeric": _check_numeric,
    "categorical": _check_categorical,
    "date": _check_date,
}


def validated_params(data: Any) -> dict[str, Any]:
    """A checked, normalised deep copy of stored parameters; BundleError on anything amiss."""
    if not isinstance(data, Mapping):
        raise _bad("not an object")
    if data.get("version") != FORMAT_VERSION:
        raise _bad(f"version {data.get('version')!r}, expected {FORMAT_VERSION}")
    params: dict[str, Any] = {"version": FORMAT_VERSION}
    for kind, check in _CHECKS.items():
        specs = _get(data, kind, list, "parameters")
        params[kind] = [check(spec, f"{kind}[{i}]") for i, spec in enumerate(specs)]
    names = [spec["name"] for kind in _CHECKS for spec in params[kind]]
    if len(set(names)) != len(names):
        raise _bad(f"feature names repeat: {names}")
    _check_parents(params["categorical"])
    return params
