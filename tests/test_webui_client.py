"""The UI's HTTP client against a real prediction server: what is served, a prediction, and
every refusal as one sentence (never a traceback), plus `modelyard app`'s one-line errors,
including an install without the ``ui`` extra."""

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import TIMEOUT_S, assert_user_error, modelyard
from modelyard.serving.server_process import free_port, running_server
from modelyard.webui.client import ServerAnswerError, ServerClient
from vision_fixtures import make_vision_bundle


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bundle = make_vision_bundle(tmp_path_factory.mktemp("vision") / "bundle")
    with running_server(bundle.path, extra_args=["--prediction-log", "none"]) as url:
        yield url


def test_info_and_a_prediction(server: str) -> None:
    client = ServerClient(server)
    info = client.info()
    assert info["task"] == "vision"
    assert "paths" in client.openapi()
    from vision_fixtures import photo

    answer = client.predict_file("leaf.jpg", photo(64, 64), "image/jpeg")
    assert answer.prediction_id
    assert answer.body["version"] == info["version"]


def test_a_refusal_is_the_servers_sentence(server: str) -> None:
    client = ServerClient(server)
    with pytest.raises(ServerAnswerError) as refused:
        client.predict_file("notes.txt", b"not an image at all", "text/plain")
    assert refused.value.status is not None
    assert 400 <= refused.value.status < 500
    sentence = str(refused.value)
    assert sentence[0].isupper()
    assert sentence.endswith(".")
    assert "Traceback" not in sentence


def test_no_server_is_a_sentence() -> None:
    client = ServerClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(ServerAnswerError, match="Cannot reach the server"):
        client.info()


def test_app_without_a_server_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = modelyard("app", url, "--port", str(free_port()), workdir=tmp_path)
    assert_user_error(result, "Cannot reach the server")


def test_app_for_a_missing_bundle_is_one_line(tmp_path: Path) -> None:
    result = modelyard(
        "app", str(tmp_path / "nowhere"), "--port", str(free_port()), workdir=tmp_path
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr


#: ``python -m modelyard ARGS`` in an interpreter where ``import gradio`` fails, as it does in a
#: ``pip install modelyard`` without the ``ui`` extra.
WITHOUT_GRADIO = (
    "import sys; sys.modules['gradio'] = None; sys.argv[0] = 'modelyard'; "
    "from modelyard.cli import main; main()"
)


def test_app_without_the_ui_extra_is_one_line_with_the_pip_command(tmp_path: Path) -> None:
    bundle = make_vision_bundle(tmp_path / "bundle")
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_GRADIO, "app", str(bundle.path), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env={**os.environ, "MODELYARD_HOME": str(tmp_path), "COLUMNS": "200"},
    )
    assert_user_error(result, "pip install 'modelyard[ui]'")
    assert "gradio" in result.stderr


def test_the_serve_only_install_does_not_need_gradio() -> None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("gradio")]
    assert any(d.startswith("gradio") for d in project["optional-dependencies"]["ui"])


def test_the_help_of_app_shows_the_pip_command_whole(tmp_path: Path) -> None:
    """Rich markup would eat ``[ui]`` from an unescaped help text."""
    result = modelyard("app", "--help", workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pip install 'modelyard[ui]'" in " ".join(result.stdout.split()), result.stdout
