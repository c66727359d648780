"""API keys: where they come from, and how a presented token is matched without leaking them.

Keys come from a file (``--api-key-file``) and/or an environment variable (``MODELYARD_API_KEYS``),
in the same form: one key per line (commas also separate keys in the variable), ``#`` at the
start of a line or after a space starts a comment, and ``name:key`` gives a key a name for the
access log. An unnamed key is logged as ``sha256:`` and the first 8 hex digits of its digest:
enough to tell keys apart, useless to an attacker (keys are at least :data:`MIN_KEY_LENGTH`
characters).

Only the sha256 digests of the keys are kept. A presented token is hashed once and compared
with *every* digest by :func:`hmac.compare_digest`, without stopping at a match: the time taken
says neither which key matched nor how long any key is.
"""

import hashlib
import hmac
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from modelyard.core.errors import ConfigError

#: The environment variable read for keys by ``modelyard serve``.
API_KEYS_ENV = "MODELYARD_API_KEYS"
#: Shorter keys are refused: a key is a secret, not a password to remember.
MIN_KEY_LENGTH = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
#: ``#`` at the start of a line or after a space starts a comment (a key may hold ``#``).
_COMMENT = re.compile(r"(^|\s)#.*")


@dataclass(frozen=True)
class KeyRing:
    """The accepted keys, as (name, sha256 digest) pairs."""

    names: tuple[str, ...]
    digests: tuple[bytes, ...]

    def match(self, token: str) -> str | None:
        """The name of the key equal to ``token``, else None; the same work whatever the
        answer (every digest is compared)."""
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = -1
        for index, digest in enumerate(self.digests):
            if hmac.compare_digest(presented, digest):
                found = index
        return self.names[found] if found >= 0 else None

    def __len__(self) -> int:
        return len(self.digests)


def parse_keys(lines: Iterable[str], where: str) -> list[tuple[str, str]]:
    """(name, key) pairs of ``lines``; a clear error naming ``where`` and the line for a bad one."""
    keys: list[tuple[str, str]] = []
    for number, raw in enumerate(lines, start=1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        name, separator, key = line.partition(":")
        if not separator:
            name, key = "", name
        elif not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}, line {number}: a key name may hold letters, digits, '_', '.' and '-' "
                "(write name:key)"
            )
        if len(key) < MIN_KEY_LENGTH or not (key.isascii() and key.isprintable()) or " " in key:
            raise ConfigError(
                f"{where}, line {number}: a key must be at least {MIN_KEY_LENGTH} printable "
                "ASCII characters without spaces (e.g. `openssl rand -hex 32`)"
            )
        digest = hashlib.sha256(key.encode()).hexdigest()
        keys.append((name or f"sha256:{digest[:8]}", key))
    return keys


def read_key_file(path: Path) -> list[tuple[str, str]]:
    """The keys of ``path``: a clear error when it is missing, unreadable or holds none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"API key file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc}") from None
    keys = parse_keys(text.splitlines(), str(path))
    if not keys:
        raise ConfigError(f"API key file {path} holds no key (one key per line, # comments)")
    return keys


def world_readable(path: Path) -> bool:
    """Whether users other than the owner and group may read ``path``."""
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def load_keys(file: Path | None, env: str | None) -> KeyRing | None:
    """The keys of ``file`` and of the variable ``env`` together; None when neither is given.

    A variable that is set but holds no key is an error (a secret that failed to arrive must not
    silently turn authentication off); an unset one is not.
    """
    keys: list[tuple[str, str]] = []
    if file is not None:
        keys += read_key_file(file)
    value = os.environ.get(env) if env else None
    if env and value is not None:
        from_env = parse_keys(value.replace(",", "\n").splitlines(), f"${env}")
        if not from_env:
            raise ConfigError(f"${env} is set but holds no key; unset it to serve without keys")
        keys += from_env
    if not keys:
        return None
    names = [name for name, _ in keys]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(f"API key names must be unique; repeated: {', '.join(duplicated)}")
    return KeyRing(tuple(names), tuple(hashlib.sha256(key.encode()).digest() for _, key in keys))
