"""Options read from the environment, as containers and Cloud Run configure a command.

``serve``, ``app`` and ``monitor`` take every option from a variable as well as from the command
line: click's automatic prefix names it, ``--max-batch`` of ``serve`` is ``MODELYARD_MAX_BATCH``
(:data:`SERVE_PREFIX`), ``--port`` of ``app`` is ``MODELYARD_APP_PORT`` (:data:`APP_PREFIX`), of
``monitor`` ``MODELYARD_MONITOR_PORT`` (:data:`MONITOR_PREFIX`). Each command has its own prefix
so that a shell that exports ``MODELYARD_PORT`` for a server does not move the UI started beside
it. The listening port also falls back to ``$PORT``, which Cloud Run sets: ``--port`` beats the
command's variable, which beats ``PORT``, which beats the default (:func:`port_variables`). A few
options keep the variables they had before (``MODELYARD_API_KEY_FILE``, ``FORWARDED_ALLOW_IPS``,
``MODELYARD_BUNDLE_KEY_FILE``, ``MODELYARD_UI_API_KEY``); ``--help`` shows each option's.

A value from the environment that does not convert is one line naming the variable
(:class:`EnvironmentCommand`), not click's usage box about an option nobody typed.
"""

import os
import re
from typing import Any

import typer
from typer.core import TyperCommand

SERVE_PREFIX = "MODELYARD"
APP_PREFIX = "MODELYARD_APP"
MONITOR_PREFIX = "MODELYARD_MONITOR"
#: The port Cloud Run (and Heroku-style platforms) tell a container to listen on.
PLATFORM_PORT = "PORT"
#: What Kubernetes puts in ``NAME_PORT`` for a Service called ``name`` in the same namespace.
_SERVICE_LINK = re.compile(r"^(tcp|udp|sctp)://")


def port_variables(prefix: str) -> list[str]:
    """The variables a command's ``--port`` reads, the first set one winning."""
    return [f"{prefix}_PORT", PLATFORM_PORT]


# The context and parameter are click's as typer has them (typer 0.29 carries its own copy of
# click, older ones use click itself): typed Any, read through attributes both have.


def option_variables(ctx: Any, param: Any) -> list[str]:
    """The variables ``param`` reads, in click's order: its own, else the automatic name."""
    own = param.envvar
    if own:
        return [own] if isinstance(own, str) else list(own)
    automatic = getattr(param, "allow_from_autoenv", False) and param.name
    if automatic and ctx.auto_envvar_prefix is not None:
        return [f"{ctx.auto_envvar_prefix}_{param.name.upper()}"]
    return []


def source_variable(ctx: Any, param: Any) -> str | None:
    """The variable that gave ``param`` its value, None if it did not come from one."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    if getattr(source, "name", None) != "ENVIRONMENT":
        return None
    return next((name for name in option_variables(ctx, param) if os.environ.get(name)), None)


def environment_error(variable: str, option: str, message: str) -> str:
    """One line: the variable, its value, the option it feeds and what is wrong."""
    value = os.environ.get(variable, "")
    shown = value if len(value) <= 60 else f"{value[:57]}..."
    line = f"${variable}={shown!r} (for {option}): {message}"
    if _SERVICE_LINK.match(value) and variable.endswith("_PORT"):
        service = variable.removesuffix("_PORT").lower().replace("_", "-")
        line += (
            f" (Kubernetes sets this for a Service named {service!r}: set {variable} in the "
            "pod spec, or enableServiceLinks: false)"
        )
    return line


class EnvironmentCommand(TyperCommand):
    """A command whose options may come from the environment: a value that does not convert is
    reported as the variable's error, on one line, exit 2 (as ``user_errors`` reports others)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as error:
            param = error.param
            variable = None if param is None else source_variable(ctx, param)
            if param is None or variable is None:
                raise
            option = (getattr(param, "opts", None) or [param.name])[0]
            typer.echo(f"error: {environment_error(variable, option, error.message)}", err=True)
            raise typer.Exit(2) from None


def from_environment(prefix: str) -> dict[str, Any]:
    """``@app.command(**from_environment(prefix))``: the command class and its variables' prefix."""
    return {"cls": EnvironmentCommand, "context_settings": {"auto_envvar_prefix": prefix}}
