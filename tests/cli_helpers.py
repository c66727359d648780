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


def modelyard_in_process(
    *args: str, workdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The same command line (``modelyard.cli.app``, its parsing, exit codes and output) run in
    this process by Typer's runner; with ``workdir``, ``MODELYARD_HOME`` set to it and no MLflow
    variables (without, the environment and working directory as the test set them).

    For tests that run a command several times: no interpreter start-up and no imports (torch,
    Evidently, ...) per call. :func:`modelyard` covers the real entry point itself. An exception
    escaping the command fails the test with its traceback.
    """
    from modelyard.cli import app

    env: dict[str, str | None] = {"COLUMNS": "80"}
    if workdir is not None:
        unset = {"MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None}
        env |= {"MODELYARD_HOME": str(workdir), **unset}
    outcome = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
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


def modelyard_ok(*args: str) -> subprocess.CompletedProcess[str]:
    """:func:`modelyard_in_process`, which must succeed."""
    result = modelyard_in_process(*args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result
