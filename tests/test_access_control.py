"""Access control and exposure, against real ``modelyard serve`` processes on 127.0.0.1.

API keys (file, environment, both header forms, constant-time match, exempt probes, public or
private metrics, the key's name in the access log), TLS with a certificate made here, the Host
header check against DNS rebinding, and the docs pages with their assets served locally.
"""

import datetime
import ipaddress
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bundle_factory import make_nilm_bundle
from modelyard.core.bundle import load_bundle
from modelyard.core.errors import ConfigError, ModelyardError
from modelyard.loadtest.options import LoadOptions
from modelyard.loadtest.runner import run_loadtest
from modelyard.serving.api_keys import KeyRing, load_keys, parse_keys
from modelyard.serving.app import create_app
from modelyard.serving.exposure import check_exposure
from modelyard.serving.hosts import AllowedHosts, default_allowed_hosts
from modelyard.serving.server_process import HOST, free_port
from modelyard.serving.settings import ServerSettings

with warnings.catch_warnings():
    # Starlette's TestClient warns at import that it would prefer httpx2; httpx works.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ALICE = "alice-0123456789abcdef"
UNNAMED = "fedcba9876543210-unnamed"
CI = "ci-key-5555555555555555"
WINDOW = 15
PREDICT = {"aggregate_w": [300.0] * WINDOW, "edges": "valid"}
TLS_PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("access") / "bundle"
    make_nilm_bundle(path, window=WINDOW)
    return path


@contextmanager
def serving(
    bundle: Path,
    args: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = False,
) -> Iterator[str]:
    """``modelyard serve`` with its output in ``log``; yields the base URL once /health is 200."""
    port = free_port()
    command = [sys.executable, "-m", "modelyard", "serve", str(bundle), "--host", HOST]
    command += ["--port", str(port), "--drain-seconds", "0", "--prediction-log", "none", *args]
    environment = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
    url = f"{scheme}://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            with suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", verify=verify, timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def serve_fails(bundle: Path, args: Sequence[str], env: dict[str, str] | None = None) -> str:
    """Run ``modelyard serve`` expecting it to refuse to start; its output."""
    command = [sys.executable, "-m", "modelyard", "serve", str(bundle), "--port", "1", *args]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return " ".join((done.stdout + done.stderr).split())


# ---- API keys -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(f"# clients of the test\nalice:{ALICE}\n\n{UNNAMED}  # no name\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def secured(
    bundle: Path, key_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """Keys from a file and the environment; loopback default hosts; docs on; metrics private."""
    log = tmp_path_factory.mktemp("secured") / "server.log"
    args = ["--api-key-file", str(key_file), "--log-level", "info", "--log-format", "json"]
    with serving(bundle, args, log, env={"MODELYARD_API_KEYS": f"ci:{CI}"}) as url:
        yield url, log


def test_requests_without_a_key_are_refused_with_401_and_a_challenge(
    secured: tuple[str, Path],
) -> None:
    url, _ = secured
    for method, path in [("POST", "/predict"), ("GET", "/info"), ("GET", "/openapi.json"),
                         ("GET", "/docs"), ("GET", "/metrics"), ("GET", "/nowhere")]:  # fmt: skip
        answer = httpx.request(method, f"{url}{path}", json=PREDICT)
        assert answer.status_code == 401, (path, answer.text)
        assert answer.headers["www-authenticate"] == 'Bearer realm="modelyard"'
        assert "API key" in answer.json()["detail"]
        assert answer.headers["x-request-id"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {ALICE}"},
        {"authorization": f"bearer {UNNAMED}"},
        {"X-API-Key": UNNAMED},
        {"X-API-Key": CI},  # from $MODELYARD_API_KEYS
        {"Authorization": "Basic eDp5", "X-API-Key": ALICE},
    ],
)
def test_each_key_is_accepted_in_each_header_form(
    secured: tuple[str, Path], headers: dict[str, str]
) -> None:
    url, _ = secured
    answer = httpx.post(f"{url}/predict", json=PREDICT, headers=headers)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["appliances"]["kettle"]) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {ALICE}x"},
        {"Authorization": f"Bearer {ALICE[:-1]}"},
        {"Authorization": f"Token {ALICE}"},
        {"Authorization": "Bearer"},
        {"X-API-Key": ""},
        {"X-API-Key": f"alice:{ALICE}"},
    ],
)
def test_wrong_keys_are_refused(secured: tuple[str, Path], headers: dict[str, str]) -> None:
    url, _ = secured
    answer = httpx.get(f"{url}/info", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="modelyard"'


def test_probes_need_no_key_and_metrics_count_the_refusals(secured: tuple[str, Path]) -> None:
    url, _ = secured
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/ready").json()["ready"] is True
    httpx.get(f"{url}/info")  # one more refusal
    metrics = httpx.get(f"{url}/metrics", headers={"X-API-Key": CI}).text
    refused = re.search(r'modelyard_http_rejected_total\{reason="unauthorized"\} (\S+)', metrics)
    assert refused is not None and float(refused.group(1)) >= 1


def test_the_access_log_names_the_key_and_never_shows_it(secured: tuple[str, Path]) -> None:
    url, log = secured
    httpx.get(f"{url}/info", headers={"Authorization": f"Bearer {ALICE}", "X-Request-ID": "r-1"})
    httpx.get(f"{url}/info", headers={"X-API-Key": UNNAMED, "X-Request-ID": "r-2"})
    time.sleep(0.3)
    text = log.read_text()
    lines = {}
    for line in text.splitlines():
        with suppress(ValueError):
            entry = json.loads(line)
            lines[entry.get("request_id")] = entry
    assert lines["r-1"]["api_key"] == "alice"
    assert re.fullmatch(r"sha256:[0-9a-f]{8}", lines["r-2"]["api_key"])
    for secret in (ALICE, UNNAMED, CI):
        assert secret not in text


def test_openapi_declares_the_keys_and_the_401(secured: tuple[str, Path]) -> None:
    url, _ = secured
    schema = httpx.get(f"{url}/openapi.json", headers={"X-API-Key": CI}).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "401" in schema["paths"]["/predict"]["post"]["responses"]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_the_load_test_sends_the_key_it_is_given(secured: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = secured
    with pytest.raises(ModelyardError, match="needs an API key \\(none given\\)"):
        run_loadtest(url, None, 2, 2.0, 1, tmp_path / "none", LoadOptions())
    summary = run_loadtest(url, None, 2, 2.0, 1, tmp_path / "key", LoadOptions(api_key=CI))
    assert summary.passed, summary.failures
    assert {e.label for e in summary.endpoints} >= {"POST /predict"}
    assert CI not in repr(LoadOptions(api_key=CI))


def test_cors_preflights_pass_without_a_key_and_refusals_stay_readable(
    bundle: Path, key_file: Path
) -> None:
    """CORS sits outside the key check: a browser's preflight carries no key, and a page must
    be able to read the 401 it gets."""
    settings = ServerSettings(api_key_file=key_file, cors_origins=["https://app.example"])
    with TestClient(create_app(load_bundle(bundle), None, settings)) as client:
        origin = {"Origin": "https://app.example"}
        preflight = client.options(
            "/predict",
            headers={**origin, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
        )  # fmt: skip
        assert preflight.status_code == 200
        refused = client.post("/predict", json=PREDICT, headers=origin)
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "https://app.example"
        allowed = client.post("/predict", json=PREDICT, headers={**origin, "X-API-Key": ALICE})
        assert allowed.status_code == 200


def test_key_match_compares_every_key_and_names_the_one_found() -> None:
    ring = load_keys(None, None)
    assert ring is None
    os.environ["MODELYARD_TEST_KEYS"] = f"a:{'a' * 16}, b:{'b' * 16}"
    try:
        ring = load_keys(None, "MODELYARD_TEST_KEYS")
    finally:
        del os.environ["MODELYARD_TEST_KEYS"]
    assert isinstance(ring, KeyRing) and len(ring) == 2
    assert ring.match("b" * 16) == "b" and ring.match("a" * 16) == "a"
    assert ring.match("a" * 15) is None and ring.match("") is None
    # '#' inside a key is part of it; after a space it starts a comment
    (named,) = parse_keys([f"n:{'x' * 8}#{'y' * 8}  # rotated in May"], "test")
    assert named == ("n", f"{'x' * 8}#{'y' * 8}")
    assert all(len(digest) == 32 for digest in ring.digests)  # digests only, no key kept


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "API key file not found"),
        ("# only a comment\n\n", "holds no key"),
        ("short\n", "line 1: a key must be at least 16 printable ASCII characters"),
        ("# keys\n\nclé-non-ascii-0123456789\n", "line 3: a key must be at least 16"),
        (f"bad name:{ALICE}\n", "line 1: a key name may hold"),
        (f"a:{ALICE}\na:{UNNAMED}\n", "names must be unique; repeated: a"),
    ],
)
def test_key_file_problems_refuse_to_start_with_one_line(
    bundle: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "keys.txt"
    if content is not None:
        path.write_text(content)
    output = serve_fails(bundle, ["--api-key-file", str(path)])
    assert message in output


def test_an_empty_key_variable_refuses_to_start(bundle: Path) -> None:
    output = serve_fails(bundle, [], env={"MODELYARD_API_KEYS": " "})
    assert "$MODELYARD_API_KEYS is set but holds no key" in output


def test_a_world_readable_key_file_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(f"{ALICE}\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "modelyard.serving"):
        check_exposure(ServerSettings(api_key_file=path))
    assert "readable by every user" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, "modelyard.serving"):
        check_exposure(ServerSettings(api_key_file=path))
    assert "readable by every user" not in caplog.text


def test_an_exposed_server_warns_about_what_is_open(
    key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checked in-process: the tests never bind 0.0.0.0."""
    with caplog.at_level(logging.WARNING, "modelyard.serving"):
        check_exposure(ServerSettings(host="0.0.0.0"))
    assert "without API keys" in caplog.text and "any Host header" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "modelyard.serving"):
        check_exposure(ServerSettings(host="0.0.0.0", api_key_file=key_file))
    assert "clear text" in caplog.text and "without API keys" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "modelyard.serving"):
        check_exposure(ServerSettings(host="127.0.0.1"))
        check_exposure(ServerSettings(host="0.0.0.0", api_key_file=key_file,
                                      allowed_hosts=["api.example.com"]))  # fmt: skip
    assert "any Host header" not in caplog.text and "without API keys" not in caplog.text


# ---- public metrics, allowed hosts, docs off ----------------------------------------------------


@pytest.fixture(scope="module")
def public_metrics(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("public") / "server.log"
    args = ["--metrics-public", "--no-docs", "--allowed-host", "api.example.com"]
    args += ["--allowed-host", "*.corp.example"]
    with serving(bundle, args, log, env={"MODELYARD_API_KEYS": f"ci:{CI}"}) as url:
        yield url


def test_public_metrics_need_no_key_but_the_rest_does(public_metrics: str) -> None:
    assert httpx.get(f"{public_metrics}/metrics").status_code == 200
    assert httpx.get(f"{public_metrics}/info", headers={"Host": "api.example.com"}).status_code == (
        401
    )


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("api.example.com", 200),
        ("API.example.com:443", 200),
        ("eu.corp.example", 200),
        ("corp.example", 400),
        ("127.0.0.1", 400),
        ("api.example.com.evil.test", 400),
    ],
)
def test_named_allowed_hosts_are_the_only_ones_served(
    public_metrics: str, host: str, status: int
) -> None:
    answer = httpx.get(f"{public_metrics}/info", headers={"Host": host, "X-API-Key": CI})
    assert answer.status_code == status, answer.text
    if status == 400:
        assert "is not served here" in answer.json()["detail"]


def test_docs_off_hides_the_pages_but_keeps_the_schema(public_metrics: str) -> None:
    headers = {"Host": "api.example.com", "X-API-Key": CI}
    for path in ("/docs", "/redoc", "/docs-assets/swagger-ui-bundle.js"):
        assert httpx.get(f"{public_metrics}{path}", headers=headers).status_code == 404
    assert httpx.get(f"{public_metrics}/openapi.json", headers=headers).json()["paths"]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 400),
        ("evil.example:8000", 400),
        ("127.0.0.1.evil.example", 400),
        ("localhost:1234", 200),
        ("127.0.0.1:9", 200),
        ("[::1]:8000", 200),
    ],
)
def test_a_loopback_server_serves_only_loopback_names(
    secured: tuple[str, Path], host: str, status: int
) -> None:
    url, _ = secured
    answer = httpx.get(f"{url}/info", headers={"Host": host, "X-API-Key": CI})
    assert answer.status_code == status, answer.text
    # the probes answer whatever the Host (Kubernetes sends the pod IP)
    assert httpx.get(f"{url}/health", headers={"Host": host}).status_code == 200


def test_refused_hosts_are_counted(secured: tuple[str, Path]) -> None:
    url, _ = secured
    httpx.get(f"{url}/info", headers={"Host": "evil.example"})
    metrics = httpx.get(f"{url}/metrics", headers={"X-API-Key": CI}).text
    assert re.search(r'modelyard_http_rejected_total\{reason="bad_host"\} [1-9]', metrics)


def test_allowed_host_defaults_and_patterns() -> None:
    assert default_allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert default_allowed_hosts("0.0.0.0") == ["*"]
    allowed = AllowedHosts(["::1", "Example.org.", "*.svc.cluster.local"])
    assert allowed.allows("[::1]:80") and allowed.allows("example.org:8000")
    assert allowed.allows("model.ns.svc.cluster.local")
    assert not allowed.allows("svc.cluster.local") and not allowed.allows("example.org.evil")


# ---- docs on: nothing from a CDN ----------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_this_server(secured: tuple[str, Path], page: str) -> None:
    url, _ = secured
    key = {"X-API-Key": CI}
    html = httpx.get(f"{url}{page}", headers=key)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert "://" not in html.text  # no absolute URL at all: no CDN, no fonts, no validator
    # and the browser refuses what the scripts would fetch from elsewhere (ReDoc's logo)
    policy = dict(
        part.strip().split(" ", 1) for part in html.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    references = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html.text)
    assert "/openapi.json" in references
    assets = [ref for ref in references if ref.startswith("/docs-assets/")]
    assert len(assets) >= (3 if page == "/docs" else 2)
    for asset in assets:
        answer = httpx.get(f"{url}{asset}", headers=key)
        assert answer.status_code == 200 and len(answer.content) > 100, asset


# ---- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, its key encrypted."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = serialization.BestAvailableEncryption(TLS_PASSWORD.encode())
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_tls_serves_https_to_a_client_that_trusts_the_certificate(
    bundle: Path, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = certificate
    trusted = ssl.create_default_context(cafile=str(cert))
    args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    env = {"MODELYARD_SSL_KEYFILE_PASSWORD": TLS_PASSWORD}
    with serving(bundle, args, tmp_path / "log", env, "https", trusted) as url:
        # no key configured: auth is off, every route answers
        answer = httpx.post(f"{url}/predict", json=PREDICT, verify=trusted)
        assert answer.status_code == 200
        assert answer.http_version == "HTTP/1.1" and url.startswith("https://")
        with pytest.raises(httpx.ConnectError):  # an untrusting client stops at the handshake
            httpx.get(f"{url}/health", verify=ssl.create_default_context())
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer
            httpx.get(url.replace("https://", "http://") + "/health")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--ssl-keyfile", "{key}"], {}, "--ssl-keyfile needs --ssl-certfile"),
        (["--ssl-certfile", "/nonexistent/cert.pem"], {}, "TLS file not found"),
        (["--ssl-certfile", "{cert}", "--ssl-keyfile", "{key}"], {}, "cannot load the TLS"),
        (
            ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{key}"],
            {"MODELYARD_SSL_KEYFILE_PASSWORD": "wrong"},
            "MODELYARD_SSL_KEYFILE_PASSWORD",
        ),
    ],
)
def test_tls_problems_refuse_to_start_with_one_line(
    bundle: Path,
    certificate: tuple[Path, Path],
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    cert, key = certificate
    filled = [a.format(cert=cert, key=key) for a in args]
    assert message in serve_fails(bundle, filled, {"MODELYARD_SSL_KEYFILE_PASSWORD": "", **env})


def test_settings_refuse_a_keyfile_alone() -> None:
    with pytest.raises(ConfigError, match="needs --ssl-certfile"):
        check_exposure(ServerSettings(ssl_keyfile=Path("key.pem")))
