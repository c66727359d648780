"""Serving benchmark: the usual course-project API vs ``modelyard serve`` vs the hardware's limit.

Contenders, on the same NILM model (the full seq2point, 99-reading windows):

* (a) ``baseline_api.py``: FastAPI + PyTorch eager, one forward pass per request;
* (b) ``modelyard serve`` with its defaults (micro-batching, metrics, access log and the SQLite
  prediction log all on), with one worker and with one worker per core;
* (c) ONNX Runtime called in-process on large batches: no HTTP, no JSON, the limit of the machine.

Workloads: **small** (one model window per request: 99 readings, ``edges=valid``) and **bulk**
(a day of 1-minute readings per request: 1,440 windows), each at 1, 8 and 64 concurrent clients
of ``loadgen.py`` (a lean keep-alive HTTP client in its own process, whose CPU use is reported).
Reported: requests/s, windows/s, p50/p99 latency, time from process start to ready, resident
memory after the load.

The model is trained for a few batches first (speed does not depend on the weights), unless
``--run`` and ``--bundle`` name an existing training run and its bundle.

    .venv/bin/python benchmarks/serving.py --source ../shared/datasets/nilm

``--auth-compare --bundle BUNDLE`` measures only the cost of API keys: small requests to two
servers of the bundle, keys off and on, in alternating rounds (results ``serving_auth.json``
with ``--name serving_auth``).
"""

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench_common import eurosat_run_and_bundle, nilm_run_and_bundle, write_results
from modelyard.core.errors import ModelyardError
from modelyard.serving.api_keys import KeyRing
from modelyard.serving.auth import presented_token
from modelyard.serving.runtime import OnnxModel, available_cores
from modelyard.serving.server_process import HOST, free_port, wait_until_healthy

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
CLIENTS = (1, 8, 64)
DAY = 1440


Body = tuple[Path, int, str]  # request body file, model rows it asks for, content type


def request_bodies(workdir: Path, window: int) -> dict[str, Body]:
    """NILM request body files and the windows each request asks for."""
    rng = np.random.default_rng(0)
    base = rng.uniform(150.0, 450.0, DAY)
    base[600:604] += 2800.0  # a kettle
    bodies = {
        "small": ({"aggregate_w": np.round(base[:window], 1).tolist(), "edges": "valid"}, 1),
        "bulk": ({"aggregate_w": np.round(base, 1).tolist()}, DAY),
    }
    files = {}
    for name, (body, windows) in bodies.items():
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(body))
        files[name] = (path, windows, "application/json")
    return files


def image_body(workdir: Path, image: Path) -> dict[str, Body]:
    """One multipart upload of ``image`` (field ``file``), as a browser would send it."""
    boundary = "modelyard-benchmark-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{image.name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    path = workdir / "image.multipart"
    path.write_bytes(head + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    return {"image": (path, 1, f"multipart/form-data; boundary={boundary}")}


def resident_mb(pid: int) -> dict[str, float]:
    """Resident memory (MB) of a server: of each worker process, and of all processes together
    (with several workers, uvicorn's supervisor holds no model: it is counted in the total only)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    workers = [int(p) for p in children.read_text().split()] if children.is_file() else []
    sizes = {member: _rss_mb(member) for member in [pid, *workers]}
    serving = workers or [pid]
    return {
        "per_worker_max": max(sizes[w] for w in serving),
        "total": round(sum(sizes.values()), 1),
        "workers": len(serving),
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@contextmanager
def server(command: Sequence[str], probe: str, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Start a server process, wait for ``probe`` to answer 200; yield its facts; SIGTERM it."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=log, stderr=log, env={**os.environ, **env}
        )
        try:
            try:
                ready = round(wait_until_healthy(url, process, 120, probe, interval_s=0.01), 2)
            except ModelyardError as exc:
                log.seek(0)
                raise RuntimeError(f"{exc}\n{log.read().decode()[-2000:]}") from exc
            yield {"port": port, "ready_s": ready, "pid": process.pid}
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def load(
    port: int,
    body: Body,
    clients: int,
    seconds: float,
    cpu: int | None,
    api_key: str | None = None,
) -> dict[str, Any]:
    command = [PYTHON, str(HERE / "loadgen.py"), "--port", str(port), "--body", str(body[0])]
    command += ["--content-type", body[2]]
    command += ["--clients", str(clients), "--seconds", str(seconds)]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    if api_key is not None:
        command += ["--api-key", api_key]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure_contender(
    name: str,
    command: Sequence[str],
    probe: str,
    env: dict[str, str],
    bodies: dict[str, Body],
    seconds: float,
    client_cpu: int | None,
) -> dict[str, Any]:
    with server(command, probe, env) as facts:
        results: dict[str, Any] = {"ready_s": facts["ready_s"], "workloads": {}}
        for workload, body in bodies.items():
            windows = body[1]
            points = []
            for clients in CLIENTS:
                point = load(facts["port"], body, clients, seconds, client_cpu)
                point["windows_per_s"] = round(point["requests_per_s"] * windows, 1)
                points.append(point)
                print(
                    f"{name:>22} {workload:>5} {clients:>3} clients: "
                    f"{point['requests_per_s']:>8.1f} req/s {point['windows_per_s']:>9.1f} rows/s "
                    f"p50 {point['p50_ms']:>7.2f} p99 {point['p99_ms']:>7.2f} ms "
                    f"errors {point['errors']} loadgen cpu {point['client_cpu_share']:.0%}",
                    flush=True,
                )
            results["workloads"][workload] = points
        results["resident_mb"] = resident_mb(facts["pid"])
    return results


def onnx_limit(bundle: Path, batch: int, seconds: float, pin: bool) -> dict[str, Any]:
    """(c): model rows/s of ONNX Runtime alone, on large batches, on the servers' cores."""
    if pin:
        os.sched_setaffinity(0, {1})
    manifest = json.loads((bundle / "manifest.json").read_text())
    shape = [batch, *(int(d) for d in manifest["inputs"][0]["shape"][1:])]
    model = OnnxModel(bundle / "model.onnx", threads=available_cores())
    rows = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(3):
        model.run(rows)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.run(rows)
        calls += 1
    elapsed = time.perf_counter() - started
    return {"batch": batch, "rows_per_s": round(calls * batch / elapsed, 1)}


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets (NILM), computed from the measurements."""
    nilm = results["nilm"]
    a = nilm["contenders"]["a_torch_eager"]["workloads"]
    c = nilm["c_onnx_in_process"]["rows_per_s"]
    out: dict[str, Any] = {}
    for name, contender in nilm["contenders"].items():
        if not name.startswith("b_"):
            continue
        small = contender["workloads"]["small"][-1]
        bulk = max(p["windows_per_s"] for p in contender["workloads"]["bulk"])
        out[name] = {
            "small_64_speedup_vs_a": round(
                small["requests_per_s"] / a["small"][-1]["requests_per_s"], 2
            ),
            "small_64_p99_over_p50": round(small["p99_ms"] / small["p50_ms"], 2),
            "bulk_share_of_c": round(bulk / c, 3),
            "ready_s": contender["ready_s"],
            "resident_mb_per_worker": contender["resident_mb"]["per_worker_max"],
        }
    return out


def contenders_for(
    run: Path, bundle: Path, scratch: Path, pin: bool
) -> dict[str, tuple[list[str], str, dict[str, str]]]:
    """(a) and (b), the latter with one worker and, unpinned, one worker per core."""
    taskset = ["taskset", "-c", "1"] if pin else []
    serve = [PYTHON, "-m", "modelyard", "serve", str(bundle)]
    log_db = f"sqlite:///{scratch}/predictions-{bundle.name}.db"
    found = {
        "a_torch_eager": (
            [*taskset, PYTHON, "-m", "uvicorn", "baseline_api:app", "--app-dir", str(HERE),
             "--log-level", "warning"],
            "/openapi.json",
            {"BASELINE_RUN_DIR": str(run)},
        ),
        "b_modelyard_1_worker": ([*taskset, *serve, "--prediction-log", log_db], "/ready", {}),
    }  # fmt: skip
    cores = available_cores()
    if not pin and cores > 1:
        found[f"b_modelyard_{cores}_workers"] = (
            [*serve, "--workers", str(cores), "--prediction-log", log_db],
            "/ready",
            {},
        )
    return found


def bench_bundle(
    run: Path, bundle: Path, bodies: dict[str, Body], batch: int, scratch: Path, args: Any
) -> dict[str, Any]:
    client_cpu = 0 if args.pin else None
    results: dict[str, Any] = {"bundle": str(bundle), "contenders": {}}
    for name, (command, probe, env) in contenders_for(run, bundle, scratch, args.pin).items():
        results["contenders"][name] = measure_contender(
            name, command, probe, env, bodies, args.seconds, client_cpu
        )
    results["c_onnx_in_process"] = onnx_limit(bundle, batch, args.seconds, args.pin)
    print(f"(c) ONNX Runtime in-process: {results['c_onnx_in_process']['rows_per_s']} rows/s")
    return results


AUTH_CLIENTS = (8, 64)


def auth_comparison(bundle: Path, body: Body, scratch: Path, args: Any) -> dict[str, Any]:
    """Small requests to two servers of the same bundle, API keys off and on, both running;
    ``--rounds`` rounds of ``--seconds`` per side and client count, the sides alternating (and
    which goes first), so that the spread between rounds shows the noise the ratio is read
    against."""
    key = "bench-" + "0123456789abcdef" * 2
    key_file = scratch / "api-keys.txt"
    key_file.write_text(f"bench:{key}\n")
    key_file.chmod(0o600)
    serve = [PYTHON, "-m", "modelyard", "serve", str(bundle), "--log-level", "warning"]
    sides = {
        "off": ([*serve, "--prediction-log", f"sqlite:///{scratch}/auth-off.db"], None),
        "on": (
            [*serve, "--prediction-log", f"sqlite:///{scratch}/auth-on.db",
             "--api-key-file", str(key_file)],
            key,
        ),
    }  # fmt: skip
    rates: dict[str, dict[int, list[float]]] = {s: {c: [] for c in AUTH_CLIENTS} for s in sides}
    cpu: dict[str, dict[int, list[float]]] = {s: {c: [] for c in AUTH_CLIENTS} for s in sides}
    with server(sides["off"][0], "/ready", {}) as off, server(sides["on"][0], "/ready", {}) as on:
        facts = {"off": off, "on": on}
        for round_ in range(args.rounds):
            order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
            for clients in AUTH_CLIENTS:
                for side in order:
                    port, pid, sent = facts[side]["port"], facts[side]["pid"], sides[side][1]
                    before = served_work(port, pid, sent)
                    point = load(port, body, clients, args.seconds, None, sent)
                    after = served_work(port, pid, sent)
                    if point["errors"]:
                        raise RuntimeError(f"auth {side}: {point['statuses']}")
                    us = (after[0] - before[0]) / max(1.0, after[1] - before[1]) * 1e6
                    rates[side][clients].append(point["requests_per_s"])
                    cpu[side][clients].append(round(us, 1))
                    print(
                        f"round {round_ + 1} auth {side:>3} {clients:>3} clients: "
                        f"{point['requests_per_s']:>8.1f} req/s p50 {point['p50_ms']:.2f} ms "
                        f"server CPU {us:.0f} us/request",
                        flush=True,
                    )
    result: dict[str, Any] = {}
    for clients in AUTH_CLIENTS:
        result[str(clients)] = {
            **{f"{side}_req_per_s": rates[side][clients] for side in sides},
            **{f"{side}_cpu_us_per_request": cpu[side][clients] for side in sides},
            "on_over_off_median_req_per_s": median_ratio(rates, clients),
            "on_over_off_median_cpu_per_request": median_ratio(cpu, clients),
        }
    return result


def median_ratio(values: dict[str, dict[int, list[float]]], clients: int) -> float:
    return round(float(np.median(values["on"][clients]) / np.median(values["off"][clients])), 3)


def served_work(port: int, pid: int, api_key: str | None) -> tuple[float, float]:
    """CPU seconds the server process has used, and the predictions it has answered 200 (its
    own counter): their ratio between two readings is CPU time per request, which contention
    from other processes changes far less than throughput."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    text = httpx.get(f"http://{HOST}:{port}/metrics", headers=headers, timeout=10).text
    answered = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelyard_http_requests_total{")
        and 'route="/predict"' in line
        and 'status="200"' in line
    )
    return cpu_s, answered


def auth_check_cost_us(keys: int, calls: int = 100_000) -> float:
    """Microseconds of the API-key check per request (header scan, sha256, a comparison with
    each of ``keys`` keys), in-process: a number the machine's noise cannot hide."""
    ring = KeyRing(
        tuple(f"k{i}" for i in range(keys)),
        tuple(hashlib.sha256(f"key-{i:016d}".encode()).digest() for i in range(keys)),
    )
    token = f"key-{keys - 1:016d}"
    scope = {"headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {token}".encode())]}  # fmt: skip
    started = time.perf_counter()
    for _ in range(calls):
        ring.match(presented_token(scope))
    return round((time.perf_counter() - started) / calls * 1e6, 2)


def first_image(raw: Path, scratch: Path) -> Path | None:
    """The first JPEG of the fetched dataset (a folder, or zip archives in it)."""
    found = next(iter(sorted(raw.rglob("*.jp*g"))), None)
    if found is not None:
        return found
    for archive in sorted(raw.glob("*.zip")):
        with zipfile.ZipFile(archive) as opened:
            names = sorted(n for n in opened.namelist() if n.lower().endswith((".jpg", ".jpeg")))
            if names:
                target = scratch / Path(names[0]).name
                target.write_bytes(opened.read(names[0]))
                return target
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", help="NILM data (directory or URL) to train the model on")
    parser.add_argument("--run", type=Path, help="Existing NILM training run (for the baseline)")
    parser.add_argument("--bundle", type=Path, help="Its exported bundle")
    parser.add_argument("--image-source", help="EuroSAT data: also benchmark an image model")
    parser.add_argument("--seconds", type=float, default=5.0, help="Per load point")
    parser.add_argument("--pin", action="store_true", help="Servers on core 1, client on core 0")
    parser.add_argument("--name", default="serving")
    parser.add_argument(
        "--auth-compare",
        action="store_true",
        help="Only compare small-request throughput with API keys off and on (needs --bundle)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="Rounds of --auth-compare")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="modelyard-serving-bench-"))
    if args.auth_compare:
        if args.bundle is None:
            parser.error("--auth-compare needs --bundle")
        window = int(
            json.loads((args.bundle / "manifest.json").read_text())["preprocessing"]["window"]
        )
        small = request_bodies(scratch, window)["small"]
        auth = {
            "cores": available_cores(),
            "seconds_per_point": args.seconds,
            "rounds": args.rounds,
            "clients": auth_comparison(args.bundle, small, scratch, args),
            "check_us_per_request": {n: auth_check_cost_us(n) for n in (1, 10, 100)},
        }
        print(f"API-key check per request: {auth['check_us_per_request']} us (by key count)")
        print(json.dumps(auth["clients"], indent=2))
        print(f"results: {write_results(args.name, auth)}")
        return
    if args.run is None or args.bundle is None:
        if not args.source:
            parser.error("give --source (to train a model) or both --run and --bundle")
        args.run, args.bundle = nilm_run_and_bundle(args.source, scratch / "home")
    window = int(json.loads((args.bundle / "manifest.json").read_text())["preprocessing"]["window"])
    results: dict[str, Any] = {
        "cores": available_cores(),
        "pinned": args.pin,
        "seconds_per_point": args.seconds,
        "window": window,
        "nilm": bench_bundle(
            args.run, args.bundle, request_bodies(scratch, window), DAY, scratch, args
        ),
    }
    results["summary"] = summary(results)
    print(json.dumps(results["summary"], indent=2))
    if args.image_source:
        home = scratch / "image-home"
        run, bundle = eurosat_run_and_bundle(args.image_source, home)
        image = first_image(home / "data" / "raw" / "eurosat", scratch)
        if image is None:
            raise SystemExit(f"no JPEG image under {home / 'data' / 'raw' / 'eurosat'}")
        results["image"] = bench_bundle(run, bundle, image_body(scratch, image), 64, scratch, args)
    print(f"results: {write_results(args.name, results)}")


if __name__ == "__main__":
    main()
