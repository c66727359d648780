"""The command line: bad input gets one clear line and exit code 2, never a traceback."""

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli_helpers import assert_user_error, modelyard
from modelyard.cli import app


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "no_such_key=1"], "no_such_key"),
        (["train", "experiment=nope"], "experiment"),
        (["train", "project=nope"], "project"),
        (["train", "trainer.max_epochs"], "trainer.max_epochs"),
        (["train", "project.data.window=100"], "odd"),
        (["train", "project.data.test_houses=[refit_house2]"], "both training and test"),
        (["train"], "not prepared"),
        (["data", "fetch", "--source", "/no/such/dir"], "/no/such/dir"),
        (["data", "prepare", "--source", "/no/such/dir"], "data source not found"),
        (["evaluate"], "no training run found"),
        (["export"], "no training run found"),
        (["export", "--run", "/no/such/run"], "/no/such/run"),
        (["evaluate", "--model", "/no/such/model"], "model not found"),
    ],
)
def test_bad_input_is_one_clear_line(
    args: list[str], fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process (Typer's runner) to import torch once; the subprocess tests below cover the
    # real entry point.
    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path))
    outcome = CliRunner().invoke(app, args)
    result = subprocess.CompletedProcess(args, outcome.exit_code, outcome.stdout, outcome.stderr)
    assert_user_error(result, fragment)


def test_real_entry_point_reports_a_bad_override(tmp_path: Path) -> None:
    assert_user_error(modelyard("train", "no_such_key=1", workdir=tmp_path), "no_such_key")


def test_help_lists_every_stage(tmp_path: Path) -> None:
    result = modelyard("--help", workdir=tmp_path)
    assert result.returncode == 0
    for command in ("data", "train", "evaluate", "export", "serve", "predict", "demo"):
        assert command in result.stdout
