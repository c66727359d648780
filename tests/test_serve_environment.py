"""A server configured the way containers and Cloud Run configure one: by environment variables.

``modelyard serve`` runs as a real subprocess with no option on its command line, only
``MODELYARD_*`` variables and Cloud Run's ``PORT``; a flag still beats its variable; a bad value
is one line naming the variable. The ONNX Runtime threads follow a container's cgroup CPU quota,
read here from cgroup files the tests write (``cpu.max``, ``cpu.cfs_quota_us``).
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import typer

import monitor_fixtures
from bundle_factory import make_nilm_bundle
from cli_helpers import assert_user_error
from modelyard.cli import app
from modelyard.cli_environment import option_variables
from modelyard.core.bundle import Bundle
from modelyard.serving.cpu_quota import cgroup_quota, cpu_budget, parse_cpu_max
from modelyard.serving.runtime import thread_sizing
from modelyard.serving.server_process import HOST, free_port, running_process

REPO = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-m", "modelyard", "serve"]
#: Variables the test harness itself sets, which no option may read.
HARNESS_VARIABLES = {"MODELYARD_HOME", "MODELYARD_DATA_ROOT", "MODELYARD_UI_SCREENSHOTS"}
NAME = re.compile(r"\bMODELYARD_[A-Z0-9_]*[A-Z0-9]\b")
#: A test reading or setting a variable for itself: environ.get("X"), environ["X"],
#: setenv("X", ...), {"X": ...} in an env dict.
HARNESS_USE = (
    re.compile(r"(?:environ\.get\(|environ\[|setenv\()\s*[\"'](MODELYARD_\w+)"),
    re.compile(r"[\"'](MODELYARD_\w+)[\"']\s*:"),
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return make_nilm_bundle(
        tmp_path_factory.mktemp("environment") / "bundle", window=15, appliances=("kettle",)
    )


@pytest.fixture(autouse=True)
def no_server_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """No serve/app/monitor variable of the developer's shell (an exported MODELYARD_PORT) may
    decide what these tests see: each test sets exactly the ones it means."""
    for name in list(os.environ):
        if name.startswith("MODELYARD_") and name not in HARNESS_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)


@contextmanager
def served(
    port: int, variables: dict[str, str], arguments: tuple[str, ...] = ()
) -> Iterator[httpx.Client]:
    """``modelyard serve ARGUMENTS`` with ``variables`` set; a client once ``/ready``."""
    url = f"http://{HOST}:{port}"
    with (
        running_process([*SERVE, *arguments], url, "/ready", 60.0, variables),
        httpx.Client(base_url=url, timeout=10.0) as client,
    ):
        yield client


def run_cli(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "80", **variables}
    command = [sys.executable, "-m", "modelyard", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=60, check=False
    )


def base_variables(bundle: Bundle) -> dict[str, str]:
    return {
        "MODELYARD_BUNDLE": str(bundle.path),
        "MODELYARD_HOST": HOST,
        "MODELYARD_PREDICTION_LOG": "none",
        "MODELYARD_LOG_LEVEL": "warning",
        "MODELYARD_DRAIN_SECONDS": "0",
    }


def refused(port: int) -> bool:
    try:
        httpx.get(f"http://{HOST}:{port}/health", timeout=1.0)
    except httpx.ConnectError:
        return True
    return False


# --- a server from the environment alone -------------------------------------------------------


def test_serve_takes_every_setting_from_the_environment_and_port_from_cloud_run(
    bundle: Bundle,
) -> None:
    port = free_port()
    variables = {
        **base_variables(bundle),
        "PORT": str(port),  # Cloud Run's
        "MODELYARD_MAX_BODY_BYTES": "2048",
        "MODELYARD_DOCS": "false",
        "MODELYARD_THREADS": "1",
    }
    with served(port, variables) as client:
        ready = client.get("/ready").json()
        assert ready["ready"] is True
        assert (ready["threads"], ready["threads_from"]) == (1, "option")
        assert ready["prediction_log"] is False
        assert client.post("/predict", json={"aggregate_w": [300.0] * 40}).status_code == 200
        too_big = client.post("/predict", json={"aggregate_w": [300.123] * 400})
        assert too_big.status_code == 413
        assert client.get("/docs").status_code == 404


def test_own_variable_beats_cloud_run_port_and_a_flag_beats_both(bundle: Bundle) -> None:
    flag, own, platform = free_port(), free_port(), free_port()
    variables = {
        **base_variables(bundle),
        "MODELYARD_PORT": str(own),
        "PORT": str(platform),
        "MODELYARD_DOCS": "false",
    }
    with served(own, variables) as client:
        assert client.get("/docs").status_code == 404
        assert refused(platform)
        ready = client.get("/ready").json()  # no MODELYARD_THREADS: this machine's cores
        sizing = thread_sizing(0)
        assert (ready["threads"], ready["threads_from"]) == (sizing.threads, sizing.source)
    with served(flag, variables, ("--port", str(flag), "--docs")) as client:
        assert client.get("/docs").status_code == 200  # --docs beats MODELYARD_DOCS=false
        assert refused(own) and refused(platform)


# --- bad values: one line naming the variable -------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "fragments"),
    [
        ("MODELYARD_PORT", "eighty", ["$MODELYARD_PORT='eighty'", "--port", "integer"]),
        ("PORT", "8O8O", ["$PORT='8O8O'", "--port"]),
        ("MODELYARD_DOCS", "maybe", ["$MODELYARD_DOCS='maybe'", "--docs", "boolean"]),
        ("MODELYARD_MAX_BATCH", "1e3", ["$MODELYARD_MAX_BATCH='1e3'", "--max-batch"]),
        # what Kubernetes puts there for a Service named "modelyard"
        (
            "MODELYARD_PORT",
            "tcp://10.96.0.7:80",
            ["Service named 'modelyard'", "enableServiceLinks"],
        ),
    ],
)
def test_a_bad_value_in_the_environment_is_one_line_naming_the_variable(
    bundle: Bundle, tmp_path: Path, variable: str, value: str, fragments: list[str]
) -> None:
    result = run_cli("serve", MODELYARD_BUNDLE=str(bundle.path), **{variable: value})
    for fragment in fragments:
        assert_user_error(result, fragment)


def test_monitor_service_from_its_own_variables_listens_on_cloud_run_port(tmp_path: Path) -> None:
    log = f"sqlite:///{tmp_path / 'predictions.db'}"
    monitor_fixtures.prepare(log)
    bundle = monitor_fixtures.make_bundle(tmp_path / "bundle")
    port = free_port()
    variables = {
        "MODELYARD_MONITOR_BUNDLE": str(bundle.path),
        "MODELYARD_MONITOR_LOG": log,
        "MODELYARD_MONITOR_SERVE": "true",
        "MODELYARD_MONITOR_EVERY": "1h",
        "PORT": str(port),
        "MODELYARD_PORT": str(free_port()),  # serve's, not the monitor's
    }
    command = [sys.executable, "-m", "modelyard", "monitor"]
    url = f"http://{HOST}:{port}"
    with running_process(command, url, "/health", 60.0, variables):
        assert httpx.get(f"{url}/metrics", timeout=10.0).status_code == 200


def test_app_and_monitor_read_their_own_variables_and_cloud_run_port() -> None:
    app_port = run_cli("app", "http://127.0.0.1:1", MODELYARD_APP_PORT="not-a-port")
    assert_user_error(app_port, "$MODELYARD_APP_PORT='not-a-port' (for --port)")
    monitor_port = run_cli("monitor", "somewhere", "--serve", PORT="not-a-port")
    assert_user_error(monitor_port, "$PORT='not-a-port' (for --port)")


# --- which variables exist ---------------------------------------------------------------------


def command_variables(name: str) -> dict[str, list[str]]:
    """Option name -> the variables it reads, as click resolves them for command ``name``."""
    group = typer.main.get_command(app)
    command = group.commands[name]  # type: ignore[attr-defined]
    ctx = command.make_context(name, ["--help"], resilient_parsing=True)
    return {p.name: option_variables(ctx, p) for p in command.params if p.name != "help"}


@pytest.mark.parametrize("name", ["serve", "app", "monitor"])
def test_every_option_has_a_variable_and_no_two_share_one(name: str) -> None:
    found = command_variables(name)
    assert all(found.values()), [option for option, names in found.items() if not names]
    names = [v for variables in found.values() for v in variables if v != "PORT"]
    assert len(names) == len(set(names))


def test_help_shows_each_option_s_variable() -> None:
    shown = run_cli("serve", "--help", COLUMNS="200").stdout
    for variables in command_variables("serve").values():
        assert ", ".join(variables) in shown


def test_existing_variables_keep_their_meaning() -> None:
    serve = command_variables("serve")
    assert serve["bundle"] == ["MODELYARD_BUNDLE"]
    assert serve["port"] == ["MODELYARD_PORT", "PORT"]
    assert serve["max_batch"] == ["MODELYARD_MAX_BATCH"]
    assert serve["api_key_file"] == ["MODELYARD_API_KEY_FILE"]
    assert serve["forwarded_allow_ips"] == ["FORWARDED_ALLOW_IPS"]
    assert serve["bundle_key_file"] == ["MODELYARD_BUNDLE_KEY_FILE"]
    assert command_variables("app")["api_key"] == ["MODELYARD_UI_API_KEY"]
    assert command_variables("monitor")["webhook"] == ["MODELYARD_MONITOR_WEBHOOK"]


def test_no_variable_the_code_or_the_harness_reads_for_itself_becomes_an_option() -> None:
    """The variables named in src/ (outside the CLI), the Makefile and the tests, other than
    the ones configuring a server on purpose, are read for something else: none may silently
    set an option (e.g. MODELYARD_SERVE_SETTINGS, MODELYARD_API_KEYS, MODELYARD_DATA_ROOT)."""
    code = [REPO / "Makefile", *(REPO / "src").rglob("*.py"), *(REPO / "src").rglob("*.yaml")]
    code = [path for path in code if path.name not in {"cli.py", "cli_environment.py"}]
    mentioned = {name for path in code for name in NAME.findall(path.read_text())}
    # in the tests, the variables they set or read for the harness (not a server's settings)
    # they configure servers through variables on purpose (the specs; the containers the image
    # test runs; a server configured as the serve-registry container is)
    on_purpose = {
        Path(__file__).name,
        "test_deploy_specs.py",
        "test_container_image.py",
        "test_served_registry.py",
    }
    tests = [p for p in (REPO / "tests").glob("*.py") if p.name not in on_purpose]
    mentioned |= {
        name
        for path in tests
        for pattern in HARNESS_USE
        for name in pattern.findall(path.read_text())
    }
    options = {
        variable
        for command in ("serve", "app", "monitor")
        for variables in command_variables(command).values()
        for variable in variables
    }
    explicit = {
        "MODELYARD_API_KEY_FILE",
        "MODELYARD_BUNDLE_KEY_FILE",
        "MODELYARD_UI_API_KEY",
        "MODELYARD_MONITOR_WEBHOOK",
    }
    assert "MODELYARD_SERVE_SETTINGS" in mentioned and "MODELYARD_API_KEYS" in mentioned
    assert (mentioned & options) - explicit == set()


# --- threads from the cgroup CPU quota ---------------------------------------------------------


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # v2: a 2-CPU limit
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: two threads may run
        ({"cpu.max": "50000 100000\n"}, 1),  # half a CPU: never below 1
        ({"cpu.max": "max 100000\n"}, None),  # v2: no limit
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "400000", "cpu,cpuacct/cpu.cfs_period_us": "200000"}, 2),
        ({"cpu.max": "lots of cpu"}, None),  # garbage: no limit, no failure
        ({"cpu.max": "0 100000"}, None),
        ({"cpu.max": "100000 0"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000"}, None),  # v1 without its period
        ({}, None),  # no cgroup files at all
    ],
)
def test_cgroup_quota_is_read_from_v2_and_v1_files(
    tmp_path: Path, files: dict[str, str], cores: int | None
) -> None:
    for relative, text in files.items():
        write(tmp_path, relative, text)
    quota = cgroup_quota(tmp_path, tmp_path / "no-membership")
    assert (None if quota is None else quota.cores) == cores


def test_a_missing_cgroup_root_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path / "absent", tmp_path / "absent-too") is None
    assert cpu_budget(tmp_path / "absent", tmp_path / "absent-too", affinity=6).cores == 6


def test_the_tightest_limit_on_the_way_to_the_root_binds(tmp_path: Path) -> None:
    """Outside a cgroup namespace the process sits deep in the tree; a parent's limit counts."""
    membership = write(tmp_path, "proc-self-cgroup", "0::/kubepods/pod1/container\n")
    root = tmp_path / "cgroup"
    write(root, "kubepods/cpu.max", "400000 100000")
    write(root, "kubepods/pod1/cpu.max", "300000 100000")
    write(root, "kubepods/pod1/container/cpu.max", "max 100000")
    write(root, "cpu.max", "garbage")
    quota = cgroup_quota(root, membership)
    assert quota is not None and quota.cores == 3
    assert quota.file == root / "kubepods/pod1/cpu.max"


def test_cores_are_the_smaller_of_quota_and_affinity(tmp_path: Path) -> None:
    write(tmp_path, "cpu.max", "400000 100000")
    missing = tmp_path / "no-membership"
    limited = cpu_budget(tmp_path, missing, affinity=16)
    assert (limited.cores, limited.limited_by_quota) == (4, True)
    assert "cpu.max" in limited.describe() and "affinity 16" in limited.describe()
    roomy = cpu_budget(tmp_path, missing, affinity=2)
    assert (roomy.cores, roomy.limited_by_quota) == (2, False)


def test_threads_share_the_quota_among_workers_and_say_where_they_came_from(
    tmp_path: Path,
) -> None:
    write(tmp_path, "cpu.max", "400000 100000")
    budget = cpu_budget(tmp_path, tmp_path / "no-membership", affinity=32)
    one = thread_sizing(0, 1, budget)
    assert (one.threads, one.source) == (4, "cgroup")
    two = thread_sizing(0, 2, budget)
    assert (two.threads, two.source) == (2, "cgroup")
    assert "2 workers" in two.detail
    assert thread_sizing(0, 8, budget).threads == 1  # never below 1
    assert (thread_sizing(3, 2, budget).threads, thread_sizing(3, 2, budget).source) == (
        3,
        "option",
    )
    unlimited = cpu_budget(tmp_path / "absent", tmp_path / "absent", affinity=2)
    assert thread_sizing(0, 1, unlimited).source == "affinity"


def test_cpu_max_parsing() -> None:
    assert parse_cpu_max("max 100000") is None
    assert parse_cpu_max("max") is None
    assert parse_cpu_max("250000 100000") == (250000, 100000)
    assert parse_cpu_max("250000") == (250000, 100000)  # period left at the kernel default
    assert parse_cpu_max("1 2 3") is None
    assert parse_cpu_max("") is None
