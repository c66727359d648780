"""What the locustfiles can be told, through environment variables (Locust runs them in their own
process). No Locust and no numpy here: the runner validates the same options before it starts.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modelyard.core.errors import ModelyardError

#: Seed of the payload generators (series, perturbations, images).
SEED_ENV = "MODELYARD_LOADTEST_SEED"
#: NILM series length: ``window`` (the model window, default), ``day`` or a number of readings.
NILM_LENGTH_ENV = "MODELYARD_LOADTEST_NILM_LENGTH"
#: A folder of real .jpg/.jpeg/.png images to upload instead of synthetic ones (vision).
IMAGES_ENV = "MODELYARD_LOADTEST_IMAGES"
#: A file to which the request id of every successful prediction is appended, one per line.
REQUEST_LOG_ENV = "MODELYARD_LOADTEST_REQUEST_LOG"
#: The API key sent with every request (``Authorization: Bearer``), for a server that needs one.
API_KEY_ENV = "MODELYARD_LOADTEST_API_KEY"

#: How a locustfile says that it could not build its payloads (in its log, and its exit code).
SETUP_FAILED = "modelyard load test set-up failed"
SETUP_FAILED_EXIT_CODE = 3

NILM_LENGTH_WORDS = ("window", "day")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class LoadOptions:
    seed: int = 0
    nilm_length: str = "window"
    images: Path | None = None
    request_log: Path | None = None
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_nilm_length(self.nilm_length)
        if self.images is not None and not self.images.is_dir():
            raise ModelyardError(f"images folder not found: {self.images}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "LoadOptions":
        env = os.environ if env is None else env
        seed = env.get(SEED_ENV, "0").strip()
        try:
            seed_value = int(seed)
        except ValueError:
            raise ModelyardError(f"{SEED_ENV} must be an integer, not {seed!r}") from None
        images = env.get(IMAGES_ENV, "").strip()
        request_log = env.get(REQUEST_LOG_ENV, "").strip()
        return cls(
            api_key=env.get(API_KEY_ENV, "").strip() or None,
            seed=seed_value,
            nilm_length=env.get(NILM_LENGTH_ENV, "window").strip() or "window",
            images=Path(images) if images else None,
            request_log=Path(request_log) if request_log else None,
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that give a locustfile exactly these options (an empty
        value for an option left out, so that none is inherited from this process)."""
        return {
            SEED_ENV: str(self.seed),
            NILM_LENGTH_ENV: self.nilm_length,
            IMAGES_ENV: str(self.images.resolve()) if self.images else "",
            REQUEST_LOG_ENV: str(self.request_log.resolve()) if self.request_log else "",
            API_KEY_ENV: self.api_key or "",
        }

    def auth_headers(self) -> dict[str, str]:
        """The header that carries the API key, if there is one."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def check_nilm_length(value: str) -> None:
    """``window``, ``day`` or a positive whole number of readings."""
    if value in NILM_LENGTH_WORDS:
        return
    if not value.isdigit() or int(value) < 1:
        raise ModelyardError(
            f"NILM series length must be 'window', 'day' or a positive number of readings, "
            f"not {value!r}"
        )


def nilm_series_length(
    value: str, window: int, interval_s: int, min_length: int, max_length: int
) -> int:
    """The number of readings to send, kept within what the server accepts."""
    check_nilm_length(value)
    if value == "window":
        wanted = window
    elif value == "day":
        wanted = 86400 // max(1, interval_s)
    else:
        wanted = int(value)
    return min(max(wanted, min_length), max_length)
