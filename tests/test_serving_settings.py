"""Serving settings have one set of defaults (``ServerSettings``), and ``predict`` builds its
task adapter exactly as a server worker does."""

import csv
import inspect
from pathlib import Path

import httpx
import numpy as np
import typer.main
from PIL import Image

from cli_helpers import modelyard
from modelyard.cli import app
from modelyard.serving.batching import BatchingModel
from modelyard.serving.runtime import OnnxModel
from modelyard.serving.server_process import running_server
from modelyard.serving.settings import ServerSettings
from vision_fixtures import make_vision_bundle

#: ``serve`` options whose setting has another name
RENAMED = {
    "request_timeout": "request_timeout_s",
    "log_flush_interval": "log_flush_interval_s",
    "drain_seconds": "drain_s",
}


def test_serve_options_default_to_the_server_settings_defaults() -> None:
    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    defaults = ServerSettings()
    compared = set()
    for option in serve.params:
        name = RENAMED.get(option.name, option.name)
        if name in ServerSettings.model_fields and option.default is not None:
            assert option.default == getattr(defaults, name), name
            compared.add(name)
    assert {"host", "port", "max_batch", "max_wait_ms", "request_timeout_s", "drain_s"} <= compared


def test_the_micro_batcher_defaults_to_the_server_settings(tmp_path: Path) -> None:
    bundle = make_vision_bundle(tmp_path / "bundle")
    batcher = BatchingModel(OnnxModel(bundle.model_path))
    try:
        assert batcher.max_batch == ServerSettings().max_batch
        assert batcher.max_wait_s == ServerSettings().max_wait_ms / 1000
    finally:
        batcher.close()
    for name in ("max_batch", "max_wait_ms"):
        default = inspect.signature(BatchingModel).parameters[name].default
        assert default == ServerSettings.model_fields[name].default


def test_no_hydra_config_holds_serving_defaults() -> None:
    import yaml

    from modelyard.conf import __file__ as conf_init

    config = yaml.safe_load((Path(conf_init).parent / "config.yaml").read_text())
    assert "serving" not in config


def test_predict_uses_the_bundles_serving_settings_as_the_server_does(tmp_path: Path) -> None:
    """The bundle's ``serving.top_k: 1`` reaches offline prediction as it reaches the server."""
    bundle = make_vision_bundle(tmp_path / "bundle", serving={"top_k": 1})
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "field.png")

    result = modelyard(
        "predict", str(bundle.path), str(images), str(tmp_path / "out.csv"), workdir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    with (tmp_path / "out.csv").open(newline="") as handle:
        header, row = list(csv.reader(handle))
    assert header == ["file", "label_1", "probability_1", "error"]

    with running_server(bundle.path, env={"MODELYARD_HOME": str(tmp_path)}) as url:
        assert httpx.get(f"{url}/info").json()["details"]["top_k"] == 1
        upload = {"file": ("field.png", (images / "field.png").read_bytes(), "image/png")}
        (top,) = httpx.post(f"{url}/predict", files=upload).json()["top"]
    assert [row[1], float(row[2])] == [top["label"], top["probability"]]
