"""The deployment specs (deploy/kubernetes, deploy/cloudrun, deploy/vertex) stay valid and true to
the code, without a cluster or a cloud account.

Every YAML document under those directories, found by glob, is validated:

* built-in Kubernetes kinds against the Kubernetes schemas of ``kubernetes-validate`` (strict: an
  unknown or misspelt field fails), at a pinned Kubernetes version;
* custom resources (PodMonitor, PyTorchJob, the Knative service of Cloud Run, Vertex AI's
  CustomJobSpec), which have no schema there, against small JSON schemas of the fields they use
  here, and their pod templates (or containers) wrapped into a Pod and validated as built-ins.

Then what a schema cannot see, checked against the code itself: each container's ``modelyard``
command line parses with the real CLI under that container's environment (after Kubernetes'
``$(VAR)`` expansion); every ``MODELYARD_*`` variable a spec sets is read by the command it runs
(click's names: the command's prefix, or the option's own variable); probe paths are real GET
routes of the server (read from an app built from a real bundle), and open without an API key;
probe, Service and PodMonitor ports are the container's, and the server listens on it; the
termination grace period exceeds drain + shutdown from the code's values; images are the agreed
ones; no Service's link variables collide with an option's variable; the monitor reads the
prediction log the API writes; DDP world sizes match the GPUs asked for.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml

from bundle_factory import make_nilm_bundle
from modelyard import cli
from modelyard.core.runs import HOME_ENV
from modelyard.monitoring.service import build_app as build_monitor_app
from modelyard.serving.api_keys import API_KEYS_ENV
from modelyard.serving.app import create_app
from modelyard.serving.auth import ALWAYS_OPEN
from modelyard.serving.exposure import SSL_PASSWORD_ENV
from modelyard.serving.hosts import LOOPBACK_BINDS
from modelyard.serving.settings import ServerSettings, setting_default

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SPEC_DIRS = ("kubernetes", "cloudrun", "vertex")
#: The Kubernetes version the manifests are validated against (the oldest minor still supported
#: by the big managed offerings when written); raise it when the specs use newer fields.
KUBERNETES_VERSION = "1.31.0"
#: Image references: a documented placeholder registry (GHCR or Artifact Registry) and tag.
IMAGE = re.compile(
    r"^(?:ghcr\.io/OWNER|REGION-docker\.pkg\.dev/PROJECT/modelyard)"
    r"/(?P<name>modelyard-serve|modelyard-app|modelyard-train):TAG$"
)
#: What each image's entrypoint is, when a container names no command (docker/serve.Dockerfile).
ENTRYPOINTS = {"modelyard-serve": ["modelyard", "serve"], "modelyard-app": ["modelyard", "serve"]}
#: Which ``modelyard`` commands each image may run (the app image adds the ui and monitor extras).
IMAGE_COMMANDS = {
    "modelyard-serve": {"serve"},
    "modelyard-app": {"serve", "app", "monitor"},
    "modelyard-train": {"data", "train", "sweep", "evaluate", "export", "register"},
}
#: Variables read by the code itself rather than by an option (the working directory, the
#: server's API keys and TLS key password).
CODE_VARIABLES = {
    "serve": {HOME_ENV, API_KEYS_ENV, SSL_PASSWORD_ENV},
    "monitor": {HOME_ENV},
    "app": {HOME_ENV},
}
#: Variables the Hydra configuration reads (``${oc.env:NAME,...}``), for the commands that
#: compose it (those taking overrides).
CONFIG_VARIABLES = {
    name
    for path in (ROOT / "src" / "modelyard" / "conf").rglob("*.yaml")
    for name in re.findall(r"oc\.env:([A-Za-z_][A-Za-z0-9_]*)", path.read_text())
}
#: Paths a pod writes to, by the variable naming them; under readOnlyRootFilesystem each must be
#: on a mounted volume.
WRITABLE_PATH_VARIABLES = (HOME_ENV, "MODELYARD_SPOOL_DIR", "HOME", "GRADIO_TEMP_DIR")
#: Stand-in value of a variable that comes from a Secret (``valueFrom``).
FROM_SECRET = "postgresql+psycopg://user:secret@db:5432/modelyard"


# --- the documents ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    path: Path
    index: int
    body: dict[str, Any]

    @property
    def platform(self) -> str:
        return self.path.parent.name

    @property
    def kind(self) -> tuple[str, str]:
        """(apiVersion, kind); a Vertex AI job config is a bare CustomJobSpec."""
        if self.platform == "vertex" and "kind" not in self.body:
            return ("aiplatform.googleapis.com/v1", "CustomJobSpec")
        return (str(self.body.get("apiVersion")), str(self.body.get("kind")))

    @property
    def name(self) -> str:
        return str(self.body.get("metadata", {}).get("name", self.path.stem))

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}#{self.index} ({self.kind[1]} {self.name})"


def load_documents() -> list[Document]:
    found = []
    for directory in SPEC_DIRS:
        for path in sorted((DEPLOY / directory).glob("*.y*ml")):
            bodies = [body for body in yaml.safe_load_all(path.read_text()) if body is not None]
            found += [Document(path, i, body) for i, body in enumerate(bodies)]
    return found


DOCUMENTS = load_documents()


def documents(*kinds: str) -> list[Document]:
    return [d for d in DOCUMENTS if d.kind[1] in kinds]


def doc_ids(docs: list[Document]) -> list[str]:
    return [str(d) for d in docs]


# --- schemas of the custom resources: the fields used here -----------------------------------

OBJECT = {"type": "object"}
STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
INT = {"type": "integer", "minimum": 0}
LABELS = {"type": "object", "additionalProperties": STRING}
METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": STRING, "namespace": STRING, "labels": LABELS, "annotations": LABELS},
}


def closed(required: list[str], **properties: Any) -> dict[str, Any]:
    """An object schema with exactly these properties (a misspelt field fails)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return closed(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion={"const": api_version},
        kind={"const": kind},
        metadata=METADATA,
        spec=spec,
    )


NAME_VALUE = closed(["name", "value"], name=STRING, value=STRING)
SECRET_KEY = closed(["name", "key"], name=STRING, key=STRING, optional={"type": "boolean"})
POD_MONITOR = resource(
    "monitoring.coreos.com/v1",
    "PodMonitor",
    closed(
        ["selector", "podMetricsEndpoints"],
        jobLabel=STRING,
        selector=closed(["matchLabels"], matchLabels=LABELS),
        podMetricsEndpoints={
            "type": "array",
            "minItems": 1,
            "items": closed(
                ["port", "path"],
                port=STRING,
                path={"type": "string", "pattern": "^/"},
                interval={"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                scrapeTimeout={"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                authorization=closed(["credentials"], type=STRING, credentials=SECRET_KEY),
            ),
        },
    ),
)
REPLICA_SPEC = closed(
    ["replicas", "template"],
    replicas={"type": "integer", "minimum": 1},
    restartPolicy={"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
    template=OBJECT,  # validated as a Kubernetes PodTemplate
)
PYTORCH_JOB = resource(
    "kubeflow.org/v1",
    "PyTorchJob",
    closed(
        ["pytorchReplicaSpecs"],
        runPolicy=closed(
            [],
            cleanPodPolicy={"enum": ["None", "Running", "All"]},
            backoffLimit=INT,
            ttlSecondsAfterFinished=INT,
            activeDeadlineSeconds=INT,
        ),
        pytorchReplicaSpecs=closed(["Master"], Master=REPLICA_SPEC, Worker=REPLICA_SPEC),
    ),
)
KNATIVE_SERVICE = resource(
    "serving.knative.dev/v1",
    "Service",
    closed(
        ["template"],
        template=closed(
            ["spec"],
            metadata=closed([], labels=LABELS, annotations=LABELS),
            spec=closed(
                ["containers"],
                containerConcurrency={"type": "integer", "minimum": 0, "maximum": 1000},
                timeoutSeconds={"type": "integer", "minimum": 1, "maximum": 3600},
                serviceAccountName=STRING,
                containers={"type": "array", "minItems": 1, "maxItems": 10},  # as a Pod's
            ),
        ),
    ),
)
VERTEX_CUSTOM_JOB = closed(
    ["workerPoolSpecs"],
    workerPoolSpecs={
        "type": "array",
        "minItems": 1,
        "items": closed(
            ["replicaCount", "machineSpec", "containerSpec"],
            replicaCount={"type": "integer", "minimum": 1},
            machineSpec=closed(
                ["machineType"],
                machineType=STRING,
                acceleratorType={"type": "string", "pattern": "^NVIDIA_[A-Z0-9_]+$"},
                acceleratorCount={"type": "integer", "minimum": 1},
            ),
            diskSpec=closed(
                [], bootDiskType={"enum": ["pd-ssd", "pd-standard"]}, bootDiskSizeGb=INT
            ),
            containerSpec=closed(
                ["imageUri"],
                imageUri=STRING,
                command=STRINGS,
                args=STRINGS,
                env={
                    "type": "array",
                    "items": closed(["name", "value"], name=STRING, value=STRING),
                },
            ),
        ),
    },
    serviceAccount=STRING,
    baseOutputDirectory=closed(["outputUriPrefix"], outputUriPrefix=STRING),
    scheduling=closed([], timeout={"type": "string", "pattern": "^[0-9]+s$"}),
)
CUSTOM_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
    ("kubeflow.org/v1", "PyTorchJob"): PYTORCH_JOB,
    ("serving.knative.dev/v1", "Service"): KNATIVE_SERVICE,
    ("aiplatform.googleapis.com/v1", "CustomJobSpec"): VERTEX_CUSTOM_JOB,
}


# --- pods and containers of a document ---------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """One pod template of a document, as a Kubernetes PodSpec (Cloud Run and Vertex containers
    wrapped into one)."""

    document: Document
    role: str
    spec: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.document} {self.role}".strip()


def pods_of(doc: Document) -> list[Pod]:
    body, kind = doc.body, doc.kind[1]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [Pod(doc, "", body["spec"]["template"]["spec"])]
    if kind == "CronJob":
        return [Pod(doc, "", body["spec"]["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "PyTorchJob":
        replicas = body["spec"]["pytorchReplicaSpecs"]
        return [Pod(doc, role, spec["template"]["spec"]) for role, spec in replicas.items()]
    if doc.kind == ("serving.knative.dev/v1", "Service"):
        spec = body["spec"]["template"]["spec"]
        containers = [knative_container(i, c) for i, c in enumerate(spec["containers"])]
        wrapped = {"containers": containers}
        if "serviceAccountName" in spec:
            wrapped["serviceAccountName"] = spec["serviceAccountName"]
        return [Pod(doc, "", wrapped)]
    if kind == "CustomJobSpec":
        return [
            Pod(doc, f"pool{i}", {"restartPolicy": "Never", "containers": [vertex_container(w)]})
            for i, w in enumerate(body["workerPoolSpecs"])
        ]
    return []


def knative_container(index: int, container: dict[str, Any]) -> dict[str, Any]:
    """A Cloud Run container as Kubernetes has it: named, and each probe on the container's port
    when it names none (Cloud Run's default)."""
    found = {"name": f"c{index}", **container}
    port = next((p["containerPort"] for p in container.get("ports", [])), 8080)
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = found.get(kind)
        for action in ("httpGet", "tcpSocket", "grpc"):
            if probe and action in probe and "port" not in probe[action]:
                found[kind] = {**probe, action: {**probe[action], "port": port}}
    return found


def vertex_container(pool: dict[str, Any]) -> dict[str, Any]:
    spec = pool["containerSpec"]
    container = {"name": "worker", "image": spec["imageUri"]}
    container.update({k: spec[k] for k in ("command", "args", "env") if k in spec})
    return container


def all_pods() -> list[Pod]:
    return [pod for doc in DOCUMENTS for pod in pods_of(doc)]


def containers(pod: Pod) -> list[dict[str, Any]]:
    return [*pod.spec.get("initContainers", []), *pod.spec["containers"]]


def image_name(container: dict[str, Any]) -> str | None:
    """The agreed image's name (modelyard-serve, ...), None for any other image."""
    found = IMAGE.match(container["image"])
    return found["name"] if found else None


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables: literal values, a stand-in for values from Secrets."""
    return {
        e["name"]: str(e["value"]) if "value" in e else FROM_SECRET
        for e in container.get("env", [])
    }


def expand(argument: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of command and args (unknown names stay as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), argument)


def modelyard_argv(container: dict[str, Any]) -> list[str] | None:
    """The ``modelyard`` command line the container runs, or None for a shell script."""
    command = container.get("command", ENTRYPOINTS.get(image_name(container) or ""))
    if not command or command[0] != "modelyard":
        return None
    env = env_values(container)
    return [expand(a, env) for a in [*command[1:], *container.get("args", [])]]


def running(command: str) -> Iterator[tuple[Pod, dict[str, Any], list[str]]]:
    for pod in all_pods():
        for container in containers(pod):
            argv = modelyard_argv(container)
            if argv and argv[0] == command:
                yield pod, container, argv


# --- the CLI: option variables and a dry parse -------------------------------------------------

ROOT_COMMAND: Any = typer.main.get_command(cli.app)


def subcommand(name: str) -> Any:
    found = ROOT_COMMAND.commands.get(name)
    assert found is not None, f"modelyard has no command {name!r}"
    return found


def option_variables(command: Any) -> set[str]:
    """Every variable the command's parameters read: an option's own (``envvar``), else click's
    automatic ``PREFIX_NAME`` when the command sets ``auto_envvar_prefix``."""
    prefix = command.context_settings.get("auto_envvar_prefix")
    names: set[str] = set()
    for param in command.params:
        own = param.envvar
        if own:
            names.update([own] if isinstance(own, str) else own)
        elif prefix and getattr(param, "allow_from_autoenv", False) and param.name:
            names.add(f"{prefix}_{param.name.upper()}")
    return names


def read_variables(command_name: str) -> set[str]:
    """What ``modelyard COMMAND`` reads (every subcommand's, for a group such as ``data``)."""
    command = subcommand(command_name)
    every = [command, *getattr(command, "commands", {}).values()]
    names = set().union(*(option_variables(c) for c in every))
    if any(p.name == "overrides" for c in every for p in c.params):
        names |= CONFIG_VARIABLES
    return names | CODE_VARIABLES.get(command_name, set())


def commands_run(container: dict[str, Any]) -> set[str]:
    """The ``modelyard`` commands a container runs: its command line's, or those a shell script
    names (``modelyard data fetch ... && modelyard train ...``)."""
    argv = modelyard_argv(container)
    if argv:
        return {argv[0]}
    script = " ".join([*container.get("command", []), *container.get("args", [])])
    return set(re.findall(r"\bmodelyard ([a-z]+)", script))


def variables_read(container: dict[str, Any]) -> set[str]:
    return {HOME_ENV}.union(*(read_variables(c) for c in commands_run(container)))


def every_read_variable() -> set[str]:
    return set().union(*(read_variables(name) for name in ROOT_COMMAND.commands))


def parse(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Parse ``modelyard ARGV`` as the container would, under exactly its variables (those of
    the test's own environment that a command reads are removed); returns the parameters'
    values. Nothing runs."""
    for name in every_read_variable() | {"PORT"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = subcommand(argv[0])
    try:
        with command.make_context(argv[0], list(argv[1:])) as ctx:
            return dict(ctx.params)
    except BaseException as error:  # click's usage errors, typer.Exit from a bad variable
        pytest.fail(f"`modelyard {' '.join(argv)}` does not parse: {error!r}")


# --- the servers' routes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_routes(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """GET routes of the prediction server, built from a real bundle."""
    bundle = make_nilm_bundle(tmp_path_factory.mktemp("deploy") / "bundle")
    app = create_app(bundle, {}, ServerSettings(bundle=str(bundle.path)))
    return {r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or ())}


def monitor_routes() -> set[str]:
    """GET routes of ``modelyard monitor --serve`` (the service object is used only by the
    handlers, so none is needed to read the table)."""
    app = build_monitor_app(cast(Any, None))
    return {r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or ())}


# === validation =================================================================================


def test_the_specs_are_found() -> None:
    kinds = {d.kind[1] for d in DOCUMENTS}
    expected = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodMonitor", "CronJob"}
    assert kinds >= expected | {"PyTorchJob", "CustomJobSpec"}, kinds
    assert {d.platform for d in DOCUMENTS} == set(SPEC_DIRS)


@pytest.mark.parametrize("doc", DOCUMENTS, ids=doc_ids(DOCUMENTS))
def test_document_is_valid(doc: Document) -> None:
    schema = CUSTOM_SCHEMAS.get(doc.kind)
    if schema is None:
        try:
            kubernetes_validate.validate(doc.body, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{doc}: no Kubernetes schema for {doc.kind}; add one to CUSTOM_SCHEMAS")
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc}: {'.'.join(map(str, error.path))}: {error.message}")
        return
    try:
        jsonschema.validate(doc.body, schema)
    except jsonschema.ValidationError as error:
        pytest.fail(f"{doc}: {'.'.join(map(str, error.path))}: {error.message}")
    for pod in pods_of(doc):
        wrapped = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod.spec}
        try:
            kubernetes_validate.validate(wrapped, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{pod}: pod spec: {'.'.join(map(str, error.path))}: {error.message}")


def test_a_misspelt_field_fails_validation() -> None:
    """The validators are strict: the checks above would catch a typo."""
    api = next(d for d in documents("Deployment") if d.name == "modelyard-api")
    body = yaml.safe_load(yaml.safe_dump(api.body))
    body["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
    monitor = yaml.safe_load(yaml.safe_dump(documents("PodMonitor")[0].body))
    monitor["spec"]["podMetricsEndpoints"][0]["pth"] = "/metrics"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, POD_MONITOR)


# === consistency with the code ==================================================================

PODS = all_pods()
MODELYARD_CONTAINERS = [
    (pod, c) for pod in PODS for c in containers(pod) if modelyard_argv(c) is not None
]


@pytest.mark.parametrize("pod", PODS, ids=[str(p) for p in PODS])
def test_images_are_the_agreed_ones_for_what_they_run(pod: Pod) -> None:
    for container in containers(pod):
        name = image_name(container)
        assert name, f"{pod}: {container['image']!r} is not an agreed image ({IMAGE.pattern})"
        commands = commands_run(container)
        assert commands, f"{pod}: {container['name']} runs no modelyard command"
        assert commands <= IMAGE_COMMANDS[name], f"{pod}: {name} cannot run {commands}"


@pytest.mark.parametrize(
    ("pod", "container"), MODELYARD_CONTAINERS, ids=[str(p) for p, _ in MODELYARD_CONTAINERS]
)
def test_modelyard_command_parses_and_reads_every_variable(
    pod: Pod, container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = modelyard_argv(container)
    assert argv is not None
    env = env_values(container)
    unread = {n for n in env if n.startswith("MODELYARD_")} - read_variables(argv[0])
    assert not unread, f"{pod}: `modelyard {argv[0]}` reads no {sorted(unread)}"
    parse(argv, env, monkeypatch)


def test_shell_scripts_set_only_variables_their_commands_read() -> None:
    for pod in PODS:
        for container in containers(pod):
            if modelyard_argv(container) is None:
                named = {n for n in env_values(container) if n.startswith("MODELYARD_")}
                unread = named - variables_read(container)
                assert not unread, f"{pod}: {commands_run(container)} read no {sorted(unread)}"


def test_an_unknown_variable_or_bad_value_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two checks above would fail on a misspelt variable or a value that does not convert."""
    assert "MODELYARD_MAX_BATCH" in read_variables("serve")
    assert "MODELYARD_MAXBATCH" not in read_variables("serve")
    assert {"MODELYARD_DATA_ROOT", "MLFLOW_TRACKING_URI"} <= read_variables("data")
    assert "MODELYARD_DATA_ROOT" not in read_variables("serve")  # no configuration composed
    with pytest.raises(pytest.fail.Exception):
        parse(["serve"], {"MODELYARD_BUNDLE": "/srv/bundle", "MODELYARD_PORT": "http"}, monkeypatch)


SERVE = list(running("serve"))


@pytest.mark.parametrize(("pod", "container", "argv"), SERVE, ids=[str(p) for p, _, _ in SERVE])
def test_server_probes_listening_and_shutdown(
    pod: Pod,
    container: dict[str, Any],
    argv: list[str],
    serve_routes: set[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probes = {k: container.get(f"{k}Probe") for k in ("liveness", "readiness", "startup")}
    paths = {k: p["httpGet"]["path"] for k, p in probes.items() if p and "httpGet" in p}
    assert paths.get("liveness") == "/health", f"{pod}: liveness must be GET /health"
    # Only /ready turns 503 while draining and while warming up.
    assert {paths.get("readiness"), paths.get("startup")} - {None} == {"/ready"}, pod
    for path in paths.values():
        assert path in serve_routes, f"{pod}: {path} is not a GET route of the server"
        assert path in ALWAYS_OPEN, f"{pod}: {path} needs an API key; a probe has none"

    params = parse(argv, env_values(container), monkeypatch)
    assert params["host"] not in LOOPBACK_BINDS, f"{pod}: listens on {params['host']} only"
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if pod.document.platform == "cloudrun":
        # Cloud Run sets PORT to the containerPort; the server must not be told another one.
        assert not {"PORT", "MODELYARD_PORT"} & set(env_values(container)), pod
        assert len(ports) == 1, f"{pod}: Cloud Run routes to one containerPort"
        # It stops routing before SIGTERM and kills the instance 10 s later: a drain
        # only delays the prediction log's last flush towards that kill.
        assert params["drain_seconds"] == 0, f"{pod}: nothing to drain on Cloud Run"
        return
    assert params["port"] in ports.values(), f"{pod}: listens on {params['port']}, not {ports}"
    for kind, probe in probes.items():
        if probe:
            port = probe["httpGet"]["port"]
            assert ports.get(port, port) == params["port"], f"{pod}: {kind} probe port {port}"

    grace = pod.spec.get("terminationGracePeriodSeconds", 30)
    drain, shutdown = params["drain_seconds"], setting_default("shutdown_timeout_s")
    assert grace > drain + shutdown, (
        f"{pod}: terminationGracePeriodSeconds {grace} <= drain {drain} + shutdown {shutdown}: "
        "SIGKILL would cut requests in flight and the prediction log's last records"
    )


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize(("pod", "container", "argv"), SERVE, ids=[str(p) for p, _, _ in SERVE])
def test_server_threads_fit_the_cpu_limit(
    pod: Pod, container: dict[str, Any], argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    params = parse(argv, env_values(container), monkeypatch)
    limit = container.get("resources", {}).get("limits", {}).get("cpu")
    assert limit, f"{pod}: no CPU limit (ONNX Runtime sizes its threads from it)"
    if params["threads"]:
        assert params["threads"] * params["workers"] <= cpu_cores(str(limit)), pod


def test_the_monitor_reads_the_log_the_api_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    api_logs = {
        pod.document.platform: e["valueFrom"]["secretKeyRef"]
        for pod, container, _ in SERVE
        for e in container.get("env", [])
        if e["name"] == "MODELYARD_PREDICTION_LOG"
    }
    monitors = list(running("monitor"))
    assert monitors, "no container runs `modelyard monitor`"
    for pod, container, _ in monitors:
        raw = [*container.get("command", [])[1:], *container.get("args", [])]
        reference = re.fullmatch(r"\$\((\w+)\)", raw[raw.index("--log") + 1])
        assert reference, f"{pod}: --log should come from a Secret, as $(VARIABLE)"
        source = next(e for e in container["env"] if e["name"] == reference[1])
        assert source["valueFrom"]["secretKeyRef"] == api_logs[pod.document.platform], pod


MONITOR_SERVICES = [m for m in running("monitor") if "--serve" in m[2]]


@pytest.mark.parametrize(
    ("pod", "container", "argv"), MONITOR_SERVICES, ids=[str(p) for p, _, _ in MONITOR_SERVICES]
)
def test_monitor_service_probes_and_port(
    pod: Pod, container: dict[str, Any], argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    params = parse(argv, env_values(container), monkeypatch)
    assert params["host"] not in LOOPBACK_BINDS, pod
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    assert params["port"] in ports.values(), pod
    routes = monitor_routes()
    for kind in ("liveness", "readiness"):
        probe = container[f"{kind}Probe"]["httpGet"]
        assert probe["path"] in routes, f"{pod}: {probe['path']} is not a route of the monitor"
        assert ports.get(probe["port"], probe["port"]) == params["port"], pod


# --- Kubernetes objects that point at each other ------------------------------------------------


def workloads() -> dict[str, Document]:
    return {d.name: d for d in documents("Deployment")}


def pods_matching(labels: dict[str, str]) -> list[Pod]:
    found = [
        pod
        for doc in workloads().values()
        for pod in pods_of(doc)
        if labels.items() <= doc.body["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert found, f"no Deployment's pods carry the labels {labels}"
    return found


def port_names(pod: Pod) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in containers(pod) for p in c.get("ports", [])}


@pytest.mark.parametrize("doc", documents("Deployment"), ids=doc_ids(documents("Deployment")))
def test_deployment_selects_its_own_pods(doc: Document) -> None:
    selector = doc.body["spec"]["selector"]["matchLabels"]
    assert selector.items() <= doc.body["spec"]["template"]["metadata"]["labels"].items()


SERVICES = [d for d in documents("Service") if d.platform == "kubernetes"]


@pytest.mark.parametrize("doc", SERVICES, ids=doc_ids(SERVICES))
def test_service_reaches_a_container_port(doc: Document) -> None:
    for pod in pods_matching(doc.body["spec"]["selector"]):
        for port in doc.body["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in port_names(pod) or target in port_names(pod).values(), doc


@pytest.mark.parametrize("doc", documents("PodMonitor"), ids=doc_ids(documents("PodMonitor")))
def test_pod_monitor_scrapes_a_metrics_route(doc: Document, serve_routes: set[str]) -> None:
    for pod in pods_matching(doc.body["spec"]["selector"]["matchLabels"]):
        commands = {argv[0] for c in containers(pod) if (argv := modelyard_argv(c))}
        routes = serve_routes if commands == {"serve"} else monitor_routes()
        assert (
            doc.body["spec"].get("jobLabel", "")
            in pod.document.body["spec"]["template"]["metadata"]["labels"]
        ), doc
        for endpoint in doc.body["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in port_names(pod), f"{doc}: no port {endpoint['port']}"
            assert endpoint["path"] in routes, f"{doc}: {endpoint['path']} is not a route"


def test_autoscaler_and_disruption_budget_point_at_the_api() -> None:
    for hpa in documents("HorizontalPodAutoscaler"):
        target = hpa.body["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in workloads(), hpa
        deployment = workloads()[target["name"]]
        # Utilisation is measured against requests: every container needs a CPU request.
        for pod in pods_of(deployment):
            for container in containers(pod):
                assert container["resources"]["requests"]["cpu"], hpa
    for budget in documents("PodDisruptionBudget"):
        pods_matching(budget.body["spec"]["selector"]["matchLabels"])


def service_link_variables(service: dict[str, Any]) -> set[str]:
    """The variables Kubernetes puts into every later pod of the namespace for a Service (docker
    links style), unless the pod sets ``enableServiceLinks: false``."""
    base = service["metadata"]["name"].upper().replace("-", "_")
    names = {f"{base}_SERVICE_HOST", f"{base}_SERVICE_PORT", f"{base}_PORT"}
    for port in service["spec"]["ports"]:
        if "name" in port:
            names.add(f"{base}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}")
        prefix = f"{base}_PORT_{port['port']}_{port.get('protocol', 'TCP')}"
        names |= {prefix, f"{prefix}_PROTO", f"{prefix}_PORT", f"{prefix}_ADDR"}
    return names


def link_collisions(services: list[dict[str, Any]]) -> list[str]:
    found = []
    for pod in PODS:
        if pod.document.platform != "kubernetes" or pod.spec.get("enableServiceLinks") is False:
            continue
        for container in containers(pod):
            for service in services:
                for name in sorted(service_link_variables(service) & variables_read(container)):
                    found.append(f"{pod}: Service {service['metadata']['name']} sets {name}")
    return found


def test_no_service_link_variable_sets_an_option() -> None:
    assert not link_collisions([d.body for d in SERVICES])


def test_a_service_named_like_an_option_prefix_would_be_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Service called ``modelyard`` sets MODELYARD_PORT=tcp://... in pods with service links."""
    named = {"metadata": {"name": "modelyard"}, "spec": {"ports": [{"port": 80}]}}
    assert "MODELYARD_PORT" in service_link_variables(named)
    for pod in PODS:  # as if every pod left service links on
        monkeypatch.setitem(pod.spec, "enableServiceLinks", True)
    assert any("MODELYARD_PORT" in line for line in link_collisions([named]))


KUBERNETES_PODS = [p for p in PODS if p.document.platform == "kubernetes"]


@pytest.mark.parametrize("pod", KUBERNETES_PODS, ids=[str(p) for p in KUBERNETES_PODS])
def test_pods_have_resources_and_servers_run_unprivileged(pod: Pod) -> None:
    """Every container asks for CPU and memory (the scheduler and the autoscaler need it); the
    serving pods (serve and app images) run as the image's user 10001 on a read-only root
    filesystem, with every path they write to on a volume. Training pods write their data and
    runs as the train image's user where their volumes are."""
    for container in containers(pod):
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), pod
    if {image_name(c) for c in containers(pod)} == {"modelyard-train"}:
        return
    security = pod.spec.get("securityContext", {})
    assert security.get("runAsNonRoot") and security.get("runAsUser") == 10001, pod
    for container in containers(pod):
        own = container.get("securityContext", {})
        assert own.get("readOnlyRootFilesystem") and own.get("allowPrivilegeEscalation") is False
        mounts = [Path(m["mountPath"]) for m in container.get("volumeMounts", [])]
        env = env_values(container)
        for name in WRITABLE_PATH_VARIABLES:
            if name in env:
                path = Path(env[name])
                assert any(path.is_relative_to(m) for m in mounts), f"{pod}: {name} not mounted"
        assert "memory" in container["resources"].get("limits", {}), pod


# --- training specs ----------------------------------------------------------------------------


def test_pytorchjob_world_size_matches_pods_and_gpus() -> None:
    (job,) = documents("PyTorchJob")
    replicas = job.body["spec"]["pytorchReplicaSpecs"]
    for pod in pods_of(job):
        (trainer,) = [c for c in pod.spec["containers"] if c["name"] == "pytorch"]
        env = env_values(trainer)
        assert int(env["NNODES"]) == sum(r["replicas"] for r in replicas.values())
        assert env["NPROC_PER_NODE"] == str(trainer["resources"]["limits"]["nvidia.com/gpu"])
        assert image_name(trainer) == "modelyard-train"


def test_vertex_job_uses_every_gpu_it_asks_for() -> None:
    for job in documents("CustomJobSpec"):
        for pool in job.body["workerPoolSpecs"]:
            script = " ".join(pool["containerSpec"].get("args", []))
            devices = re.search(r"trainer\.devices=(\d+)", script)
            count = pool["machineSpec"].get("acceleratorCount")
            assert devices and count and int(devices[1]) == count, job
            assert image_name(vertex_container(pool)) == "modelyard-train"


def test_cloud_build_pushes_the_agreed_images() -> None:
    build = yaml.safe_load((DEPLOY / "cloudbuild.yaml").read_text())
    tags = {
        arg.removeprefix("--tag=")
        for step in build["steps"]
        for arg in step["args"]
        if arg.startswith("--tag=")
    }
    assert tags == set(build["images"])
    names = {re.sub(r"^.*/([^/:]+):.*$", r"\1", tag) for tag in tags}
    assert names == set(IMAGE_COMMANDS)
    dockerfiles = {
        arg.removeprefix("--file=")
        for step in build["steps"]
        for arg in step["args"]
        if arg.startswith("--file=")
    }
    assert dockerfiles == {"docker/serve.Dockerfile", "docker/train.Dockerfile"}
