"""Where a user's own configuration folder is (light: the CLI imports it without Hydra).

``$MODELYARD_CONFIG_DIR`` (set by ``modelyard --config-dir``) names it; otherwise ``./conf`` is
used when it exists. ``modelyard init`` writes there and every command composes with it
(``core/config.py`` adds it to Hydra's search path).
"""

import os
from pathlib import Path

from modelyard.core.errors import ConfigError

#: Where a user's own configuration folder is (``--config-dir`` of the CLI sets it).
CONFIG_DIR_ENV = "MODELYARD_CONFIG_DIR"
#: The user's configuration folder when ``$MODELYARD_CONFIG_DIR`` is not set.
DEFAULT_CONFIG_DIR = Path("conf")


def configured_config_dir() -> Path:
    """The folder user configs belong in, whether or not it exists yet (``init`` creates it)."""
    configured = os.environ.get(CONFIG_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else DEFAULT_CONFIG_DIR.resolve()


def user_config_dir() -> Path | None:
    """The user's configuration folder to compose with: ``$MODELYARD_CONFIG_DIR`` (which must
    exist), else ``./conf`` if present, else ``None``."""
    path = configured_config_dir()
    if os.environ.get(CONFIG_DIR_ENV) and not path.is_dir():
        raise ConfigError(
            f"{CONFIG_DIR_ENV}={os.environ[CONFIG_DIR_ENV]}: no such configuration folder"
        )
    return path if path.is_dir() else None
