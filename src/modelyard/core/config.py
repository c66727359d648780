"""Compose the Hydra configuration tree shipped in ``modelyard.conf``, with command-line overrides.

The Hydra tree is the single source of truth for every parameter. Stages receive the composed
``DictConfig``; the resolved config is saved next to every run and inside every bundle.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from modelyard.core.errors import ConfigError

CONFIG_MODULE = "modelyard.conf"
CONFIG_NAME = "config"


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the config with Hydra override syntax (``key=value``, ``group=option``, ``+key=v``).

    Raises :class:`ConfigError` naming the bad override instead of a Hydra traceback.
    """
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
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
