"""``modelyard init image|table|nilm``: a project config for a user's own data, outside the package.

The project file is written to ``<config dir>/project/<name>.yaml`` (``./conf`` unless
``--dir`` or ``$MODELYARD_CONFIG_DIR`` says otherwise), where every command finds it
(``core/config_dir.py``). What can be read from the data is filled in by the family's draft:
an image folder's classes, image counts and a typical size (``projects/vision/project_init.py``);
a table's columns, their types, value ranges and a suggested target
(``projects/tabular/project_init.py``); a NILM source's houses, mains, appliances and their
thresholds, the spacing of its readings and the house split (``projects/nilm/project_init.py``).
The model, schedule and sweep space come from the family's defaults (``model/vision.yaml``,
``schedule/tabular_quick.yaml``, ``model/nilm.yaml``, ...), so no other file is needed.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelyard.core.config import shipped_config_dir
from modelyard.core.config_dir import configured_config_dir
from modelyard.core.errors import ConfigError
from modelyard.core.project_drafts import ProjectDraft

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


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


def _written(path: Path, name: str, draft: ProjectDraft, force: bool) -> InitResult:
    _write(path, draft.text, force)
    return InitResult(path, draft.facts, _next_steps(name))


def init_image(
    name: str, source: Path, config_dir: Path | None = None, force: bool = False
) -> InitResult:
    """Write an image project for a folder (or zip) with one subfolder per class."""
    from modelyard.projects.vision.project_init import draft_image_project

    path = project_file(name, config_dir)
    _check_target(path, force)
    return _written(path, name, draft_image_project(name, source), force)


def init_table(
    name: str,
    source: Path,
    target: str | None = None,
    config_dir: Path | None = None,
    force: bool = False,
    ignore: Sequence[str] = (),
) -> InitResult:
    """Write a table project for a CSV file: columns, types, ranges and a target (``ignore``:
    columns that are no features, e.g. one that gives the target away)."""
    from modelyard.projects.tabular.project_init import draft_table_project

    path = project_file(name, config_dir)
    _check_target(path, force)
    return _written(path, name, draft_table_project(name, source, target, ignore), force)


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
    from modelyard.projects.nilm.project_init import draft_nilm_project

    path = project_file(name, config_dir)
    _check_target(path, force)
    draft = draft_nilm_project(name, source, mains, appliances, test_houses)
    return _written(path, name, draft, force)
