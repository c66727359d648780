"""The ``modelyard`` command line: one command per stage, thin wrappers around ``stages.*.run``.

Commands that take a configuration accept Hydra overrides as trailing arguments, e.g.
``modelyard train experiment=baseline trainer.max_epochs=20``. Heavy imports (torch, Lightning)
happen inside the commands that need them, so ``serve`` and ``predict`` never load torch.
"""

import json
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from modelyard.cli_environment import (
    APP_PREFIX,
    MONITOR_PREFIX,
    SERVE_PREFIX,
    from_environment,
    port_variables,
)
from modelyard.core.bundle_integrity import KEY_FILE_ENV
from modelyard.core.config_dir import CONFIG_DIR_ENV, DEFAULT_CONFIG_DIR
from modelyard.core.errors import ModelyardError
from modelyard.serving.settings import setting_default as _serving

console = Console(stderr=True)
app = typer.Typer(
    help="modelyard: from raw data to a tested prediction service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch and prepare datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bundle_app = typer.Typer(help="Verify and sign model bundles.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")
init_app = typer.Typer(
    help="Write a project config for your own data into the config folder (./conf).",
    no_args_is_help=True,
)
app.add_typer(init_app, name="init")


@app.callback()
def main_options(
    config_dir: Annotated[
        Path | None,
        typer.Option(
            help=f"Your own configuration folder (project/<name>.yaml, ...), searched after the "
            f"shipped one; default ./{DEFAULT_CONFIG_DIR} when it exists",
            envvar=CONFIG_DIR_ENV,
            show_default=False,
        ),
    ] = None,
) -> None:
    """modelyard: from raw data to a tested prediction service."""
    if config_dir is not None:
        # the one place it is read (core/config_dir.py); processes started later inherit it
        os.environ[CONFIG_DIR_ENV] = str(config_dir.expanduser().resolve())


SOURCE_HELP = "URL or directory; default project.data.source"
MODEL_HELP = "Run or bundle directory; default the latest run"
EVAL_SOURCE_HELP = "Raw data to evaluate on (e.g. an unseen house); default the test houses"
METRICS_HELP = "Metrics JSON path; default inside the run"
BUNDLE_OUT_HELP = "Bundle directory; default bundles/<version>"
KEY_FILE_HELP = "File holding the bundle signing key (>= 32 bytes, e.g. openssl rand -hex 32)"
VerifyKeyFile = Annotated[
    Path | None,
    typer.Option(help=f"Verify bundle signatures: {KEY_FILE_HELP}", envvar=KEY_FILE_ENV),
]
RequireSignature = Annotated[
    bool, typer.Option(help="Refuse a bundle that is not signed with the key given")
]


#: A command that talks to a server needing a key (its own environment variable each).
CLIENT_KEY_HELP = "API key for a server that needs one (better set in the environment)"
LoadtestApiKey = Annotated[
    str | None,
    typer.Option(help=CLIENT_KEY_HELP, envvar="MODELYARD_LOADTEST_API_KEY", show_default=False),
]
UiApiKey = Annotated[
    str | None,
    typer.Option(help=CLIENT_KEY_HELP, envvar="MODELYARD_UI_API_KEY", show_default=False),
]

Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Hydra overrides, e.g. experiment=quick trainer.max_epochs=3", show_default=False
    ),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error as one clear line and exit 2, instead of a traceback."""
    try:
        yield
    except ModelyardError as exc:
        # escaped: a message may hold brackets (``modelyard[ui]``) that are not Rich markup
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(code=130) from None


def _config(overrides: list[str] | None) -> Any:
    from modelyard.core.config import load_config

    return load_config(overrides or [])


def _print_json(title: str, payload: dict[str, Any]) -> None:
    console.print(f"[bold]{title}[/]")
    typer.echo(json.dumps(payload, indent=2, default=str))


NAME_HELP = "Project name (names the data, run and bundle folders and the served model)"
INIT_DIR_HELP = (
    f"Configuration folder to write to; default --config-dir, else ./{DEFAULT_CONFIG_DIR}"
)
FORCE_HELP = "Overwrite an existing project file"


def _report_init(result: Any) -> None:
    console.print(f"wrote {result.path}", highlight=False, soft_wrap=True)
    for fact in result.facts:
        console.print(f"  {fact}", markup=False, highlight=False, soft_wrap=True)
    console.print("next:", highlight=False)
    for step in result.next_steps:
        console.print(f"  {step}", markup=False, highlight=False, soft_wrap=True)


@init_app.command("image")
def init_image(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    source: Annotated[
        Path, typer.Option(help="Folder (or zip) with one subfolder of images per class")
    ],
    dir: Annotated[Path | None, typer.Option("--dir", help=INIT_DIR_HELP)] = None,
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """An image classification project: classes and image counts read from the folders."""
    with user_errors():
        from modelyard.stages import init_project

        _report_init(init_project.init_image(name, source, dir, force))


@init_app.command("table")
def init_table(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    source: Annotated[Path, typer.Option(help="CSV file with a header line")],
    target: Annotated[
        str | None, typer.Option(help="Column to predict (numeric); default a suggestion")
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(help="Column that is not a feature, e.g. one giving the target away (repeat)"),
    ] = None,
    dir: Annotated[Path | None, typer.Option("--dir", help=INIT_DIR_HELP)] = None,
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """A table regression project: columns, types, ranges and a target read from the CSV."""
    with user_errors():
        from modelyard.stages import init_project

        _report_init(init_project.init_table(name, source, target, dir, force, ignore or []))


@init_app.command("nilm")
def init_nilm(
    name: Annotated[str, typer.Argument(help=NAME_HELP)],
    source: Annotated[
        Path,
        typer.Option(
            help="Folder with one subfolder of CSV / CSV.gz files per house, or a NILMTK HDF5 file"
        ),
    ],
    mains: Annotated[
        str | None,
        typer.Option(help="Whole-house mains column of the CSV files; default Aggregate"),
    ] = None,
    appliance: Annotated[
        list[str] | None,
        typer.Option(help="Appliance to model (repeat); default every one all houses meter"),
    ] = None,
    test_house: Annotated[
        list[str] | None,
        typer.Option(help="House held out for testing (repeat); default the smallest house"),
    ] = None,
    dir: Annotated[Path | None, typer.Option("--dir", help=INIT_DIR_HELP)] = None,
    force: Annotated[bool, typer.Option(help=FORCE_HELP)] = False,
) -> None:
    """A NILM project: houses, appliances, thresholds and the house split read from the data."""
    with user_errors():
        from modelyard.stages import init_project

        _report_init(
            init_project.init_nilm(
                name, source, dir, force, mains, appliance or [], test_house or []
            )
        )


@data_app.command("fetch")
def data_fetch(
    overrides: Overrides = None,
    source: Annotated[str | None, typer.Option(help=SOURCE_HELP)] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even when files are present")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Bring the project's raw data into the working directory (checksummed, atomic)."""
    with user_errors():
        from modelyard.stages import fetch

        report = fetch.run(_config(overrides), source=source, force=force, progress=progress)
        console.print(
            f"fetched {len(report.fetched)} file(s) ({report.total_bytes:,} bytes), "
            f"{len(report.skipped)} already present -> {report.destination}"
        )


@data_app.command("prepare")
def data_prepare(
    overrides: Overrides = None,
    source: Annotated[Path | None, typer.Option(help="Raw data; default the fetched data")] = None,
) -> None:
    """Align, clean and store the raw data in the form training reads."""
    with user_errors():
        from modelyard.stages import prepare

        summary = prepare.run(_config(overrides), source=source)
        _print_json("prepared", summary)
        for warning in summary.get("warnings", []):
            console.print(f"[yellow]warning: {escape(str(warning))}[/]", highlight=False)


@app.command()
def train(overrides: Overrides = None) -> None:
    """Train a model (Lightning, or LightGBM for tables); prints where the run is."""
    with user_errors():
        # The configuration first: a mistyped override is reported before torch and Lightning
        # load (a second instead of five on 2 cores).
        cfg = _config(overrides)
        from modelyard.stages import train as train_stage

        result = train_stage.run(cfg)
        if not train_stage.is_main_process():
            return  # the other DDP ranks: rank 0 reports
        console.print(
            f"run: {result.run_dir}\nbest checkpoint: {result.checkpoint} "
            f"({result.monitor} {result.best_score}) after {result.epochs} "
            f"epoch(s) or boosting round(s), {result.duration_s:.1f} s"
        )


@app.command()
def evaluate(
    overrides: Overrides = None,
    model: Annotated[Path | None, typer.Option(help=MODEL_HELP)] = None,
    source: Annotated[
        Path | None,
        typer.Option(help=EVAL_SOURCE_HELP),
    ] = None,
    output: Annotated[Path | None, typer.Option(help=METRICS_HELP)] = None,
) -> None:
    """Score a model next to a trivial baseline; writes metrics JSON and plots."""
    with user_errors():
        from modelyard.core.families import load_task
        from modelyard.stages import evaluate as evaluate_stage

        cfg = _config(overrides)
        metrics, path = evaluate_stage.run(cfg, model=model, source=source, output=output)
        _print_json("headline", load_task(cfg).headline(metrics))
        console.print(f"metrics: {path}")


@app.command()
def export(
    overrides: Overrides = None,
    run: Annotated[Path | None, typer.Option(help="Training run directory; default latest")] = None,
    output: Annotated[Path | None, typer.Option(help=BUNDLE_OUT_HELP)] = None,
    tolerance: Annotated[float, typer.Option(help="Max |ONNX - torch| allowed")] = 1e-4,
    metrics: Annotated[
        Path | None, typer.Option(help="Metrics JSON for the manifest; default the run's own")
    ] = None,
    quantize: Annotated[
        bool | None,
        typer.Option(
            "--quantize/--no-quantize",
            help="Also write an INT8 model, scored on the evaluation data; default export.quantize",
            show_default=False,
        ),
    ] = None,
    quantize_tolerance: Annotated[
        float | None,
        typer.Option(
            help="Largest relative worsening of a gate metric for the INT8 model to be served "
            "(0.01 = 1 %); default export.quantize_tolerance",
            show_default=False,
        ),
    ] = None,
    sign_key_file: Annotated[
        Path | None, typer.Option(help=f"Sign the bundle: {KEY_FILE_HELP}", envvar=KEY_FILE_ENV)
    ] = None,
) -> None:
    """Export a run to a bundle: model.onnx + manifest.json, parity-checked (+ INT8 model)."""
    with user_errors():
        from modelyard.projects.quantization import verdict
        from modelyard.stages import export as export_stage

        bundle = export_stage.run(
            _config(overrides),
            run_dir=run,
            output=output,
            tolerance=tolerance,
            metrics=metrics,
            quantize=quantize,
            quantize_tolerance=quantize_tolerance,
            sign_key_file=sign_key_file,
        )
        parity = bundle.manifest.parity
        console.print(
            f"bundle: {bundle.path} (version {bundle.manifest.version}, "
            f"parity max |diff| {parity.max_abs_diff if parity else 'n/a'}, "
            f"{'signed' if bundle.trust.signed else 'not signed'})"
        )
        quantization = bundle.manifest.quantization
        if quantization is not None:
            style = "green" if quantization.within_tolerance else "bold yellow"
            console.print(f"[{style}]{verdict(quantization)}[/]", highlight=False, soft_wrap=True)


PORT_HELP = "TCP port (else $PORT, which Cloud Run sets)"
BUNDLE_HELP = "Bundle directory, or a registry reference such as models:/nilm@production"
REGISTRY_URI_HELP = (
    "Registry for models:/ references; default $MLFLOW_REGISTRY_URI or the embedded store"
)


PREDICTION_LOG_HELP = (
    "SQLAlchemy URL of the prediction log (postgresql+psycopg://... for PostgreSQL); "
    "'none' to log nothing. Default: SQLite in the working directory"
)


@app.command(**from_environment(SERVE_PREFIX))
def serve(
    bundle: Annotated[str, typer.Argument(help=BUNDLE_HELP, envvar=f"{SERVE_PREFIX}_BUNDLE")],
    host: Annotated[str, typer.Option(help="Interface to listen on")] = _serving("host"),
    port: Annotated[
        int, typer.Option(help=PORT_HELP, envvar=port_variables(SERVE_PREFIX))
    ] = _serving("port"),
    workers: Annotated[int, typer.Option(help="Worker processes sharing the port")] = _serving(
        "workers"
    ),
    threads: Annotated[
        int, typer.Option(help="ONNX Runtime threads per worker (0 = cores / workers)")
    ] = _serving("threads"),
    max_batch: Annotated[int, typer.Option(help="Most model rows in one micro-batch")] = _serving(
        "max_batch"
    ),
    max_wait_ms: Annotated[
        float, typer.Option(help="Longest a micro-batch waits for more requests")
    ] = _serving("max_wait_ms"),
    batching: Annotated[bool, typer.Option(help="Micro-batch concurrent requests")] = _serving(
        "batching"
    ),
    quantized: Annotated[
        bool, typer.Option(help="Serve the bundle's INT8 model (only if within tolerance)")
    ] = _serving("quantized"),
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body (413 above)")
    ] = _serving("max_body_bytes"),
    request_timeout: Annotated[float, typer.Option(help="Seconds before a 504")] = _serving(
        "request_timeout_s"
    ),
    max_concurrency: Annotated[
        int, typer.Option(help="Requests in flight per worker before 503 + Retry-After")
    ] = _serving("max_concurrency"),
    prediction_log: Annotated[str | None, typer.Option(help=PREDICTION_LOG_HELP)] = None,
    spool_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where unwritten prediction-log records wait on disk (default: beside the "
            "SQLite file, or under the working directory)"
        ),
    ] = None,
    log_flush_interval: Annotated[
        float,
        typer.Option(help="Longest a logged prediction waits in memory before it is written"),
    ] = _serving("log_flush_interval_s"),
    log_batch_size: Annotated[
        int, typer.Option(help="Most prediction-log records in one insert")
    ] = _serving("log_batch_size"),
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allowed CORS origin (repeatable); default CORS off")
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            help="API keys, one per line (name:key to name one); keys are also read from "
            "$MODELYARD_API_KEYS. With any key, every route but the probes needs one",
            envvar="MODELYARD_API_KEY_FILE",
        ),
    ] = None,
    metrics_public: Annotated[
        bool, typer.Option(help="/metrics needs no API key (for a scraper without one)")
    ] = _serving("metrics_public"),
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Host header value served (repeatable; *.domain and * allowed); default the "
            "loopback names on a loopback --host, else any host"
        ),
    ] = None,
    docs: Annotated[
        bool, typer.Option(help="Serve /docs and /redoc (assets served locally)")
    ] = _serving("docs"),
    ssl_certfile: Annotated[
        Path | None,
        typer.Option(help="TLS certificate (PEM); password: $MODELYARD_SSL_KEYFILE_PASSWORD"),
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
    proxy_headers: Annotated[
        bool, typer.Option(help="Trust X-Forwarded-For/-Proto from --forwarded-allow-ips")
    ] = _serving("proxy_headers"),
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(
            help="Proxy addresses trusted for X-Forwarded-* (comma-separated, or *)",
            envvar="FORWARDED_ALLOW_IPS",  # uvicorn's own variable
        ),
    ] = _serving("forwarded_allow_ips"),
    log_format: Annotated[str, typer.Option(help="json or text")] = _serving("log_format"),
    access_log: Annotated[bool, typer.Option(help="One log line per request")] = _serving(
        "access_log"
    ),
    drain_seconds: Annotated[
        float,
        typer.Option(help="After SIGTERM, seconds of serving with /ready 503 before stopping"),
    ] = _serving("drain_s"),
    min_length: Annotated[int | None, typer.Option(help="Shortest accepted series")] = None,
    max_length: Annotated[int | None, typer.Option(help="Longest accepted series")] = None,
    log_level: Annotated[str, typer.Option(help="Log level")] = _serving("log_level"),
    registry_uri: Annotated[str | None, typer.Option(help=REGISTRY_URI_HELP)] = None,
    bundle_key_file: VerifyKeyFile = None,
    require_signature: RequireSignature = False,
    follow: Annotated[
        bool,
        typer.Option(
            help="Watch the models:/NAME@ALIAS served and swap to each version it is moved to, "
            "without a restart (docs/serving.md)"
        ),
    ] = False,
    follow_interval: Annotated[
        float, typer.Option(help="Seconds between looks at the followed alias")
    ] = _serving("follow_interval_s"),
) -> None:
    """Serve a bundle over HTTP (FastAPI + ONNX Runtime; no torch). See docs/serving.md."""
    with user_errors(), ExitStack() as stack:
        from modelyard.registry.resolve import served_bundle
        from modelyard.serving.api_keys import API_KEYS_ENV
        from modelyard.serving.hosts import default_allowed_hosts
        from modelyard.serving.server import serve as run_server
        from modelyard.serving.settings import build_settings

        if prediction_log is None:
            prediction_log = default_prediction_log()
        follow_file = None
        if follow:
            followed = stack.enter_context(_follow(bundle, registry_uri, follow_interval))
            served, follow_file = followed.bundle, str(followed.state_file)
            registry = followed.registry
        else:
            served, registry = served_bundle(bundle, registry_uri)
        settings = build_settings(
            bundle=str(served),
            registry=registry,
            follow_file=follow_file,
            follow_interval_s=follow_interval,
            overrides={"min_length": min_length, "max_length": max_length},
            bundle_key_file=None if bundle_key_file is None else str(bundle_key_file.resolve()),
            require_signature=require_signature,
            host=host,
            port=port,
            workers=workers,
            threads=threads,
            batching=batching,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_body_bytes=max_body_bytes,
            request_timeout_s=request_timeout,
            max_concurrency=max_concurrency,
            quantized=quantized,
            prediction_log=None if prediction_log.lower() == "none" else prediction_log,
            spool_dir=spool_dir,
            log_flush_interval_s=log_flush_interval,
            log_batch_size=log_batch_size,
            cors_origins=_cleaned(cors_origin),
            api_key_file=api_key_file,
            api_key_env=API_KEYS_ENV,
            metrics_public=metrics_public,
            allowed_hosts=_cleaned(allowed_host) or default_allowed_hosts(host),
            docs=docs,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
            log_format=log_format,
            log_level=log_level.lower(),
            access_log=access_log,
            drain_s=drain_seconds,
        )
        if workers > 1:  # a bad bundle: one clear error here, not one traceback per worker
            _check_servable(settings)
        run_server(settings)


def _follow(bundle: str, registry_uri: str | None, interval_s: float) -> Any:
    """``serve --follow``: the alias watched from here, its state handed to the workers."""
    from modelyard.core.errors import ConfigError
    from modelyard.registry.alias_watch import follow_alias
    from modelyard.registry.references import is_reference
    from modelyard.registry.resolve import serving_registry

    if not is_reference(bundle):
        raise ConfigError(f"--follow needs a registry alias (models:/NAME@ALIAS), not {bundle}")
    return follow_alias(bundle, serving_registry(registry_uri), interval_s)


def default_prediction_log() -> str:
    """Where ``serve`` logs, and so where ``monitor`` reads, when no URL is given."""
    from modelyard.core.runs import default_workdir

    return f"sqlite:///{(default_workdir() / 'predictions.db').resolve()}"


def _cleaned(values: list[str] | None) -> list[str]:
    return [v.strip() for v in values or [] if v.strip()]


def _open_adapter(settings: Any) -> Any:
    """The task adapter as a server worker builds it from ``settings`` (without micro-batching):
    the bundle's files and digest, the signature policy, the model's tensors against the
    manifest and the task's facts against the tensors are checked on the way. ``serve`` calls it
    before starting workers, ``predict`` predicts with it."""
    from modelyard.core.bundle import load_bundle
    from modelyard.serving.adapter import build_adapter
    from modelyard.serving.runtime import intra_op_threads, open_served_model

    loaded = load_bundle(Path(settings.bundle))
    model = open_served_model(loaded, settings, intra_op_threads(settings.threads))
    return build_adapter(loaded, model, settings.overrides)


def _check_servable(settings: Any) -> Any:
    """Everything a worker checks before it serves (see :func:`_open_adapter`); returns the
    verified bundle."""
    return _open_adapter(settings).bundle


@bundle_app.command("verify")
def bundle_verify(
    path: Annotated[Path, typer.Argument(help="Bundle directory")],
    key_file: VerifyKeyFile = None,
    require_signature: RequireSignature = False,
    quantized: Annotated[bool, typer.Option(help="Check the INT8 model as the one served")] = False,
) -> None:
    """Check a bundle as `serve` would: files, sha256s, manifest digest, signature, tensors."""
    with user_errors():
        from modelyard.serving.settings import build_settings

        settings = build_settings(
            bundle=str(path),
            bundle_key_file=None if key_file is None else str(key_file),
            require_signature=require_signature,
            quantized=quantized,
        )
        trust = _check_servable(settings).trust
        key = f" (key {trust.key_id})" if trust.key_id else ""
        console.print(f"{path}: OK, {trust.state}{key}", highlight=False, soft_wrap=True)


@bundle_app.command("sign")
def bundle_sign(
    path: Annotated[Path, typer.Argument(help="Bundle directory")],
    key_file: Annotated[Path, typer.Option(help=KEY_FILE_HELP, envvar=KEY_FILE_ENV)],
    accept_edits: Annotated[
        bool, typer.Option(help="The manifest was edited on purpose: sign its current content")
    ] = False,
) -> None:
    """Sign a bundle's manifest (HMAC-SHA256); a legacy bundle gets its integrity record."""
    with user_errors():
        from modelyard.core.bundle import reseal_bundle
        from modelyard.core.bundle_integrity import BundleKey

        sealed = reseal_bundle(path, BundleKey.from_file(key_file), accept_edits)
        console.print(
            f"{path}: signed with key {sealed.trust.key_id}", highlight=False, soft_wrap=True
        )


@bundle_app.command("seal")
def bundle_seal(
    path: Annotated[Path, typer.Argument(help="Bundle directory")],
    accept_edits: Annotated[
        bool, typer.Option(help="The manifest was edited on purpose: record its current content")
    ] = False,
) -> None:
    """Record a fresh content digest without a key (an existing signature is dropped)."""
    with user_errors():
        from modelyard.core.bundle import reseal_bundle

        sealed = reseal_bundle(path, None, accept_edits)
        console.print(
            f"{path}: sealed, digest {sealed.trust.digest} (not signed)",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def predict(
    bundle: Annotated[str, typer.Argument(help=BUNDLE_HELP)],
    source: Annotated[Path, typer.Argument(help="Input CSV (or folder, per project)")],
    output: Annotated[Path, typer.Argument(help="Output CSV")],
    registry_uri: Annotated[str | None, typer.Option(help=REGISTRY_URI_HELP)] = None,
) -> None:
    """Offline batch prediction with a bundle: file in, CSV out (no server, no torch)."""
    with user_errors():
        from modelyard.registry.resolve import bundle_path
        from modelyard.serving.settings import build_settings

        settings = build_settings(bundle=str(bundle_path(bundle, registry_uri)))
        rows = _open_adapter(settings).predict_file(source, output)
        console.print(f"wrote {rows} row(s) to {output}")


@app.command(**from_environment(MONITOR_PREFIX))
def monitor(
    bundle: Annotated[str, typer.Argument(help=BUNDLE_HELP, envvar=f"{MONITOR_PREFIX}_BUNDLE")],
    log: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of the prediction log; default the one `serve` writes"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Window start: an ISO time or a duration back from now (24h, 7d)"),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option(help="Window: the newest N predictions (default 10,000 without --since)"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Directory for report.html, report.json, verdict.json"),
    ] = None,
    drift_share: Annotated[
        float, typer.Option(help="Share of drifted columns that makes dataset drift")
    ] = 0.5,
    accuracy_tolerance: Annotated[
        float,
        typer.Option(help="Largest relative worsening of a realised metric vs the promoted one"),
    ] = 0.05,
    min_feedback: Annotated[
        int, typer.Option(help="Predictions with truth needed to judge realised accuracy")
    ] = 30,
    webhook: Annotated[
        str | None,
        typer.Option(
            help="POST an alert here (a GitHub .../dispatches URL uses $GITHUB_TOKEN)",
            envvar="MODELYARD_MONITOR_WEBHOOK",
        ),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Run the monitoring service (/, /drift, /metrics)")
    ] = False,
    host: Annotated[str, typer.Option(help="--serve: interface to listen on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help=f"--serve: {PORT_HELP}", envvar=port_variables(MONITOR_PREFIX))
    ] = 8001,
    every: Annotated[str, typer.Option(help="--serve: recompute every (e.g. 10m, 1h)")] = "10m",
    registry_uri: Annotated[str | None, typer.Option(help=REGISTRY_URI_HELP)] = None,
) -> None:
    """Drift, data quality and realised accuracy of the logged predictions (Evidently report).

    Exit 0: no drift; 1: drift, or realised accuracy below the promoted value; 2: usage or data
    error. See docs/monitoring.md."""
    with user_errors():
        from modelyard.monitoring.check import MonitorSettings
        from modelyard.stages import monitor as monitor_stage

        settings = MonitorSettings(
            bundle=monitor_stage.open_bundle(bundle, registry_uri),
            log_url=log or default_prediction_log(),
            since=since,
            last=last,
            drift_share=drift_share,
            accuracy_tolerance=accuracy_tolerance,
            min_feedback=min_feedback,
        )
        if serve:
            console.print(f"monitoring service on http://{host}:{port} (every {every})")
            monitor_stage.serve(settings, host, port, every, output, webhook)
            return
        outcome = monitor_stage.run(settings, output, webhook)
    verdict = outcome.verdict
    drift = verdict["drift"]
    console.print(
        f"window: {verdict['window']['predictions']} predictions "
        f"({verdict['window']['first_at']} .. {verdict['window']['last_at']}); "
        f"drifted columns {drift['drifted_columns'] or 'none'} (share {drift['share']:.2f})",
        highlight=False,
        soft_wrap=True,
    )
    for reason in verdict["reasons"]:
        console.print(f"[bold red]ALERT[/] {reason}", highlight=False, soft_wrap=True)
    if outcome.webhook is not None:
        console.print(f"webhook {outcome.webhook.url}: {outcome.webhook.detail}", highlight=False)
    console.print(f"verdict: {outcome.verdict_path}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=outcome.exit_code)


@app.command()
def loadtest(
    url: Annotated[str, typer.Argument(help="Server on this machine, e.g. http://127.0.0.1:8000")],
    project: Annotated[
        str | None,
        typer.Option(help="Project the server must be serving (a check); default any project"),
    ] = None,
    users: Annotated[int, typer.Option(help="Concurrent simulated clients")] = 50,
    spawn_rate: Annotated[float, typer.Option(help="Clients started per second")] = 10.0,
    duration: Annotated[
        float, typer.Option(help="Seconds of load (rounded up to whole seconds)")
    ] = 30.0,
    output: Annotated[
        Path | None, typer.Option(help="Report directory; default .modelyard/loadtests/<run>")
    ] = None,
    nilm_length: Annotated[
        str,
        typer.Option(
            help="NILM series length: window, day or a number of readings",
            envvar="MODELYARD_LOADTEST_NILM_LENGTH",
        ),
    ] = "window",
    images: Annotated[
        Path | None,
        typer.Option(
            help="Folder of real images to upload (vision)", envvar="MODELYARD_LOADTEST_IMAGES"
        ),
    ] = None,
    request_log: Annotated[
        Path | None,
        typer.Option(
            help="Append the id of each successful prediction here",
            envvar="MODELYARD_LOADTEST_REQUEST_LOG",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the generated payloads", envvar="MODELYARD_LOADTEST_SEED")
    ] = 0,
    api_key: LoadtestApiKey = None,
) -> None:
    """Load-test a local server with Locust (headless); CSV + HTML report. Exit 1 on failures."""
    with user_errors():
        from modelyard.loadtest.options import LoadOptions
        from modelyard.loadtest.runner import run_loadtest

        options = LoadOptions(
            seed=seed,
            nilm_length=nilm_length,
            images=images,
            request_log=request_log,
            api_key=api_key,
        )
        summary = run_loadtest(url, project, users, spawn_rate, duration, output, options)
        for line in summary.describe():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if not summary.passed:
            raise typer.Exit(code=1)


@app.command()
def demo(
    overrides: Overrides = None,
    source: Annotated[str | None, typer.Option(help=SOURCE_HELP)] = None,
) -> None:
    """fetch -> prepare -> train (quick) -> evaluate -> export -> serve -> one HTTP prediction."""
    with user_errors():
        from modelyard.stages import demo as demo_stage

        overrides = overrides or []
        if not any(o.startswith("experiment=") for o in overrides):
            overrides = ["experiment=quick", *overrides]
        summary = demo_stage.run(_config(overrides), source=source, log=console.print)
        _print_json("demo summary", summary)


@app.command()
def sweep(
    overrides: Overrides = None,
    name: Annotated[str | None, typer.Option(help="Study name (re-use to resume)")] = None,
    trials: Annotated[
        int | None, typer.Option(help="Number of trials; default sweep.n_trials")
    ] = None,
    register_best: Annotated[
        bool, typer.Option(help="Evaluate, export and register the best trial")
    ] = False,
) -> None:
    """Hyperparameter search (Optuna TPE, median pruning) over sweep/<project>.yaml."""
    with user_errors():
        from modelyard.stages import sweep as sweep_stage

        result = sweep_stage.run(
            overrides or [],
            name=name,
            n_trials=trials,
            register_best=register_best,
            log=console.print,
        )
        states = [t["state"] for t in result.trials]
        console.print(
            f"sweep: {result.directory} ({states.count('COMPLETE')} complete, "
            f"{states.count('PRUNED')} pruned)\nbest: {result.best_value:.5g} with "
            f"{' '.join(result.best_overrides)}\nbest config: {result.directory / 'best.yaml'}"
        )
        if result.registered:
            console.print(f"registered: {result.registered}")


@app.command()
def crossval(
    overrides: Overrides = None,
    name: Annotated[
        str | None, typer.Option(help="Name of the cross-validation folder; default a timestamp")
    ] = None,
) -> None:
    """k-fold cross-validation of an image project (cv.folds=5, cv.seed=0): per-fold scores,
    mean +- std, pooled out-of-fold accuracy with its 95% interval; the test split is untouched."""
    with user_errors():
        from modelyard.stages import crossval as crossval_stage

        result = crossval_stage.run(_config(overrides), name=name, log=console.print)
        for line in crossval_stage.table(result.report):
            typer.echo(line)
        console.print(f"report: {result.report_path}", highlight=False, soft_wrap=True)


@app.command()
def register(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory to register")],
    overrides: Overrides = None,
    name: Annotated[
        str | None, typer.Option(help="Registered model name; default the bundle's project")
    ] = None,
) -> None:
    """Register a bundle as the next version of its project's model."""
    with user_errors():
        from modelyard.registry.store import open_registry

        registered = open_registry(_config(overrides)).register(bundle, name)
        console.print(
            f"registered {registered.name} version {registered.version} "
            f"(bundle {registered.tags.get('bundle_version')}); "
            f"promote with: modelyard promote {registered.name} {registered.version} --to staging"
        )


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. nilm")],
    version: Annotated[str, typer.Argument(help="Version number to promote")],
    overrides: Overrides = None,
    to: Annotated[
        str, typer.Option("--to", help="Alias to move: staging or production")
    ] = "staging",
    force: Annotated[
        bool, typer.Option(help="Promote even if a gate fails (recorded as forced)")
    ] = False,
    source: Annotated[Path | None, typer.Option(help=EVAL_SOURCE_HELP)] = None,
) -> None:
    """Move an alias to a version through the gates (metrics vs the holder, p95 latency)."""
    with user_errors():
        from modelyard.registry.store import ALIASES
        from modelyard.stages.promote import promote as run_promotion

        if to not in ALIASES:
            raise ModelyardError(f"--to must be one of {', '.join(ALIASES)}, not {to!r}")
        report = run_promotion(name, version, to, overrides or [], force=force, source=source)
        for gate in report.gates:
            mark = "[green]PASS[/]" if gate.passed else "[red]FAIL[/]"
            console.print(f"{mark} {gate.name}: {gate.summary}", highlight=False)
        if report.promoted:
            how = " (FORCED past failing gates)" if report.forced else ""
            console.print(f"{name}@{to} -> version {version}{how}; was {report.previous}")
        else:
            console.print(f"not promoted: {name}@{to} stays at version {report.previous}")
        console.print(f"evidence: {report.evidence}")
        if not report.promoted:
            raise typer.Exit(code=1)


@app.command()
def models(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. nilm")],
    overrides: Overrides = None,
) -> None:
    """List the registered versions of a model with their aliases."""
    with user_errors():
        from modelyard.registry.store import open_registry

        for found in open_registry(_config(overrides)).versions(name):
            aliases = ",".join(found.aliases) or "-"
            typer.echo(
                f"{found.version}\t{aliases}\tbundle {found.tags.get('bundle_version')}"
                f"\tgit {found.tags.get('git_commit', '?')[:10]}"
            )


@app.command()
def ui(
    overrides: Overrides = None,
    port: Annotated[int, typer.Option(help="TCP port")] = 5000,
) -> None:
    """Open the MLflow UI on the configured tracking store (127.0.0.1)."""
    with user_errors():
        import subprocess
        import sys

        cfg = _config(overrides)
        uri = str(cfg.tracking.get("uri") or cfg.registry.uri)
        console.print(f"MLflow UI for {uri} at http://127.0.0.1:{port}")
        command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        raise typer.Exit(code=subprocess.call(command))


@app.command("app", **from_environment(APP_PREFIX))
def web_app(
    target: Annotated[
        str,
        typer.Argument(
            help="A running server's URL (http://host:port), or a bundle / models:/ URI to serve",
            envvar=f"{APP_PREFIX}_TARGET",
        ),
    ],
    host: Annotated[str, typer.Option(help="Interface the UI listens on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help=f"UI's {PORT_HELP}", envvar=port_variables(APP_PREFIX))
    ] = 7860,
    api_key: UiApiKey = None,
    monitor: Annotated[
        str | None,
        typer.Option(help="URL of `modelyard monitor --serve`, for the model tab's drift report"),
    ] = None,
) -> None:
    """Open the web UI for a served model (needs the `ui` extra: pip install 'modelyard\\[ui]')."""
    with user_errors():
        try:
            from modelyard.webui.launch import run_ui
        except ImportError as error:
            raise ModelyardError(
                f"the web UI needs the ui extra ({error.name} is missing): "
                "pip install 'modelyard[ui]'"
            ) from error
        run_ui(target, host, port, api_key=api_key, monitor_url=monitor, announce=console.print)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
