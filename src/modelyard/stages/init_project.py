"""``modelyard init image|table|nilm``: a project config for a user's own data, outside the package.

The project file is written to ``<config dir>/project/<name>.yaml`` (``./conf`` unless
``--dir`` or ``$MODELYARD_CONFIG_DIR`` says otherwise), where every command finds it
(``core/config_dir.py``). What can be read from the data is filled in: an image folder's classes
and image counts (one folder per class) and a typical image size; a table's columns, their types,
value ranges and a suggested target; a NILM source's houses, mains, appliances, the spacing of its
readings and the house split (one subfolder of CSV files per house, or a NILMTK HDF5 file, whose
buildings and appliances come from its metadata). The model, schedule and sweep space come from
the family's defaults (``model/vision.yaml``, ``schedule/tabular_quick.yaml``, ``model/nilm.yaml``,
...), so no other file is needed.

NILM appliances of a kind the shipped project knows (``conf/project/nilm.yaml``: kettle,
microwave, dishwasher, washing machine) take its thresholds, read from that file; others get an
on-threshold and a limit inferred from their readings (CSV sources only: an HDF5 file's meters are
not read), marked in the file to be checked. One house is split in time: its last months, fetched
as a house of their own, are the test period.
"""

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from PIL import Image, UnidentifiedImageError

from modelyard.core.config import shipped_config_dir
from modelyard.core.config_dir import configured_config_dir
from modelyard.core.errors import ConfigError, DataError
from modelyard.core.hashing import sha256_file
from modelyard.projects.tabular.schema import parse_schema
from modelyard.projects.vision.image_folders import ImageIndex, index_image_folder, member_reader

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: Image sizes init chooses from: the largest not above the typical shorter side of the images.
IMAGE_SIZES = (32, 64, 96, 128)
#: Images whose header is read to find the typical size.
SIZE_SAMPLE = 64
#: Rows of a table read to infer its columns.
TABLE_SAMPLE_ROWS = 200_000
#: A text column with more distinct values than this (or than half its rows) is free text.
MAX_CATEGORIES = 200
#: Date formats a text column is tried with (all its values must parse).
DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%d-%m-%Y", "%d/%m/%Y")
#: Words that make an integer column a code (categorical): zip codes, types, classes.
CODE_HINTS = ("code", "zip", "postal", "type", "class", "category")
#: Words that make a numeric column a likely target, most telling first.
TARGET_HINTS = ("target", "price", "value", "label", "y")


@dataclass
class InitResult:
    """What ``init`` wrote and what it found, for the CLI to report."""

    path: Path
    facts: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def project_file(name: str, config_dir: Path | None) -> Path:
    """Where project ``name``'s file goes: ``<config dir>/project/<name>.yaml``."""
    _check_name(name)
    root = (config_dir or configured_config_dir()).expanduser().resolve()
    return root / "project" / f"{name}.yaml"


def _check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"project name {name!r}: use a letter, then letters, digits, '_' or '-' (at most 64)"
        )
    if (shipped_config_dir() / "project" / f"{name}.yaml").is_file():
        raise ConfigError(
            f"project name {name!r} is a shipped project (which would always take precedence): "
            "choose another name"
        )


def _check_target(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: pass --force to overwrite it")


def _portable(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else absolute."""
    resolved = path.expanduser().resolve()
    try:
        return resolved.relative_to(Path.cwd()).as_posix() or "."
    except ValueError:
        return resolved.as_posix()


def _write(path: Path, text: str, force: bool) -> None:
    _check_target(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _next_steps(name: str) -> list[str]:
    project = f"project={name}"
    return [
        f"modelyard data fetch {project}",
        f"modelyard data prepare {project}",
        f"modelyard train experiment=quick {project}",
        f"modelyard evaluate {project}",
        f"modelyard export {project}",
        f"modelyard serve .modelyard/bundles/{name}/$(cat .modelyard/bundles/{name}/LATEST)",
    ]


# --- images -----------------------------------------------------------------------------------


def init_image(
    name: str, source: Path, config_dir: Path | None = None, force: bool = False
) -> InitResult:
    """Write an image project for a folder (or zip) with one subfolder per class."""
    path = project_file(name, config_dir)
    _check_target(path, force)
    source = source.expanduser()
    if not source.exists():
        raise DataError(f"--source {source}: no such folder or zip file")
    try:
        index = index_image_folder(source)
    except PermissionError as exc:
        raise DataError(f"--source {source}: cannot be read ({exc.strerror})") from exc
    size = _typical_size(index)
    counts = index.class_counts()
    if source.is_dir():
        data_lines = [
            "  # The folder itself: `data fetch` copies it (no checksums: it is a working copy).",
            f"  source: {_quoted(_portable(source))}",
            "  files: []",
            "  archive: null",
        ]
    else:
        data_lines = [
            f"  source: {_quoted(_portable(source.parent))}",
            f"  files:\n    - {{path: {_quoted(source.name)}, sha256: {sha256_file(source)}}}",
            f"  archive: {_quoted(source.name)}",
        ]
    counted = ", ".join(f"{cls}: {count}" for cls, count in counts.items())
    text = IMAGE_TEMPLATE.format(
        name=name,
        source=_portable(source),
        counted=counted,
        data="\n".join(data_lines),
        size=size,
        top_k=min(3, len(counts)),
        decision=_decision_comment(list(counts)),
    )
    _write(path, text, force)
    facts = [
        f"{len(counts)} classes, {int(index.labels.size)} images: {counted}",
        f"image size {size} (the typical shorter side, rounded down to one of {IMAGE_SIZES})",
    ]
    smallest = min(counts.values())
    if smallest < 20:
        facts.append(
            f"warning: {min(counts, key=lambda c: counts[c])!r} has only {smallest} image(s); "
            "with 15 % test and 15 % validation a split may see very few of a class"
        )
    return InitResult(path, facts, _next_steps(name))


def _decision_comment(classes: list[str]) -> str:
    """What the ``decision`` block does for these classes (it acts only with two)."""
    if len(classes) != 2:
        return (
            "# Two-class projects only (this one has more): the decision threshold\n"
            '# (docs/serving.md, "Two-class image models: the decision").'
        )
    return (
        f"# Two classes: after training, the threshold on {classes[1]!r}'s probability (the\n"
        "# positive class: the second in class order, unless `positive` names the other) is\n"
        "# chosen on the validation split by `rule`: max_f1, or precision / recall reaching\n"
        '# `target` (docs/serving.md, "Two-class image models: the decision").'
    )


def _quoted(text: str) -> str:
    """A YAML scalar for ``text`` (quoted when YAML would read it otherwise)."""
    dumped = yaml.safe_dump(text, default_flow_style=True).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


def _typical_size(index: ImageIndex) -> int:
    """The image size to train at: the largest of IMAGE_SIZES not above the median shorter side."""
    step = max(1, len(index.members) // SIZE_SAMPLE)
    sides: list[int] = []
    with member_reader(index.source) as read:
        for member in index.members[::step][:SIZE_SAMPLE]:
            try:
                with Image.open(io.BytesIO(read(member))) as image:
                    sides.append(min(image.size))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(
                    f"{index.source}: {member} is not a readable image ({exc})"
                ) from exc
    median = sorted(sides)[len(sides) // 2]
    fitting = [size for size in IMAGE_SIZES if size <= median]
    return fitting[-1] if fitting else IMAGE_SIZES[0]


IMAGE_TEMPLATE = """\
# Image project {name!r}, written by `modelyard init image` from {source}
# ({counted}). Classes are the folder names, read again by `data prepare`.
# Model, schedule and sweep: the vision family's defaults (model/vision.yaml,
# schedule/vision_quick.yaml, ...) unless conf/model/{name}.yaml etc. exist beside this file.
name: {name}
task: vision

data:
{data}
  # Images are resized to this many pixels square (chosen from the images' typical size).
  image_size: {size}
  # Stratified: every class in the same proportions in train, validation and test.
  split: {{test_fraction: 0.15, val_fraction: 0.15, seed: 0}}
  batch_size: 64
  num_workers: 0
  # Unreadable files are refused and reported (prepare.json "reading"); above this fraction
  # prepare fails (on_refused: fail) or warns (warn).
  max_refused_fraction: 0.001
  on_refused: fail
  max_field_length: 100000
  # Inverse-frequency class weights in the loss (reported in prepare.json).
  class_weights: true
  augment: {{enabled: true, brightness: 0.1}}

# Checkpoints are selected on 1 - validation macro-F1.
monitor: val_error

{decision}
decision: {{rule: max_f1, target: null, positive: null}}

serving:
  top_k: {top_k}
  max_upload_bytes: 10000000
  max_pixels: 40000000
  max_decoded_bytes: 67108864
  max_concurrent_decodes: 2
  max_decode_wait_s: 10.0
"""


# --- tables -----------------------------------------------------------------------------------


def init_table(
    name: str,
    source: Path,
    target: str | None = None,
    config_dir: Path | None = None,
    force: bool = False,
    ignore: Sequence[str] = (),
) -> InitResult:
    """Write a table project for a CSV file: columns, types, ranges and a target.

    ``ignore`` names columns that are not features (e.g. one that gives the target away).
    """
    path = project_file(name, config_dir)
    _check_target(path, force)
    source = source.expanduser()
    if not source.is_file():
        raise DataError(f"--source {source}: no such file (a CSV table with a header line)")
    separator = _separator(source)
    frame = _read_table(source, separator)
    columns = [str(c) for c in frame.columns]
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]
    if target is None:
        target = _suggest_target([column for column in numeric if column not in ignore])
        if target is None:
            raise DataError(f"{source}: no numeric column to predict among {columns}")
        suggested = True
    else:
        suggested = False
        if target not in columns:
            raise ConfigError(f"--target {target!r} is not a column of {source.name}: {columns}")
        if target not in numeric:
            raise ConfigError(
                f"--target {target!r} is not numeric (tables are regression): "
                f"numeric columns are {numeric}"
            )
    if target in ignore:
        raise ConfigError(f"--ignore {target!r}: it is the target")
    unknown = [column for column in ignore if column not in columns]
    if unknown:
        raise ConfigError(f"--ignore {unknown} not column(s) of {source.name}: {columns}")
    schema, facts = _table_schema(frame.drop(columns=list(ignore)), source.name, separator, target)
    parse_schema(schema)  # what training will check, checked now
    project: dict[str, Any] = {
        "name": name,
        "task": "tabular",
        "data": {
            "source": _portable(source.parent),
            "files": [{"path": source.name, "sha256": sha256_file(source)}],
            "batch_size": 128,
            "num_workers": 0,
            "max_refused_fraction": 0.001,
            "on_refused": "fail",
            "max_field_length": 100000,
        },
        "monitor": "val_mdape",
        "table": schema,
        "serving": {"max_rows": 1000},
    }
    how = "suggested: pass --target COLUMN to choose another" if suggested else "from --target"
    header = (
        f"# Table project {name!r}, written by `modelyard init table` from {_portable(source)}.\n"
        f"# Target {target!r} ({how}).\n"
        "# Feature ranges are the observed ones widened by half their span (the API refuses\n"
        "# values outside). Drop any feature that gives the target away (e.g. a total price when\n"
        "# the target is a price per m2). Every key is described in the shipped projects\n"
        "# (conf/project/kc_house.yaml). Model, schedule and sweep: the tabular family's defaults\n"
        "# (model/tabular.yaml, ...) unless conf/model/<name>.yaml etc. exist.\n"
    )
    _write(path, header + yaml.safe_dump(project, sort_keys=False, width=100), force)
    facts.insert(0, f"target: {target} ({how})")
    if ignore:
        facts.append(f"ignored (--ignore): {list(ignore)}")
    return InitResult(path, facts, _next_steps(name))


def _separator(source: Path) -> str:
    try:
        with source.open(newline="", encoding="utf-8") as handle:
            sample = handle.read(65536)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--source {source}: cannot be read as UTF-8 text ({exc})") from exc
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _read_table(source: Path, separator: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(source, sep=separator, nrows=TABLE_SAMPLE_ROWS)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"--source {source}: not a readable CSV table ({exc})") from exc
    if frame.shape[1] < 2 or len(frame) < 10:
        raise DataError(
            f"--source {source}: {len(frame)} row(s) and {frame.shape[1]} column(s) read; "
            "a table needs a header line, a target and at least one feature, and 10+ rows"
        )
    return frame


def _suggest_target(numeric: list[str]) -> str | None:
    """A numeric column named like a target: a hint exactly, then ending in it, then holding it."""
    matches = (
        lambda name, hint: name == hint,
        lambda name, hint: len(hint) > 1 and name.endswith(hint),
        lambda name, hint: len(hint) > 1 and hint in name,
    )
    for match in matches:
        for hint in TARGET_HINTS:
            for column in numeric:
                if match(column.lower(), hint):
                    return column
    return numeric[-1] if numeric else None


def _is_code(frame: pd.DataFrame, column: str) -> bool:
    """An integer column named like a code (zip code, type, class): categories, not amounts."""
    lowered = column.lower()
    return pd.api.types.is_integer_dtype(frame[column]) and any(
        hint in lowered for hint in CODE_HINTS
    )


def _is_identifier(frame: pd.DataFrame, column: str) -> bool:
    lowered = column.lower()
    named = lowered == "id" or lowered.endswith("_id") or column.endswith("Id")
    values = frame[column].dropna()
    unique_integers = pd.api.types.is_integer_dtype(values) and values.nunique() == len(values) > 1
    return named or unique_integers


def _date_format(values: pd.Series) -> str | None:
    present = values.dropna().astype(str)
    if present.empty:
        return None
    for fmt in DATE_FORMATS:
        parsed = pd.to_datetime(present, format=fmt, errors="coerce")
        if parsed.notna().all():
            return fmt
    return None


def _bound(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 6)


def _numeric_entry(column: str, values: pd.Series) -> dict[str, Any]:
    """A numeric feature accepting the observed range widened by half its span (never below
    zero for a column that never is)."""
    low, high = float(values.min()), float(values.max())
    margin = (high - low) / 2
    lower = low - margin if low < 0 or low - margin >= 0 else 0.0
    return {
        "name": column,
        "min": _bound(math.floor(lower)),
        "max": _bound(math.ceil(high + margin)),
    }


def _column_entry(frame: pd.DataFrame, column: str) -> tuple[str, dict[str, Any], str | None]:
    """How a column is used: ``(kind, feature entry, date format)``, kind ``skip`` for none."""
    values = frame[column]
    optional = {} if values.notna().all() else {"required": False}
    if values.notna().sum() == 0 or _is_identifier(frame, column):
        return "skip", {}, None
    if _is_code(frame, column) and values.nunique() <= MAX_CATEGORIES:
        entry = {"name": column, "max_categories": max(int(values.nunique()), 2)}
        return "categorical", entry | optional, None
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return "numeric", _numeric_entry(column, values) | optional, None
    if (fmt := _date_format(values)) is not None:
        return "date", {"name": column} | optional, fmt
    distinct = int(values.nunique())
    if distinct > MAX_CATEGORIES or distinct > len(values) / 2:
        return "skip", {}, None
    return "categorical", {"name": column, "max_categories": max(distinct, 2)} | optional, None


def _table_schema(
    frame: pd.DataFrame, file: str, separator: str, target: str
) -> tuple[dict[str, Any], list[str]]:
    kinds: dict[str, list[dict[str, Any]]] = {"numeric": [], "categorical": [], "date": []}
    date_formats: dict[str, str] = {}
    skipped: list[str] = []
    for column in (str(c) for c in frame.columns if str(c) != target):
        kind, entry, fmt = _column_entry(frame, column)
        if kind == "skip":
            skipped.append(column)
            continue
        kinds[kind].append(entry)
        if fmt is not None:
            date_formats[column] = fmt
    numeric, categorical, dates = kinds["numeric"], kinds["categorical"], kinds["date"]
    if not numeric and not categorical and not dates:
        raise DataError(f"{file}: no usable feature besides the target {target!r}")
    dropped = int((~(frame[target] > 0)).sum())  # NaN too: the family keeps target > 0 only
    read: dict[str, Any] = {"file": file, "header": True}
    if separator != ",":
        read["separator"] = separator
    if date_formats:
        read["dates"] = date_formats
    schema: dict[str, Any] = {
        "read": read,
        "features": kinds,
        "target": {"name": target, "log": True},
        "split": {"method": "random", "test_fraction": 0.2, "val_fraction": 0.1, "seed": 0},
        # the finest grouping makes the most telling baseline (zip codes rather than types)
        "baseline_group": (
            max(categorical, key=lambda f: int(f["max_categories"]))["name"]
            if categorical
            else None
        ),
    }
    facts = [
        f"{len(frame)} rows read; features: {len(numeric)} numeric, "
        f"{len(categorical)} categorical, {len(dates)} date",
        f"numeric: {[f['name'] for f in numeric]}",
        f"categorical: {[f['name'] for f in categorical]}",
    ]
    if dates:
        facts.append(f"dates: {date_formats}")
    if skipped:
        facts.append(f"not used (identifiers, free text or empty): {skipped}")
    if dropped:
        facts.append(
            f"{dropped} row(s) with {target} missing or <= 0 will be dropped "
            "(table projects predict positive amounts, in log space)"
        )
    return schema, facts


# --- NILM -------------------------------------------------------------------------------------

#: Share of a single house's files (its last months) held out as its test period.
TIME_SPLIT_TEST_FRACTION = 0.2


def _shipped_nilm() -> dict[str, Any]:
    """The shipped NILM project: every setting init does not infer, and the known appliances'
    thresholds (one definition of each, read rather than copied)."""
    loaded = yaml.safe_load((shipped_config_dir() / "project" / "nilm.yaml").read_text())
    return dict(loaded)


def init_nilm(
    name: str,
    source: Path,
    config_dir: Path | None = None,
    force: bool = False,
    mains: str | None = None,
    appliances: Sequence[str] = (),
    test_houses: Sequence[str] = (),
) -> InitResult:
    """Write a NILM project for a folder of houses (one subfolder of CSV files each) or a NILMTK
    HDF5 file: houses, appliances and their thresholds, the house split and checksummed files."""
    path = project_file(name, config_dir)
    _check_target(path, force)
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
        f"# NILM project {name!r}, written by `modelyard init nilm` from {_portable(source)}.\n"
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
    _write(path, text, force)
    return InitResult(path, facts, _next_steps(name))


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
        lines.append(f"  {_quoted(appliance)}: {flow}")
    return "\n".join(lines) + "\n"


def _nilm_csv(
    source: Path,
    shipped: dict[str, Any],
    mains: str | None,
    wanted: Sequence[str],
    test_houses: Sequence[str],
) -> tuple[dict[str, Any], list[str]]:
    from modelyard.projects.nilm.readers import MAINS_COLUMN, csv_files
    from modelyard.projects.nilm.survey import survey_csv_houses

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
        source=_portable(source),
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
    from modelyard.projects.nilm.readers import snake_case

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
    from modelyard.projects.nilm.survey import infer_levels

    rows: dict[str, tuple[dict[str, Any], str | None]] = {}
    for appliance in chosen:
        if appliance in known:
            rows[appliance] = (dict(known[appliance]), None)
            continue
        levels = infer_levels([h.readings[appliance] for h in houses], ceiling_w)
        row = {"on_threshold_w": _bound(levels.on_threshold_w), "limit_w": _bound(levels.limit_w)}
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

    from modelyard.projects.nilm.hdf5_reader import building_inventories
    from modelyard.projects.nilm.readers import snake_case

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
        source=_portable(source.parent),
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
