"""Allowed hosts: refuse requests whose ``Host`` header names a host this server is not.

The threat is DNS rebinding: a web page on ``evil.example`` makes its own name resolve to
127.0.0.1, and the victim's browser then sends the page's requests to a server on the victim's
machine, with ``Host: evil.example``. Checking the Host header stops it, whatever the network.

Defaults (``modelyard serve``): a server bound to a loopback address accepts only the loopback
names (``127.0.0.1``, ``localhost``, ``[::1]``, any port). A server bound to any other address
(``0.0.0.0`` in a container) cannot know the names it is reached by (service names, pod IPs,
the load balancer's name), so it accepts every host unless ``--allowed-host`` names them, and
says so in a warning at start-up. The probes (and a public ``/metrics``) are exempt: Kubernetes
probes and Prometheus use the pod's IP as Host, and those paths are open to anyone who can reach
the port anyway. Refusals are 400 with a sentence, counted as ``rejected{reason="bad_host"}``.
"""

from collections.abc import Sequence

from modelyard.serving.metrics import ServiceMetrics
from modelyard.serving.middleware import ASGIApp, Receive, Scope, Send, send_error

LOOPBACK_BINDS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
ANY = "*"


def default_allowed_hosts(bind_host: str) -> list[str]:
    """The loopback names for a loopback bind, else every host (see the module docstring)."""
    return list(LOOPBACK_HOSTS) if bind_host.lower() in LOOPBACK_BINDS else [ANY]


def host_name(header: str) -> str:
    """The host of a ``Host`` header without its port, lower case, IPv6 in brackets."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    name, _, port = value.rpartition(":")
    return (name if name and port.isdigit() else value).rstrip(".")


def normalise(pattern: str) -> str:
    """An ``--allowed-host`` value in the form :func:`host_name` gives (port dropped)."""
    value = pattern.strip().lower()
    if ":" in value and not value.startswith("[") and value.count(":") > 1:
        value = f"[{value}]"  # a bare IPv6 address
    return value if value == ANY or value.startswith("*.") else host_name(value)


class AllowedHosts:
    """The allowed names and ``*.domain`` suffixes."""

    def __init__(self, patterns: Sequence[str]) -> None:
        normalised = {normalise(p) for p in patterns if p.strip()}
        self.any = ANY in normalised
        self.names = frozenset(p for p in normalised if not p.startswith("*."))
        self.suffixes = tuple(p[1:] for p in normalised if p.startswith("*."))

    def allows(self, host: str) -> bool:
        if self.any:
            return True
        name = host_name(host)
        return name in self.names or (bool(self.suffixes) and name.endswith(self.suffixes))


class HostCheckMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        allowed: AllowedHosts,
        exempt: frozenset[str],
        metrics: ServiceMetrics,
    ) -> None:
        self.app = app
        self.allowed = allowed
        self.exempt = exempt
        self.rejected = metrics.rejected.labels("bad_host")
        names = [*sorted(allowed.names), *(f"*{suffix}" for suffix in allowed.suffixes)]
        self.listing = f"allowed: {', '.join(names)} (modelyard serve --allowed-host)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") not in self.exempt:
            host = _host_header(scope)
            if host is None or not self.allowed.allows(host):
                self.rejected.inc()
                shown = "none" if host is None else repr(host[:100])
                detail = f"Host {shown} is not served here; {self.listing}"
                await send_error(send, 400, detail)
                return
        await self.app(scope, receive, send)


def _host_header(scope: Scope) -> str | None:
    for header, value in scope.get("headers") or ():
        if header == b"host":
            return str(value.decode("latin-1"))
    return None
