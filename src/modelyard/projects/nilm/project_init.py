"""``modelyard init nilm``: a NILM project drafted from a user's own meter recordings.

The source is a folder with one subfolder of CSV files per house, or a NILMTK HDF5 file, whose
buildings and appliances come from its metadata. Appliances of a kind the shipped project knows
(``conf/project/nilm.yaml``: kettle, microwave, dishwasher, washing machine) take its thresholds,
read from that file; others get an on-threshold and a limit inferred from their readings (CSV
sources only: an HDF5 file's meters are not read), marked in the file to be checked. One house is
split in time: its last months, fetched as a house of their own, are the test period.
"""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from modelyard.core.config import shipped_config_dir
from modelyard.core.errors import ConfigError, DataError
from modelyard.core.hashing import sha256_file
from modelyard.core.project_drafts import ProjectDraft, plain_number, portable, yaml_scalar
from modelyard.projects.nilm.hdf5_reader import building_inventories
from modelyard.projects.nilm.readers import MAINS_COLUMN, csv_files, snake_case
from modelyard.projects.nilm.survey import infer_levels, survey_csv_houses

#: Share of a single house's files (its last months) held out as its test period.
TIME_SPLIT_TEST_FRACTION = 0.2


def _shipped_nilm() -> dict[str, Any]:
    """The shipped NILM project: every setting init does not infer, and the known appliances'
    thresholds (one definition of each, read rather than copied)."""
    loaded = yaml.safe_load((shipped_config_dir() / "project" / "nilm.yaml").read_text())
    return dict(loaded)


def draft_nilm_project(
    name: str,
    source: Path,
    mains: str | None = None,
    appliances: Sequence[str] = (),
    test_houses: Sequence[str] = (),
) -> ProjectDraft:
    """A NILM project for a folder of houses (one subfolder of CSV files each) or a NILMTK HDF5
    file: houses, appliances and their thresholds, the house split and checksummed files."""
    source = source.expanduser()
    if not source.exists():
        raise DataError(f"--source {source}: no such folder or file")
    shipped = _shipped_nilm()
    if source.is_file():
        if mains is not None:
            raise ConfigError(
                "--mains is for CSV folders: a NILMTK file's mains are its site meters"
            )
        project, facts = _nilm_hdf5(source, shipped, appliances, test_houses)
    else:
        project, facts = _nilm_csv(source, shipped, mains, appliances, test_houses)
    rows = project.pop("appliances")
    header = (
        f"# NILM project {name!r}, written by `modelyard init nilm` from {portable(source)}.\n"
        "# Every key is described in the shipped project (conf/project/nilm.yaml), whose values\n"
        "# this file starts from. Model, schedule and sweep: the NILM family's defaults\n"
        "# (model/nilm.yaml, schedule/nilm_quick.yaml, ...) unless conf/model/<name>.yaml etc.\n"
        "# exist.\n"
    )
    text = (
        header
        + yaml.safe_dump({"name": name, "task": "nilm"}, sort_keys=False)
        + _appliance_block(rows)
        + yaml.safe_dump(project, sort_keys=False, width=100, default_flow_style=None)
    )
    return ProjectDraft(text, facts)


def _appliance_block(rows: dict[str, tuple[dict[str, Any], str | None]]) -> str:
    """``appliances:`` with one flow-style row each, and a comment above an inferred one."""
    lines = [
        "# Appliances to disaggregate, in the model's output order (snake_case columns); the",
        "# known kinds take the shipped project's thresholds.",
        "appliances:",
    ]
    for appliance, (row, note) in rows.items():
        if note:
            lines.extend(f"  # {line}" for line in note.splitlines())
        flow = yaml.safe_dump(row, default_flow_style=True, width=1000, sort_keys=False).strip()
        lines.append(f"  {yaml_scalar(appliance)}: {flow}")
    return "\n".join(lines) + "\n"


def _nilm_csv(
    source: Path,
    shipped: dict[str, Any],
    mains: str | None,
    wanted: Sequence[str],
    test_houses: Sequence[str],
) -> tuple[dict[str, Any], list[str]]:

    data = dict(shipped["data"])
    mains_column = mains or str(data.get("mains_column") or MAINS_COLUMN)
    hdf5_files = sorted(source.glob("*.h5"))
    if (
        hdf5_files
        and not any(csv_files(source))
        and not any(csv_files(d) for d in source.iterdir() if d.is_dir())
    ):
        raise DataError(
            f"--source {source}: no house folders of CSV files; for the NILMTK file in it, give "
            f"--source {hdf5_files[0]}"
        )
    try:
        houses = survey_csv_houses(source, mains_column)
    except PermissionError as exc:
        raise DataError(f"--source {source}: cannot be read ({exc.strerror})") from exc
    found = {house.name: house.appliances for house in houses}
    chosen, facts = _choose_appliances(found, wanted, shipped["appliances"])
    ceiling = float(data["aggregate_limit_w"])
    rows = _appliance_rows(chosen, shipped["appliances"], houses, ceiling, facts)
    interval_s = int(data["interval_s"])
    coarsest = max(house.interval_s for house in houses)
    if coarsest > interval_s:
        interval_s = math.ceil(coarsest)
        data["max_fill_s"] = max(int(data["max_fill_s"]), 3 * interval_s)
        facts.append(
            f"warning: readings every {coarsest:g} s, coarser than the shipped interval: "
            f"data.interval_s set to {interval_s} (a window of {data['window']} readings then "
            f"spans {int(data['window']) * interval_s / 60:g} minutes)"
        )
    finest = min(house.interval_s for house in houses)
    if finest < interval_s:
        facts.append(f"readings every {finest:g} s are averaged to data.interval_s {interval_s} s")
    files, train, test, split_facts = _nilm_split(source, houses, test_houses)
    data.pop("hdf5", None)  # format nilmtk_hdf5 only
    data.update(
        source=portable(source),
        format="csv",
        mains_column=mains_column,
        files=files,
        train_houses=train,
        test_houses=test,
        interval_s=interval_s,
    )
    described = [
        f"{h.name}: {h.rows} readings every {h.interval_s:g} s, {h.start} .. {h.end}, "
        f"{len(h.files)} file(s)"
        for h in houses
    ]
    facts[:0] = [f"{len(houses)} house(s): " + "; ".join(described), f"mains: {mains_column}"]
    facts.extend(split_facts)
    facts.append(f"{len(files)} file(s) listed with their sha256: `data fetch` checks them")
    return _nilm_project(shipped, rows, data), facts


def _nilm_project(
    shipped: dict[str, Any], rows: dict[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    """The shipped project's sections with this data's appliances and data section."""
    rest = {k: v for k, v in shipped.items() if k not in ("name", "task", "appliances", "data")}
    return {"appliances": rows, "data": data, **rest}


def _choose_appliances(
    found: dict[str, list[str]], wanted: Sequence[str], known: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """The appliances to model (``--appliance``, else those every house meters) and facts."""

    every = list(dict.fromkeys(a for names in found.values() for a in names))
    if not every:
        raise DataError(
            f"no appliance columns: the houses have only the mains ({sorted(found)}); "
            "NILM needs at least one metered appliance"
        )
    facts: list[str] = []
    if wanted:
        chosen = list(dict.fromkeys(snake_case(name) for name in wanted))
        unknown = [a for a in chosen if a not in every]
        if unknown:
            raise ConfigError(f"--appliance {unknown}: not metered here; appliances are {every}")
        for appliance in chosen:
            lacking = [house for house, names in found.items() if appliance not in names]
            if lacking:
                raise ConfigError(
                    f"--appliance {appliance!r}: houses {lacking} do not meter it "
                    "(every house must: `data prepare` reads them all)"
                )
        facts.append(f"appliances (--appliance): {chosen}")
        return chosen, facts
    chosen = [a for a in every if all(a in names for names in found.values())]
    partial = [a for a in every if a not in chosen]
    if not chosen:
        raise DataError(
            f"no appliance is metered in every house ({found}): `data prepare` reads every "
            "house, so give --source only houses that share at least one appliance"
        )
    facts.append(f"appliances: {chosen} (known: {[a for a in chosen if a in known]})")
    if partial:
        facts.append(f"warning: left out {partial}: not metered in every house")
    return chosen, facts


def _appliance_rows(
    chosen: list[str],
    known: dict[str, Any],
    houses: Sequence[Any],
    ceiling_w: float,
    facts: list[str],
) -> dict[str, tuple[dict[str, Any], str | None]]:
    """Each appliance's row: the shipped one for a known kind, else thresholds from its data."""

    rows: dict[str, tuple[dict[str, Any], str | None]] = {}
    for appliance in chosen:
        if appliance in known:
            rows[appliance] = (dict(known[appliance]), None)
            continue
        levels = infer_levels([h.readings[appliance] for h in houses], ceiling_w)
        row = {
            "on_threshold_w": plain_number(levels.on_threshold_w),
            "limit_w": plain_number(levels.limit_w),
        }
        note = (
            f"Inferred from the data (typical on power {levels.on_power_w:.0f} W, highest\n"
            f"{levels.highest_w:.0f} W): CHECK these against the appliance's rating."
        )
        rows[appliance] = (row, note)
        facts.append(
            f"warning: {appliance!r} is not a kind the shipped project knows: on_threshold_w "
            f"{row['on_threshold_w']}, limit_w {row['limit_w']} inferred from its data "
            f"(on power {levels.on_power_w:.0f} W): check them"
        )
        if levels.on_power_w < 2 * levels.on_threshold_w:
            facts.append(f"warning: {appliance!r} is hardly ever on in this data")
    return rows


def _nilm_split(
    root: Path, houses: Sequence[Any], test_houses: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str], list[str], list[str]]:
    """Checksummed files and the train/test houses.

    Two or more houses: the test houses are ``--test-house`` (default the one with the fewest
    readings), never seen in training. One house: its last months, fetched as a house of their
    own (``<house>_test``), are the test period and the earlier ones (``<house>_train``) the
    training house; no window spans the cut.
    """
    names = [house.name for house in houses]
    if len(houses) == 1:
        house = houses[0]
        if test_houses:
            raise ConfigError(
                f"--test-house: {house.name!r} is the only house; its last months are held out "
                "as the test period (leave out --test-house, or add houses)"
            )
        if len(house.files) < 2:
            raise DataError(
                f"house {house.name!r} has one file: NILM is tested on data never seen in "
                "training, so one house needs two or more (monthly) files to hold its last "
                "months out, or give more houses"
            )
        held = max(1, round(len(house.files) * TIME_SPLIT_TEST_FRACTION))
        train_name, test_name = f"{house.name}_train", f"{house.name}_test"
        files = [
            _file_entry(root, f, train_name if i < len(house.files) - held else test_name)
            for i, f in enumerate(house.files)
        ]
        facts = [
            f"one house: a time split. train {train_name} = its first "
            f"{len(house.files) - held} file(s), test {test_name} = its last {held} "
            f"({house.files[-held].name} ..): a later period, not an unseen house, so test "
            "scores are likely better than on another home"
        ]
        return files, [train_name], [test_name], facts
    smallest = min(reversed(houses), key=lambda h: h.rows).name
    train, test = _house_split(names, test_houses, smallest)
    how = (
        "--test-house"
        if test_houses
        else ("the house with the fewest readings; --test-house chooses another")
    )
    files = [_file_entry(root, f, house.name) for house in houses for f in house.files]
    return files, train, test, [f"train houses {train}, test houses {test} ({how})"]


def _house_split(
    names: list[str], test_houses: Sequence[str], default: str
) -> tuple[list[str], list[str]]:
    """``(train, test)`` houses: ``--test-house`` when given (known houses, not all), else
    ``default``."""
    test = list(dict.fromkeys(test_houses)) or [default]
    unknown = [h for h in test if h not in names]
    if unknown:
        raise ConfigError(f"--test-house {unknown}: houses are {names}")
    if len(test) == len(names):
        raise ConfigError("--test-house: every house is a test house; leave one for training")
    return [h for h in names if h not in test], test


def _file_entry(root: Path, file: Path, house: str) -> dict[str, Any]:
    """A ``data.files`` row: where the file lands (``house/file``), where it is under the source
    when that differs, and its sha256."""
    remote = file.relative_to(root).as_posix() if file.parent != root else file.name
    entry: dict[str, Any] = {"path": f"{house}/{file.name}"}
    if remote != entry["path"]:
        entry["remote"] = remote
    entry["sha256"] = sha256_file(file)
    return entry


def _nilm_hdf5(
    source: Path, shipped: dict[str, Any], wanted: Sequence[str], test_houses: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """A NILMTK HDF5 file: buildings and appliances from its metadata (no meter data is read, so
    only appliances the shipped project knows can be modelled: others need thresholds)."""
    import tables

    if not tables.is_hdf5_file(str(source)):
        raise DataError(
            f"--source {source}: a file that is not HDF5; give a folder with one subfolder of "
            "CSV files per house, or a NILMTK HDF5 file"
        )
    inventories = building_inventories(source)
    if not inventories:
        raise DataError(f"--source {source}: no /building<n> groups (not a NILMTK file)")
    no_mains = [i.building for i in inventories if not i.has_mains]
    if no_mains:
        raise DataError(
            f"--source {source}: building(s) {no_mains} have no site meter (mains) in their "
            "metadata"
        )
    if len(inventories) < 2:
        raise DataError(
            f"--source {source}: one building; NILM is tested on an unseen house, and init "
            "cannot time-split a NILMTK file: convert it to a CSV folder (one file per month) "
            "or give a file with two or more buildings"
        )
    known = shipped["appliances"]
    found = {f"building{i.building}": i.appliances for i in inventories}
    metered = {a for names in found.values() for a in names}
    unknown_wanted = [a for a in map(snake_case, wanted) if a in metered and a not in known]
    if unknown_wanted:
        raise ConfigError(
            f"--appliance {unknown_wanted}: init reads no meter data from a NILMTK file, so it "
            f"sets thresholds only for the kinds the shipped project knows ({list(known)}); "
            "add these rows by hand"
        )
    modelled = {h: [a for a in names if a in known] for h, names in found.items()}
    if not any(modelled.values()):
        raise DataError(
            f"--source {source}: no building meters a kind the shipped project knows "
            f"({list(known)}; found {sorted(metered)}); init reads no meter data to set "
            "thresholds for others: add their rows by hand"
        )
    chosen, facts = _choose_appliances(modelled, wanted, known)
    others = sorted({a for names in found.values() for a in names if a not in known})
    if others:
        facts.append(
            f"not modelled: {others} (no thresholds known and no meter data read; add rows "
            "with on_threshold_w and limit_w by hand to model them)"
        )
    names = list(found)
    train, test = _house_split(names, test_houses, names[-1])
    data = dict(shipped["data"])
    data.pop("mains_column", None)
    data.update(
        source=portable(source.parent),
        format="nilmtk_hdf5",
        hdf5={
            **dict(data["hdf5"]),
            "file": source.name,
            "buildings": {f"building{i.building}": i.building for i in inventories},
            "meters": None,
        },
        files=[{"path": source.name, "sha256": sha256_file(source)}],
        train_houses=train,
        test_houses=test,
    )
    facts[:0] = [f"{len(inventories)} building(s): {found}"]
    how = "--test-house" if test_houses else "the last building; --test-house chooses another"
    facts.append(f"train houses {train}, test houses {test} ({how})")
    rows: dict[str, tuple[dict[str, Any], str | None]] = {a: (dict(known[a]), None) for a in chosen}
    return _nilm_project(shipped, rows, data), facts
