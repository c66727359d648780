"""Start-up checks of what a server exposes and to whom: keys, TLS files, hosts.

Run by ``modelyard serve`` before uvicorn starts (and before any worker loads a model), so that a
missing key file or a certificate that does not load is one clear line and exit code 2, not a
traceback per worker. Risky but legal set-ups are logged as warnings.
"""

import logging
import os
import ssl

from modelyard.core.errors import ConfigError
from modelyard.serving.api_keys import load_keys, world_readable
from modelyard.serving.hosts import LOOPBACK_BINDS, AllowedHosts
from modelyard.serving.settings import ServerSettings

#: Environment variable with the password of an encrypted ``--ssl-keyfile`` (never an option:
#: command lines are visible to every user of the machine).
SSL_PASSWORD_ENV = "MODELYARD_SSL_KEYFILE_PASSWORD"
log = logging.getLogger("modelyard.serving")


def ssl_password() -> str | None:
    return os.environ.get(SSL_PASSWORD_ENV) or None


def check_exposure(settings: ServerSettings) -> None:
    """Refuse settings that cannot work (ConfigError); warn about those that expose too much."""
    keys = load_keys(settings.api_key_file, settings.api_key_env)
    if settings.api_key_file is not None and world_readable(settings.api_key_file):
        log.warning(
            "API key file %s is readable by every user of this machine; chmod 600 it",
            settings.api_key_file,
        )
    check_tls(settings)
    public = settings.host.lower() not in LOOPBACK_BINDS
    if public and keys is None:
        log.warning(
            "listening on %s without API keys: anyone who reaches the port may call the API "
            "(--api-key-file or $MODELYARD_API_KEYS; docs/security.md)",
            settings.host,
        )
    if public and AllowedHosts(settings.allowed_hosts).any:
        log.warning(
            "listening on %s and accepting any Host header; name the hosts clients use with "
            "--allowed-host (DNS rebinding, docs/security.md)",
            settings.host,
        )
    if public and keys is not None and settings.ssl_certfile is None:
        log.warning(
            "API keys travel in clear text unless TLS ends in front of this server "
            "(--ssl-certfile, or a reverse proxy; docs/security.md)"
        )


def check_tls(settings: ServerSettings) -> None:
    """The certificate and key load (and match), or one clear error."""
    if settings.ssl_keyfile is not None and settings.ssl_certfile is None:
        raise ConfigError("--ssl-keyfile needs --ssl-certfile")
    if settings.ssl_certfile is None:
        return
    for path in (settings.ssl_certfile, settings.ssl_keyfile):
        if path is not None and not path.is_file():
            raise ConfigError(f"TLS file not found: {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # a callable, never None: OpenSSL would prompt on the terminal for an encrypted key
        context.load_cert_chain(
            settings.ssl_certfile, settings.ssl_keyfile, lambda: ssl_password() or ""
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {settings.ssl_certfile} with key "
            f"{settings.ssl_keyfile or '(in the certificate file)'}: {exc} "
            f"(an encrypted key needs ${SSL_PASSWORD_ENV})"
        ) from None
