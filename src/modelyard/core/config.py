"""Compose the Hydra configuration tree shipped in ``modelyard.conf``, with command-line overrides.

The Hydra tree is the single source of truth for every parameter. Stages receive the composed
``DictConfig``; the resolved config is saved next to every run and inside every bundle.

A user's own configuration folder (``$MODELYARD_CONFIG_DIR``, else ``./conf`` when it exists)
is added to Hydra's search path behind the shipped tree: its ``project/<name>.yaml`` (written by
``modelyard init``) works like a shipped project, and shipped names always win. A project
without its own ``model/<name>.yaml``, ``schedule/<name>_<preset>.yaml`` or ``sweep/<name>.yaml``
gets its family's (``model/vision.yaml``, ``schedule/tabular_quick.yaml``, ...), so that
``experiment=quick|baseline`` work for it with no further file.
"""

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from modelyard.core.config_dir import user_config_dir
from modelyard.core.errors import ConfigError

CONFIG_MODULE = "modelyard.conf"
CONFIG_NAME = "config"
#: Groups whose options are named after the project and fall back to the family's.
FAMILY_DEFAULT_GROUPS = ("model", "schedule", "sweep")
#: The override that adds folders to Hydra's search path.
_SEARCHPATH_KEY = "hydra.searchpath"


def shipped_config_dir() -> Path:
    """The configuration tree shipped in the package (``modelyard/conf``)."""
    return Path(str(files(CONFIG_MODULE)))


def _config_file(group: str, option: str, user_dir: Path | None) -> Path | None:
    """``group/option.yaml`` as Hydra finds it: the shipped tree first, then the user's."""
    for root in (shipped_config_dir(), user_dir):
        if root is not None and (root / group / f"{option}.yaml").is_file():
            return root / group / f"{option}.yaml"
    return None


def _chosen_project(overrides: Sequence[str]) -> str | None:
    """The ``project=`` option the overrides choose (the last one), if any."""
    chosen: str | None = None
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group == "project" and isinstance(override.value(), str):
            chosen = str(override.value())
    return chosen


def _family_option(
    missing: str, project: str | None, user_dir: Path | None
) -> tuple[str, str] | None:
    """For a missing ``group/<project>[_preset]``, the family's ``(group, option)`` standing in.

    ``None`` when the missing option is not one named after the project, or the family ships
    no such default.
    """
    group, _, option = missing.partition("/")
    if project is None or group not in FAMILY_DEFAULT_GROUPS:
        return None
    if option != project and not option.startswith(f"{project}_"):
        return None
    project_file = _config_file("project", project, user_dir)
    if project_file is None:
        return None
    try:
        family = yaml.safe_load(project_file.read_text()).get("task")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(family, str):
        return None
    stand_in = family + option[len(project) :]
    if (shipped_config_dir() / group / f"{stand_in}.yaml").is_file():
        return group, stand_in
    return None


def _compose(overrides: Sequence[str], user_dir: Path | None) -> DictConfig:
    """Compose once; a missing project-named model/schedule/sweep takes the family's, then again."""
    project = _chosen_project(overrides)
    extra: list[str] = []
    if user_dir is not None and not any(o.startswith(_SEARCHPATH_KEY) for o in overrides):
        extra.append(f"{_SEARCHPATH_KEY}=[{user_dir.as_uri()}]")
    stand_ins: list[str] = []
    for _ in FAMILY_DEFAULT_GROUPS:
        try:
            with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
                return compose(config_name=CONFIG_NAME, overrides=[*extra, *overrides, *stand_ins])
        except MissingConfigException as exc:
            stand_in = _family_option(exc.missing_cfg_file or "", project, user_dir)
            if stand_in is None:
                raise
            stand_ins.append(f"{stand_in[0]}={stand_in[1]}")
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=[*extra, *overrides, *stand_ins])


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the config with Hydra override syntax (``key=value``, ``group=option``, ``+key=v``).

    Raises :class:`ConfigError` naming the bad override instead of a Hydra traceback.
    """
    user_dir = user_config_dir()
    try:
        cfg = _compose(overrides, user_dir)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"bad configuration ({' '.join(overrides) or 'no overrides'}): {message}"
        ) from exc
    return cfg


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python containers (for JSON manifests)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(container, dict):
        raise ConfigError("the configuration root must be a mapping")
    return {str(k): v for k, v in container.items()}


def save_config(cfg: DictConfig, path: Path) -> Path:
    """Write the resolved config as YAML (readable, and loadable by :func:`read_saved_config`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_plain(cfg), sort_keys=False))
    return path


def read_saved_config(path: Path) -> DictConfig:
    """Load a config saved by :func:`save_config` (e.g. the one stored with a training run)."""
    if not path.is_file():
        raise ConfigError(f"saved config not found: {path}")
    loaded = OmegaConf.load(path)
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path} does not hold a configuration mapping")
    return loaded
