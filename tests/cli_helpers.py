"""Run the real ``modelyard`` command line in a subprocess, and check its user errors."""

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

TIMEOUT_S = 300


def modelyard(
    *args: str, workdir: Path, timeout_s: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``python -m modelyard ARGS`` with only ``MODELYARD_HOME`` set (no MLflow variables).

    ``PYTHONPATH`` passes through, so a checkout that puts its own ``src`` first (a git worktree
    beside the installed one) runs its own code.
    """
    env = {"MODELYARD_HOME": str(workdir), "PATH": "/usr/bin:/bin", "COLUMNS": "80"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env=env,
    )


def modelyard_in_process(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """The same command line (``modelyard.cli.app``, its parsing, exit codes and output) run in
    this process by Typer's runner, with ``MODELYARD_HOME`` set and no MLflow variables.

    For tests that run a command several times: no interpreter start-up and no imports (torch,
    Evidently, ...) per call. :func:`modelyard` covers the real entry point itself. An exception
    escaping the command fails the test with its traceback.
    """
    from modelyard.cli import app

    env = {"MODELYARD_HOME": str(workdir), "COLUMNS": "80"}
    unset: dict[str, str | None] = {"MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None}
    outcome = CliRunner().invoke(app, list(args), env={**unset, **env}, catch_exceptions=False)
    return subprocess.CompletedProcess(
        ["modelyard", *args], outcome.exit_code, outcome.stdout, outcome.stderr
    )


def assert_user_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit code 2 and one ``error:`` line containing ``fragment``; never a traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert fragment in lines[0], lines[0]


def modelyard_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line run in this process (Typer's runner: torch is imported once for a
    whole test), its outcome shaped as :func:`modelyard`'s."""
    from typer.testing import CliRunner

    from modelyard.cli import app

    outcome = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(args, outcome.exit_code, outcome.stdout, outcome.stderr)


def modelyard_ok(*args: str) -> subprocess.CompletedProcess[str]:
    """:func:`modelyard_in_process`, which must succeed."""
    result = modelyard_in_process(*args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result
