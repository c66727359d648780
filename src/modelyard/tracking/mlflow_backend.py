"""MLflow tracking through ``MlflowClient`` (no global active run, so stages can resume a run)."""

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from modelyard.tracking.base import TrackedRun, Tracker, TrackingError, safe_key

#: MLflow refuses longer parameter values.
MAX_PARAM_LENGTH = 6000


def quiet_mlflow_logs() -> None:
    """MLflow's embedded store logs every schema migration at INFO; keep the console readable."""
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def prepare_store(uri: str) -> None:
    """Create the directory of an embedded SQLite store (MLflow expects it to exist)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        database = uri.removeprefix("sqlite:///")
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)


def is_embedded(uri: str) -> bool:
    return urlparse(uri).scheme in {"sqlite", "file", ""}


class MlflowMissingError(TrackingError):
    """MLflow is not installed (it is in the ``train`` extra; its client alone in ``registry``)."""


def client_for(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri`` (tracking and registry), with errors users can act on."""
    prepare_store(uri)
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MlflowMissingError(
            "tracking=mlflow needs mlflow: pip install 'modelyard[train]'"
        ) from exc
    quiet_mlflow_logs()  # after the import: mlflow sets its own log level when imported
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except ImportError as exc:  # mlflow-skinny: the client, not the embedded store's database code
        raise TrackingError(
            f"{uri} is an embedded MLflow store, which needs all of MLflow ({exc.name} is "
            "missing: only MLflow's client is installed): pip install 'modelyard[train]', or "
            "use an MLflow server's URL (http://...)"
        ) from exc
    except Exception as exc:  # an unsupported scheme, an unreadable store
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0].strip()
        raise TrackingError(f"MLflow cannot open {uri}: {reason}") from exc


class MlflowTracker(Tracker):
    backend = "mlflow"

    def __init__(self, client: Any, run: TrackedRun) -> None:
        self._client = client
        self._run = run

    @property
    def run(self) -> TrackedRun:
        return self._run

    @classmethod
    def start(
        cls,
        uri: str,
        experiment: str,
        artifacts: str | None,
        run_name: str,
        tags: Mapping[str, str] | None = None,
    ) -> "MlflowTracker":
        client = client_for(uri)
        try:
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                local = bool(artifacts) and is_embedded(uri)
                location = Path(str(artifacts)).resolve().as_uri() if local else None
                experiment_id = client.create_experiment(experiment, artifact_location=location)
            created = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        except Exception as exc:
            raise TrackingError(f"MLflow at {uri} refused to start a run: {exc}") from exc
        return cls(client, TrackedRun("mlflow", created.info.run_id, uri, experiment))

    @classmethod
    def resume(cls, run: TrackedRun) -> "MlflowTracker":
        client = client_for(run.location)
        try:
            client.get_run(run.run_id)
        except Exception as exc:
            raise TrackingError(
                f"tracked run {run.run_id} not found in MLflow at {run.location}: {exc}"
            ) from exc
        return cls(client, run)

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(self._client, method)(self._run.run_id, *args, **kwargs)
        except Exception as exc:
            raise TrackingError(f"MLflow could not {what}: {exc}") from exc

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(safe_key(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(entries), 100):  # MLflow caps a batch at 100 params
            self._call("log parameters", "log_batch", params=entries[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(safe_key(k), float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(entries), 1000):
            self._call("log metrics", "log_batch", metrics=entries[start : start + 1000])

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        method = "log_artifacts" if path.is_dir() else "log_artifact"
        self._call(f"store {path}", method, str(path), folder)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self._call("set tags", "log_batch", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, failed: bool = False) -> None:
        self._call("close the run", "set_terminated", "FAILED" if failed else "FINISHED")
