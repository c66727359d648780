"""Reader for the NILMTK HDF5 layout (``ukdale.h5`` and the other NILMTK conversions).

Layout, as written by NILMTK's converters through ``pandas.HDFStore``:

* one table per meter at ``/building{b}/elec/meter{m}``, in pandas ``table`` format, indexed by a
  tz-aware ``DatetimeIndex`` (stored as UTC nanoseconds plus the zone name) with ``MultiIndex``
  columns ``(physical_quantity, type)`` such as ``('power', 'active')``;
* a metadata dict pickled into the attributes of the ``/building{b}`` *group*
  (``node._v_attrs.metadata``), holding ``elec_meters`` (``{meter: {"site_meter": True, ...}}``)
  and ``appliances`` (``[{"type": "kettle", "instance": 1, "meters": [8]}, ...]``).

The reader turns one building into a *house frame* (see :mod:`modelyard.projects.nilm.readers`).
Files are tens of gigabytes, so it never loads a whole table: the time range becomes an HDF5
``where`` query on the indexed index column, only the chosen power column is read, and rows are
read in chunks that are reduced to per-interval sums and counts straight away.
"""

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tables

from modelyard.core.errors import ConfigError, DataError
from modelyard.core.row_accounting import EXAMPLES_KEPT, ReadLedger, RowReport
from modelyard.projects.nilm.readers import AGGREGATE, snake_case

logger = logging.getLogger(__name__)

CHUNK_ROWS = 1_000_000
"""Rows read per chunk; bounds memory to a few tens of MB whatever the length of the range."""

POWER = "power"
PREFERRED_POWER = (("power", "active"), ("power", "apparent"))
"""Active power is what the appliances' labels describe; apparent power is the next best proxy."""

FALLBACK_TYPES: dict[str, tuple[str, ...]] = {"washing_machine": ("washer_dryer",)}
"""Appliance types accepted for a requested name when the building has no exact match."""

BUILDING_PREFIX = "building"
METER_PREFIX = "meter"

MeterSpec = int | Sequence[int]
Bounds = tuple[pd.Timestamp | None, pd.Timestamp | None]


@dataclass(frozen=True)
class _Source:
    """An open NILMTK file: PyTables for the group tree and attributes, pandas for the tables.

    The building groups are plain HDF5 groups, not pandas storers, so ``HDFStore.get_storer``
    cannot reach their attributes; PyTables' ``get_node(key)._v_attrs`` can, and it is also what a
    storer's ``.attrs`` points at, so one lookup covers metadata written either way.
    """

    path: Path
    h5: Any  # tables.File (PyTables ships no type information)
    store: pd.HDFStore

    def has(self, key: str) -> bool:
        """Whether a node (group or table) exists at ``key``."""
        return bool(key in self.h5)

    def numbered_children(self, key: str, prefix: str) -> list[int]:
        """Numbers ``n`` of the children named ``{prefix}{n}`` of the group at ``key``."""
        if not self.has(key):
            return []
        names = list(getattr(self.h5.get_node(key), "_v_children", {}))
        suffixes = (name.removeprefix(prefix) for name in names if name.startswith(prefix))
        return sorted(int(suffix) for suffix in suffixes if suffix.isdigit())

    def metadata(self, key: str) -> dict[str, Any]:
        """The NILMTK metadata dict pickled on the node at ``key``, or ``{}`` when it has none."""
        metadata = getattr(self.h5.get_node(key)._v_attrs, "metadata", None)
        return metadata if isinstance(metadata, dict) else {}


@contextmanager
def _open(path: Path) -> Iterator[_Source]:
    """Open ``path`` read-only, turning every way it can fail into a :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"HDF5 file not found: {path}")
    if not path.is_file():
        raise DataError(f"expected an HDF5 file, got a directory: {path}")
    if not tables.is_hdf5_file(str(path)):
        raise DataError(f"{path} is not an HDF5 file")
    with ExitStack() as stack:
        try:
            h5 = stack.enter_context(tables.open_file(str(path), mode="r"))
            store = stack.enter_context(pd.HDFStore(path, mode="r"))
        except (OSError, RuntimeError) as exc:  # tables.HDF5ExtError is a RuntimeError
            raise DataError(f"cannot open HDF5 file {path}: {str(exc).strip()}") from exc
        yield _Source(path, h5, store)


def list_buildings(path: Path) -> list[int]:
    """Numbers of the buildings stored in the NILMTK file at ``path``, ascending."""
    with _open(path) as source:
        return source.numbered_children("/", BUILDING_PREFIX)


@dataclass(frozen=True)
class BuildingInventory:
    """What a building's NILMTK metadata says it metered (read without any meter data)."""

    building: int
    has_mains: bool
    #: Appliance names (snake_case) the reader finds a meter for, in metadata order; a name of
    #: FALLBACK_TYPES is listed when only its stand-in (a washer dryer) is present.
    appliances: list[str]


def building_inventories(path: Path) -> list[BuildingInventory]:
    """Every building of the NILMTK file at ``path``: whether it has mains, which appliances."""
    inventories = []
    with _open(path) as source:
        for building in source.numbered_children("/", BUILDING_PREFIX):
            metadata = source.metadata(f"/{BUILDING_PREFIX}{building}")
            names = [snake_case(str(e["type"])) for e in _appliance_entries(metadata)]
            stood_in = [
                name
                for name, stand_ins in FALLBACK_TYPES.items()
                if name not in names and any(s in names for s in stand_ins)
            ]
            inventories.append(
                BuildingInventory(
                    building, bool(_site_meters(metadata)), list(dict.fromkeys(names + stood_in))
                )
            )
    return inventories


def _building_key(source: _Source, building: int) -> str:
    """The group key of ``building``, or a :class:`DataError` listing the buildings present."""
    key = f"/{BUILDING_PREFIX}{building}"
    if not source.has(key):
        present = source.numbered_children("/", BUILDING_PREFIX)
        raise DataError(
            f"building {building} is not in {source.path}; buildings present: {present}"
        )
    return key


def _site_meters(metadata: Mapping[str, Any]) -> list[int]:
    """Enabled meters flagged ``site_meter`` (the mains); keys may be ints or digit strings.

    Several enabled site meters are mains phases or splits, to be summed; a redundant parallel
    site meter is marked ``disabled`` by NILM Metadata precisely so that it is not summed in.
    """
    meters = metadata.get("elec_meters") or {}
    return sorted(
        int(number)
        for number, info in meters.items()
        if isinstance(info, dict) and info.get("site_meter") and not info.get("disabled")
    )


def _appliance_entries(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``appliances`` list of the metadata, keeping only well-formed entries."""
    entries = metadata.get("appliances") or []
    return [e for e in entries if isinstance(e, dict) and "type" in e and e.get("meters")]


def _appliance_meters(metadata: Mapping[str, Any], name: str) -> list[int] | None:
    """Meters of appliance ``name`` (snake_case), trying the fallback types if needed.

    Several appliances of one type (two fridges) are told apart by ``instance``: the lowest one is
    used, so that a name means one appliance; pass ``meters`` to pick or sum others. All meters
    of the chosen entry are returned, since an appliance fed by several meters (both legs of a
    split-phase supply) draws their sum.
    """
    entries = _appliance_entries(metadata)
    for wanted in (name, *FALLBACK_TYPES.get(name, ())):
        matches = [e for e in entries if snake_case(str(e["type"])) == wanted]
        if matches:
            chosen = min(matches, key=lambda e: int(e.get("instance", 1)))
            if wanted != name:
                logger.debug("no %r in metadata; using %r for it", name, wanted)
            return [int(m) for m in chosen["meters"]]
    return None


def _as_meter_list(name: str, spec: MeterSpec) -> list[int]:
    """Normalise one value of the ``meters`` argument to a non-empty list of meter numbers."""
    numbers = [spec] if isinstance(spec, int) else list(spec)
    if not numbers or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise ConfigError(
            f"meters[{name!r}] must be a meter number or a list of them, got {spec!r}"
        )
    return numbers


def _resolve_meters(
    metadata: Mapping[str, Any],
    building: int,
    columns: Sequence[str],
    meters: Mapping[str, MeterSpec] | None,
) -> dict[str, list[int]]:
    """Map every output column to its meter numbers: explicit ``meters`` first, then metadata."""
    given = {snake_case(name): _as_meter_list(name, spec) for name, spec in (meters or {}).items()}
    resolved: dict[str, list[int]] = {}
    for column in columns:
        found = given.get(column)
        if found is None:
            found = (
                _site_meters(metadata)
                if column == AGGREGATE
                else _appliance_meters(metadata, column)
            )
        if not found:
            raise DataError(_no_meter_message(metadata, building, column))
        resolved[column] = found
    return resolved


def _no_meter_message(metadata: Mapping[str, Any], building: int, column: str) -> str:
    """Explain why ``column`` has no meter, with what the building does have."""
    if not metadata:
        return (
            f"building {building} has no NILMTK metadata, so the meter of {column!r} is unknown; "
            f"pass meters={{{column!r}: <meter number>}}"
        )
    if column == AGGREGATE:
        return (
            f"building {building} has no site meter in its metadata; "
            "pass meters={'aggregate': <meter number>}"
        )
    types = sorted({snake_case(str(e["type"])) for e in _appliance_entries(metadata)})
    return (
        f"no meter for appliance {column!r} in building {building}; appliance types present: "
        f"{types}; pass meters={{{column!r}: <meter number>}} to choose one"
    )


@dataclass(frozen=True)
class _Meter:
    """Where one meter's table is and what its first row says about it."""

    key: str
    column: Any  # the chosen power column label, e.g. ("power", "active")
    stored_tz: str | None  # zone of the stored index, None when stored tz-naive


def _power_column(columns: pd.Index, key: str) -> Any:
    """Pick the power column of a meter: active, else apparent, else any ``power`` column."""
    labels = list(columns)
    for preferred in PREFERRED_POWER:
        if preferred in labels:
            return preferred
    for label in labels:
        quantity = label[0] if isinstance(label, tuple) else label
        if quantity == POWER:
            return label
    raise DataError(f"{key} has no power column (columns: {labels})")


def _probe_meter(source: _Source, building: int, meter: int) -> _Meter:
    """Check a meter's table exists and read one row to learn its columns and time zone."""
    elec = f"/{BUILDING_PREFIX}{building}/elec"
    key = f"{elec}/{METER_PREFIX}{meter}"
    if not source.has(key):
        present = source.numbered_children(elec, METER_PREFIX)
        raise DataError(
            f"meter {meter} of building {building} has no table {key} in {source.path}; "
            f"meters present: {present}"
        )
    head = source.store.select(key, start=0, stop=1)
    column = _power_column(head.columns, key)
    logger.debug("%s: using column %s", key, column)
    tz = pd.DatetimeIndex(head.index).tz
    return _Meter(key, column, None if tz is None else str(tz))


def _parse_bound(value: str | None, tz: str | None, what: str) -> pd.Timestamp | None:
    """Parse ``start``/``end`` as local time in ``tz`` (as UTC when ``tz`` is None).

    A wall-clock time that occurs twice (the autumn change) means its first occurrence, matching
    how the output keeps the first of the repeated hour; a skipped one moves forward.
    """
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what} {value!r} is not a date/time") from exc
    if pd.isna(stamp):
        raise ConfigError(f"{what} {value!r} is not a date/time")
    if stamp.tzinfo is None and tz is not None:
        stamp = stamp.tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
    return stamp


def _as_stored(stamp: pd.Timestamp, stored_tz: str | None) -> pd.Timestamp:
    """Express a bound like the stored index: UTC for a tz-aware table, naive for a naive one."""
    if stored_tz is None:
        return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _where(bounds: Bounds, stored_tz: str | None) -> str | None:
    """An HDFStore ``where`` string selecting ``[start, end)`` on the (always indexed) index.

    This is what keeps a multi-gigabyte table from being read whole: PyTables answers it from the
    index column before any row is loaded.
    """
    terms = [
        f"index {op} '{_as_stored(stamp, stored_tz).isoformat()}'"
        for op, stamp in zip((">=", "<"), bounds, strict=True)
        if stamp is not None
    ]
    return " & ".join(terms) or None


def _chunks(source: _Source, meter: _Meter, where: str | None) -> Iterator[pd.Series]:
    """Yield the chosen column of a meter in chunks, restricted by ``where``."""
    selection = source.store.select(
        meter.key, where=where, columns=[meter.column], chunksize=CHUNK_ROWS
    )
    for chunk in selection:
        yield chunk[meter.column].astype("float64")


def _resample_sums(values: pd.Series, rule: str) -> pd.DataFrame:
    """Per-interval sum and count of one chunk, on a grid anchored at the Unix epoch in UTC.

    Anchoring at the epoch (rather than pandas' default, the first day of the data) puts every
    meter on the same grid whatever its first reading; doing it in UTC avoids anchoring at local
    1970 midnight, which in London is 23:00 UTC (the UK kept summer time all through 1970).
    """
    index = pd.DatetimeIndex(values.index)
    if index.tz is not None:
        values = values.set_axis(index.tz_convert("UTC"))
    resampled = values.resample(rule, origin="epoch")
    return pd.DataFrame({"sum": resampled.sum(), "count": resampled.count()})


def _read_meter(
    source: _Source, meter: _Meter, bounds: Bounds, rule: str, report: RowReport
) -> pd.Series:
    """One meter's power as ``rule``-interval means, tz-aware UTC (or naive if stored naive).

    Chunks are reduced to sums and counts so that an interval split across two chunks still gets
    its exact mean; intervals with no reading are dropped rather than filled with NaN, because
    UK-DALE has gaps of days that would otherwise become millions of empty rows. Readings that
    are not finite (NaN, inf) are refused into ``report`` with their times: an inf would poison
    its interval's mean.
    """
    where = _where(bounds, meter.stored_tz)
    parts = []
    for chunk in _chunks(source, meter, where):
        report.read += len(chunk)
        finite = np.isfinite(chunk.to_numpy())
        if not finite.all():
            stamps = [str(stamp) for stamp in chunk.index[~finite][:EXAMPLES_KEPT]]
            report.refuse_many("not_finite", int((~finite).sum()), stamps)
        parts.append(_resample_sums(chunk[finite], rule))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.Series(dtype="float64")
    totals = pd.concat(parts).groupby(level=0).sum()
    totals = totals[totals["count"] > 0]
    return totals["sum"] / totals["count"]


def _to_local(values: pd.Series, tz: str | None) -> pd.Series:
    """Convert a tz-aware series to tz-naive time in ``tz`` (UTC when None).

    At the autumn change an hour of wall-clock times occurs twice; the house frame must be
    duplicate-free, so the first occurrence is kept, as :func:`readers.read_csv_house` does.
    A series stored tz-naive is taken to be local time already.
    """
    index = pd.DatetimeIndex(values.index)
    if index.tz is not None:
        index = index.tz_convert(tz or "UTC").tz_localize(None)
    values = values.set_axis(index)
    return values[~values.index.duplicated(keep="first")]


def _sum_meters(series: list[pd.Series]) -> pd.Series:
    """Sum aligned meters; an interval missing from any of them is NaN, not a partial sum."""
    if len(series) == 1:
        return series[0]
    return pd.concat(series, axis=1, join="outer").sum(axis=1, skipna=False)


def _check_resample(resample: str) -> str:
    """Accept only fixed-length intervals: means over months would not be comparable."""
    try:
        offset = pd.tseries.frequencies.to_offset(resample)
    except ValueError as exc:
        raise ConfigError(f"resample {resample!r} is not a pandas interval such as '6s'") from exc
    if not isinstance(offset, pd.offsets.Tick) or offset.nanos <= 0:
        raise ConfigError(f"resample {resample!r} must be a fixed positive interval such as '6s'")
    return resample


def _check_timezone(timezone: str | None) -> str | None:
    """Fail early, and clearly, on a misspelt zone name."""
    if timezone is not None:
        try:
            pd.Timestamp(0).tz_localize(timezone)
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"unknown timezone {timezone!r}") from exc
    return timezone


def _output_columns(appliances: Sequence[str]) -> list[str]:
    """``aggregate`` then the requested appliances in snake_case, without repeats."""
    names = [snake_case(name) for name in appliances]
    return list(dict.fromkeys([AGGREGATE, *names]))


def _parse_range(start: str | None, end: str | None, zone: str | None) -> Bounds:
    """Parse and check the ``[start, end)`` range."""
    bounds = (_parse_bound(start, zone, "start"), _parse_bound(end, zone, "end"))
    first, last = bounds
    if first is not None and last is not None and first >= last:
        raise ConfigError(f"start {start!r} is not before end {end!r}")
    return bounds


def read_nilmtk_building(
    path: Path,
    building: int,
    appliances: Sequence[str],
    *,
    meters: Mapping[str, MeterSpec] | None = None,
    start: str | None = None,
    end: str | None = None,
    timezone: str | None = None,
    resample: str = "6s",
    ledger: ReadLedger | None = None,
) -> pd.DataFrame:
    """Read one building of a NILMTK HDF5 file into a house frame.

    ``meters`` maps an output name (an appliance, or ``"aggregate"``) to one meter number or
    several, whose readings are summed; names it leaves out are looked up in the building's
    metadata (site meters for ``aggregate``, the ``appliances`` list by ``type`` otherwise).
    Meters are recorded at different rates (UK-DALE mains every 1 s, appliances every 6 s), so each
    is reduced to ``resample``-interval means before they are joined; intervals a meter did not
    cover stay NaN. ``start`` (inclusive) and ``end`` (exclusive) are local times in ``timezone``
    (default: the zone the file was recorded in), which is also the zone of the tz-naive output.
    """
    rule = _check_resample(resample)
    zone = _check_timezone(timezone)
    ledger = ledger if ledger is not None else ReadLedger()
    columns = _output_columns(appliances)
    with _open(path) as source:
        metadata = source.metadata(_building_key(source, building))
        wiring = _resolve_meters(metadata, building, columns, meters)
        probes = {m: _probe_meter(source, building, m) for ms in wiring.values() for m in ms}
        zone = zone or next((p.stored_tz for p in probes.values() if p.stored_tz), None)
        bounds = _parse_range(start, end, zone)
        readings = {}
        for m, probe in probes.items():
            report = RowReport(source=f"{path.name}:{probe.key}", unit="readings")
            readings[m] = _to_local(_read_meter(source, probe, bounds, rule, report), zone)
            ledger.add(report)
    frame = pd.concat(
        {column: _sum_meters([readings[m] for m in wiring[column]]) for column in columns},
        axis=1,
        join="outer",
    )
    if frame.empty:
        raise DataError(f"building {building} of {path} has no readings in [{start}, {end})")
    frame.index = pd.DatetimeIndex(frame.index, name="time")
    return frame.sort_index().astype("float64")
