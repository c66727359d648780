"""Image uploads against a real ``modelyard serve`` (127.0.0.1): what bad images cost the server.

Peak memory is the server process's VmHWM from /proc, reset (``clear_refs``) before each case
and compared with the resident memory of the idle, warmed-up server at that moment.
"""

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from modelyard.serving.server_process import free_port, running_server
from resource_probe import HealthSampler, memory, reset_peak, server_pid
from vision_fixtures import bilevel_png, encode, flat_png, make_vision_bundle, photo

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads the server's memory from Linux /proc"
)

PROJECT_CONFIG = Path(__file__).parents[1] / "src/modelyard/conf/project/eurosat.yaml"
PEAK_ALLOWANCE = 200 * 1024 * 1024  # bytes a worker may grow over idle while images arrive
PARALLEL = 4


class Server:
    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid

    def memory(self, field: str = "VmHWM") -> int:
        """Bytes of the server process's ``VmHWM`` (peak resident) or ``VmRSS`` (now)."""
        now = memory(self.pid)
        return int((now.peak_mib if field == "VmHWM" else now.rss_mib) * 2**20)

    def reset_peak(self) -> int:
        """Make the peak (VmHWM) start again from the resident memory of now, and return that."""
        assert reset_peak(self.pid), "the kernel refused to reset the peak (clear_refs)"
        return self.memory("VmRSS")

    def wait_for_growth(self, idle: int, timeout_s: float = 10.0) -> None:
        deadline = time.perf_counter() + timeout_s
        while self.memory("VmRSS") < idle + 50 * 1024 * 1024:
            assert time.perf_counter() < deadline, "no decode started"
            time.sleep(0.01)

    def settle(self, idle: int, timeout_s: float = 10.0) -> None:
        """Wait until resident memory is back near ``idle``: abandoned decodes have ended."""
        deadline = time.perf_counter() + timeout_s
        while self.memory("VmRSS") > idle + 20 * 1024 * 1024:
            assert time.perf_counter() < deadline, "memory did not return to idle"
            time.sleep(0.05)

    def upload(self, data: bytes, name: str = "image") -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = httpx.post(
            f"{self.url}/predict", files={"file": (name, data, "image/png")}, timeout=60
        )
        return response, time.perf_counter() - started


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A tiny vision bundle with the eurosat project's shipped serving settings, warmed up."""
    serving = yaml.safe_load(PROJECT_CONFIG.read_text())["serving"]
    home = tmp_path_factory.mktemp("home")
    bundle = make_vision_bundle(tmp_path_factory.mktemp("vision") / "bundle", serving=serving)
    port = free_port()
    arguments = ["--prediction-log", "none"]
    with running_server(bundle.path, port, arguments, env={"MODELYARD_HOME": str(home)}) as url:
        running = Server(url, server_pid(port))
        small = encode(Image.new("RGB", (64, 64), (30, 120, 30)), "PNG")
        for _ in range(5):
            assert running.upload(small)[0].status_code == 200
        yield running


def in_parallel(
    server: Server, images: list[bytes]
) -> tuple[list[tuple[httpx.Response, float]], list[float]]:
    """Upload ``images`` at once while polling /health; the answers and /health's latencies."""
    with (
        HealthSampler(server.url, interval_s=0.01) as health,
        ThreadPoolExecutor(len(images)) as pool,
    ):
        answers = list(pool.map(server.upload, images))
    assert not health.failures, health.failures
    return answers, health.latencies_s


DEEP_PNG = "6300 x 6300 16-bit RGBA PNG"
BOMB = "20000 x 20000 1-bit PNG"
IMAGES: dict[str, tuple[Callable[[], bytes], str]] = {
    # under max_pixels (39.7 of 40 Mpx) and 300 KB: once 900 MB a request, never given back
    DEEP_PNG: (
        lambda: flat_png(6300, 6300, 16, 6),
        "too large to decode: 6300x6300 pixels x 8 bytes (4 channels of 2 bytes) = "
        "317,520,000 bytes decoded + 317,520,000 to convert to RGB = 635,040,000 bytes, "
        "over the limit of 67,108,864 bytes (max_decoded_bytes of project eurosat)",
    ),
    # the classic bomb, beyond Pillow's own limit: the project's max_pixels is what is reported
    BOMB: (
        lambda: bilevel_png(20_000, 20_000),
        "decompression bomb: 20000x20000 = 400,000,000 pixels exceeds the limit of "
        "40,000,000 (max_pixels of project eurosat)",
    ),
}


@pytest.mark.parametrize("kind", IMAGES)
def test_memory_hungry_images_are_refused_at_once_without_growing_the_server(
    server: Server, kind: str
) -> None:
    build, reason = IMAGES[kind]
    data = build()
    assert len(data) < 400_000  # far under max_upload_bytes: only the header gives it away
    idle = server.reset_peak()
    answers, health = in_parallel(server, [data] * PARALLEL)
    for response, seconds in answers:
        assert response.status_code == 422, response.text[:300]
        assert response.json()["detail"] == f"invalid image: {reason}"
        assert seconds < 1.0
    assert health and max(health) < 0.1, health
    growth = server.memory() - idle
    assert growth <= PEAK_ALLOWANCE, f"peak RSS grew by {growth / 2**20:.0f} MB"


def test_a_12_megapixel_photo_is_classified_with_bounded_memory(server: Server) -> None:
    data = photo(4000, 3000)
    idle = server.reset_peak()
    answers, _ = in_parallel(server, [data] * PARALLEL)
    for response, seconds in answers:
        assert response.status_code == 200, response.text[:300]
        assert response.json()["top"][0]["label"] in ("Forest", "River", "Sea")
        assert seconds < 5.0
    growth = server.memory() - idle
    assert growth <= PEAK_ALLOWANCE / 4, f"peak RSS grew by {growth / 2**20:.0f} MB"


def test_memory_of_accepted_large_decodes_is_given_back(tmp_path: Path) -> None:
    """With a budget that lets a 2000 x 2000 16-bit RGBA PNG through (64 MB at its peak), four
    in parallel decode two at a time, and resident memory returns to about idle afterwards."""
    serving: dict[str, Any] = {"max_decoded_bytes": 80_000_000, "max_concurrent_decodes": 2}
    bundle = make_vision_bundle(tmp_path / "bundle", serving=serving)
    port = free_port()
    arguments = ["--prediction-log", "none"]
    with running_server(bundle.path, port, arguments, env={"MODELYARD_HOME": str(tmp_path)}) as url:
        server = Server(url, server_pid(port))
        data = flat_png(2000, 2000, 16, 6)
        assert server.upload(data)[0].status_code == 200
        idle = server.memory("VmRSS")
        answers, _ = in_parallel(server, [data] * PARALLEL)
        assert [response.status_code for response, _ in answers] == [200] * PARALLEL
        server.settle(idle, timeout_s=2.0)  # within 20 MB of idle


def test_info_shows_the_projects_image_limits(server: Server) -> None:
    task = httpx.get(f"{server.url}/info").json()["details"]
    assert task["max_pixels"] == 40_000_000
    assert task["max_decoded_bytes"] == 64 * 1024 * 1024
    assert (task["max_concurrent_decodes"], task["max_decode_wait_s"]) == (2, 10.0)


def test_decodes_beyond_the_concurrency_wait_then_get_503(tmp_path: Path) -> None:
    """One decode at a time and 50 ms of patience: of four 16-bit PNGs sent at once, the first is
    decoded and those that wait longer are told to retry."""
    serving: dict[str, Any] = {
        "max_decoded_bytes": 80_000_000,
        "max_concurrent_decodes": 1,
        "max_decode_wait_s": 0.05,
    }
    bundle = make_vision_bundle(tmp_path / "bundle", serving=serving)
    with running_server(bundle.path, env={"MODELYARD_HOME": str(tmp_path)}) as url:
        server = Server(url, 0)
        answers, _ = in_parallel(server, [flat_png(2000, 2000, 16, 6)] * PARALLEL)
    statuses = sorted(response.status_code for response, _ in answers)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    busy = next(response for response, _ in answers if response.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    assert "at most 1 at once" in busy.json()["detail"]


def test_a_screenshot_sized_png_is_accepted(server: Server) -> None:
    """A noisy 2-Mpx RGB PNG (what a phone screenshot is): 8 MB at its peak, well within."""
    pixels = np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    response, _ = server.upload(encode(Image.fromarray(pixels), "PNG", compress_level=1))
    assert response.status_code == 200, response.text[:300]


def test_a_request_that_times_out_keeps_its_decode_slot_until_the_decode_ends(
    tmp_path: Path,
) -> None:
    """One decode at a time, 0.1 s request timeout, 4000 x 4000 16-bit RGBA PNGs (about 1 s and
    190 MB to decode) sent 0.25 s apart: each request gets 504, but its thread decodes on, so
    the next may not start another decode beside it; the peak stays that of one decode."""
    serving: dict[str, Any] = {"max_decoded_bytes": 300_000_000, "max_concurrent_decodes": 1}
    bundle = make_vision_bundle(tmp_path / "bundle", serving=serving)
    port = free_port()
    arguments = ["--prediction-log", "none", "--request-timeout", "0.1"]
    with running_server(bundle.path, port, arguments, env={"MODELYARD_HOME": str(tmp_path)}):
        server = Server(f"http://127.0.0.1:{port}", server_pid(port))
        data = flat_png(4000, 4000, 16, 6)
        idle = server.reset_peak()
        assert server.upload(data)[0].status_code == 504
        server.wait_for_growth(idle)  # the abandoned decode is under way
        server.settle(idle)  # and has finished
        one_decode = server.memory() - idle
        assert one_decode > 100 * 1024 * 1024
        idle = server.reset_peak()

        def late_upload(delay: float) -> int:
            time.sleep(delay)
            return server.upload(data)[0].status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(late_upload, [0.0, 0.25, 0.5, 0.75]))
        server.settle(idle)
        growth = server.memory() - idle
    assert statuses == [504] * 4
    megabytes = f"{growth / 2**20:.0f} MB; one decode: {one_decode / 2**20:.0f} MB"
    assert growth < 1.5 * one_decode, megabytes
