"""The serve image, built and run for real: buildah (no Docker engine) builds
docker/serve.Dockerfile with a small real bundle baked in, and the image's own entrypoint serves it
on 127.0.0.1.

Checked as an orchestrator would see it: /ready, a /predict answer equal to the same bundle's
outside the container, the HEALTHCHECK command, the non-root user, and a SIGTERM that drains and
stops the server in time. The serve-registry image (the same Dockerfile with the ``registry``
extra, nothing baked in) pulls the bundle at start from a real MLflow server on 127.0.0.1, by
``MODELYARD_BUNDLE=models:/NAME@ALIAS``. The base image and cached layers are reused between runs
(a first run on a machine builds them: about a minute more per image).
"""

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from bundle_factory import make_nilm_bundle
from modelyard.core.bundle import Bundle
from modelyard.registry.store import ModelRegistry
from modelyard.serving.server_process import HOST, free_port, wait_until_healthy

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[1]
TAG = "test"
CONTAINER_PREFIX = "modelyard-test-"
DRAIN_S = 1.0
SERIES = [250.0 + 10 * (i % 7) for i in range(40)]
#: What a process in the image must run as (docker/serve.Dockerfile's USER).
IMAGE_UID = 10001
#: The registered model the serve-registry image pulls.
REGISTERED = "meter"


def build_driver() -> ModuleType:
    """docker/build_images.py, the script `make images` runs (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("build_images", REPO / "docker/build_images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def buildah(driver: ModuleType, *args: str) -> str:
    return subprocess.run(
        [*driver.BUILDAH, *args], check=True, capture_output=True, text=True
    ).stdout


def remove_leftover_containers(driver: ModuleType) -> None:
    """Working containers an interrupted run of this test left behind."""
    listing = buildah(driver, "containers", "--format", "{{.ContainerID}} {{.ContainerName}}")
    for line in listing.splitlines():
        container_id, _, name = line.partition(" ")
        if name.startswith(CONTAINER_PREFIX):
            buildah(driver, "rm", container_id)


@dataclass(frozen=True)
class ServeImage:
    driver: ModuleType
    reference: str
    config: dict[str, Any]  # the image's Docker config: Entrypoint, User, Healthcheck, Env
    bundle: Bundle


@pytest.fixture(scope="module")
def driver() -> ModuleType:
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} missing: `make containers` installs them "
            "(as root: apt-get install buildah podman debootstrap)"
        )
    driver = build_driver()
    remove_leftover_containers(driver)
    return driver


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_nilm_bundle(tmp_path_factory.mktemp("image") / "bundle")


def built_image(driver: ModuleType, name: str, bundle: Bundle, bake: bool) -> ServeImage:
    """``IMAGES[name]`` built as `make images` builds it, with ``bundle`` baked in or not."""
    image = driver.IMAGES[name]
    baked = bundle.path if bake else None
    reference = driver.build(image, TAG, driver.base_image(), baked, "cpu")
    inspected = json.loads(buildah(driver, "inspect", "--type", "image", reference))
    return ServeImage(driver, reference, inspected["Docker"]["config"], bundle)


@pytest.fixture(scope="module")
def serve_image(driver: ModuleType, bundle: Bundle) -> ServeImage:
    return built_image(driver, "serve", bundle, bake=True)


@dataclass
class Running:
    container: str
    process: subprocess.Popen[bytes]
    url: str
    ready_s: float


@contextlib.contextmanager
def working_container(image: ServeImage) -> Iterator[str]:
    """A fresh working container of the image, removed on exit whatever happened."""
    name = f"{CONTAINER_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    buildah(image.driver, "from", "--name", name, image.reference)
    try:
        yield name
    finally:
        buildah(image.driver, "rm", name)


def run_in(image: ServeImage, container: str, env: dict[str, str], *command: str) -> list[str]:
    """The command line running ``command`` in ``container`` (host network: 127.0.0.1)."""
    flags = [f"--env={k}={v}" for k, v in env.items()]
    return [
        *image.driver.BUILDAH,
        "run",
        "--isolation",
        "chroot",
        *flags,
        container,
        "--",
        *command,
    ]


@contextlib.contextmanager
def running_image(image: ServeImage, env: dict[str, str]) -> Iterator[Running]:
    """The image's ENTRYPOINT in a fresh working container, serving on 127.0.0.1."""
    with working_container(image) as name:
        port = free_port()
        command = run_in(
            image, name, {"MODELYARD_PORT": str(port), **env}, *image.config["Entrypoint"]
        )
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            url = f"http://{HOST}:{port}"
            wait_until_healthy(url, process, 60, "/ready")
            yield Running(name, process, url, time.perf_counter() - started)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


def server_pid(running: Running) -> int:
    """The server process itself, the image's Python (under buildah run and its chroot helper):
    what a container runtime signals as PID 1."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, found = [running.process.pid], []
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[0].startswith(b"/opt/modelyard/bin/python") and b"serve" in argv:
                found.append(pid)
        todo.extend(children.get(pid, []))
    assert len(found) == 1, f"expected one server process under buildah run, found {found}"
    return found[0]


def ids_of(pid: int) -> set[int]:
    """Real, effective, saved and filesystem uids of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(value) for value in line.split()[1:]}
    raise AssertionError(f"no Uid line for {pid}")


def predict(url: str) -> Any:
    answer = httpx.post(f"{url}/predict", json={"aggregate_w": SERIES}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def ready_and_answer_outside(bundle: Bundle) -> tuple[float, Any]:
    """The same bundle served on this machine as usual: seconds from start to /ready, and its
    answer to the request the container gets."""
    port = free_port()
    command = [sys.executable, "-m", "modelyard", "serve", str(bundle.path), "--port", str(port)]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--drain-seconds", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://{HOST}:{port}"
        wait_until_healthy(url, process, 60, "/ready")
        return time.perf_counter() - started, predict(url)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def outside(bundle: Bundle) -> tuple[float, Any]:
    """:func:`ready_and_answer_outside` for the module's bundle, which every image here serves:
    one server on this machine for the module, not one per test."""
    return ready_and_answer_outside(bundle)


def test_the_serve_image_answers_like_the_bundle_outside_and_drains_on_sigterm(
    serve_image: ServeImage, outside: tuple[float, Any], record_property: Any
) -> None:
    config = serve_image.config
    assert config["Entrypoint"] == ["modelyard", "serve"]  # exec form: no shell in between
    assert config["User"].split(":")[0] == str(IMAGE_UID)
    assert "MODELYARD_HOST=0.0.0.0" in config["Env"]
    outside_ready_s, expected = outside

    env = {"MODELYARD_DRAIN_SECONDS": str(DRAIN_S)}
    with running_image(serve_image, env) as running:
        ready = httpx.get(f"{running.url}/ready", timeout=10).json()
        assert ready["model"] == serve_image.bundle.manifest.name
        assert ready["prediction_log"] is True  # the default SQLite log: a writable home
        assert predict(running.url) == expected
        healthcheck = config["Healthcheck"]["Test"]
        assert healthcheck[0] == "CMD"
        port = running.url.rsplit(":", 1)[1]
        probe = subprocess.run(
            run_in(serve_image, running.container, {"MODELYARD_PORT": port}, *healthcheck[1:]),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0, probe.stdout + probe.stderr

        pid = server_pid(running)
        assert ids_of(pid) == {IMAGE_UID}
        os.kill(pid, signal.SIGTERM)
        stopped_at = time.perf_counter()
        draining = httpx.get(f"{running.url}/ready", timeout=10)
        try:
            output, _ = running.process.communicate(timeout=DRAIN_S + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not stop within {DRAIN_S + 10:.0f} s of SIGTERM")
        stop_s = time.perf_counter() - stopped_at

    log = output.decode(errors="replace")
    assert draining.status_code == 503, log  # readiness off while draining
    assert DRAIN_S <= stop_s <= DRAIN_S + 5, log
    assert "Application shutdown complete" in log
    record_property("ready_s_inside", round(running.ready_s, 2))
    record_property("ready_s_outside", round(outside_ready_s, 2))
    print(
        f"start to /ready: {running.ready_s:.2f} s in the container, "
        f"{outside_ready_s:.2f} s outside"
    )
    # As fast as outside a container (the image has its bytecode compiled at build time).
    assert running.ready_s <= 2 * outside_ready_s + 3, (running.ready_s, outside_ready_s)


def start_error(image: ServeImage, env: dict[str, str]) -> str:
    """The one ``error:`` line the image's ENTRYPOINT stops with under ``env``, no traceback."""
    with working_container(image) as name:
        done = subprocess.run(
            run_in(image, name, {"MODELYARD_PORT": "1", **env}, *image.config["Entrypoint"]),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = done.stdout + done.stderr  # buildah adds its own lines about the exit status
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and "Traceback" not in output, output
    assert len(errors) == 1, output
    return errors[0]


def test_the_plain_serve_image_refuses_a_registry_reference_in_one_line(
    serve_image: ServeImage,
) -> None:
    """No MLflow in it: ``models:/`` stops the start with the one line that names the fix."""
    error = start_error(serve_image, {"MODELYARD_BUNDLE": f"models:/{REGISTERED}@production"})
    assert error.startswith("error: the model registry at")
    assert "pip install 'modelyard[registry]'" in error and "modelyard-serve-registry" in error


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 (SQLite store, artifacts proxied by the server:
    what a container reads with nothing but the URL); stopped with its workers on exit. Its
    output goes to ROOT/server.log."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port)]
    store = [f"--backend-store-uri=sqlite:///{root / 'mlflow.db'}", "--workers=1"]
    artifacts = [f"--artifacts-destination={root / 'artifacts'}", "--serve-artifacts"]
    root.mkdir(parents=True, exist_ok=True)
    with (root / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [*command, *store, *artifacts],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: server and workers stop together
        )
    try:
        url = f"http://{HOST}:{port}"
        wait_until_healthy(url, process, 120, "/health")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_the_serve_registry_image_pulls_an_alias_from_an_mlflow_server_at_start(
    driver: ModuleType,
    bundle: Bundle,
    outside: tuple[float, Any],
    tmp_path: Path,
    record_property: Any,
) -> None:
    started = time.perf_counter()
    image = built_image(driver, "serve-registry", bundle, bake=False)
    build_s = time.perf_counter() - started
    _, expected = outside
    with mlflow_server(tmp_path / "mlflow") as registry_url:
        registry = ModelRegistry(registry_url, tmp_path / "host-cache")
        version = registry.register(bundle.path, name=REGISTERED).version
        registry.set_alias(REGISTERED, "production", version)
        env = {
            "MODELYARD_BUNDLE": f"models:/{REGISTERED}@production",
            "MODELYARD_REGISTRY_URI": registry_url,
        }
        with running_image(image, env) as running:
            info = httpx.get(f"{running.url}/info", timeout=10).json()
            answer = predict(running.url)
    assert info["registry"]["name"] == REGISTERED
    assert (info["registry"]["version"], info["registry"]["alias"]) == (version, "production")
    assert info["registry"]["bundle_version"] == bundle.manifest.version
    assert answer == expected
    # No registry URI: the default embedded store, which MLflow's client alone cannot open.
    no_uri = start_error(image, {"MODELYARD_BUNDLE": env["MODELYARD_BUNDLE"]})
    assert "is an embedded MLflow store, which needs all of MLflow" in no_uri
    record_property("build_s", round(build_s, 1))
    record_property("ready_s_inside", round(running.ready_s, 2))
    print(f"serve-registry image built in {build_s:.0f} s; /ready after {running.ready_s:.2f} s")
