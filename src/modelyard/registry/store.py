"""Bundles as versions of registered models in the MLflow Model Registry.

Registering uploads the bundle directory (model.onnx + manifest.json) as the artifacts of a
registration run and creates a model version whose source is that directory; the version is
tagged with the bundle's version, sha256, manifest digest, project, git commit and training run.
Fetching a version downloads the bundle into a local cache (atomically) and verifies it: its
files and manifest digest (:func:`~modelyard.core.bundle.load_bundle`), then the sha256 and
digest registered, so a bundle replaced in the artifact store by another valid one is refused.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.core.bundle import Bundle, load_bundle
from modelyard.core.errors import BundleError, ModelyardError
from modelyard.registry.references import ModelReference
from modelyard.tracking.mlflow_backend import MlflowMissingError, client_for, is_embedded

if TYPE_CHECKING:
    from omegaconf import DictConfig

REGISTRATION_EXPERIMENT = "modelyard-registrations"
BUNDLE_ARTIFACTS = "bundle"
DIGEST_TAG = "manifest_digest"  # the manifest's integrity digest, checked again on fetch
ALIASES = ("staging", "production")
#: Why a registry cannot be opened without MLflow, and the fix (serving needs only its client).
NEEDS_MLFLOW = (
    "needs MLflow's client: pip install 'modelyard[registry]' (modelyard[train] has all of "
    "MLflow; the serve image with it: modelyard-serve-registry, docs/containers.md)"
)


class RegistryError(ModelyardError):
    """The registry refused a request or does not hold what was asked for."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    source: str
    tags: dict[str, str]
    aliases: list[str]

    @property
    def reference(self) -> ModelReference:
        return ModelReference(self.name, version=self.version)


class ModelRegistry:
    def __init__(self, uri: str, cache: Path, artifacts: Path | None = None) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.uri = uri
        self.cache = Path(cache)
        self.artifacts = artifacts
        try:
            self.client: Any = client_for(uri)
        except MlflowMissingError:  # serving needs only MLflow's client, not the train extra
            raise RegistryError(f"the model registry at {uri} {NEEDS_MLFLOW}") from None

    # -- writing ---------------------------------------------------------------------------
    def register(self, bundle_path: Path, name: str | None = None) -> RegisteredVersion:
        """Upload a verified bundle and make it the next version of ``name`` (default: project)."""
        bundle = load_bundle(bundle_path)
        manifest = bundle.manifest
        name = name or manifest.project
        try:
            self._ensure_model(name, manifest.project)
            run = self.client.create_run(
                self._registration_experiment(),
                run_name=f"register-{name}-{manifest.version}",
                tags={"project": manifest.project, "bundle_version": manifest.version},
            )
            run_id = run.info.run_id
            self.client.log_artifacts(run_id, str(bundle.path), BUNDLE_ARTIFACTS)
            self.client.set_terminated(run_id)
            created = self.client.create_model_version(
                name,
                source=f"{run.info.artifact_uri}/{BUNDLE_ARTIFACTS}",
                run_id=run_id,
                tags=_version_tags(bundle),
                description=f"{manifest.name} bundle {manifest.version}",
            )
        except ModelyardError:
            raise
        except Exception as exc:
            raise RegistryError(f"registry at {self.uri} refused {bundle.path}: {exc}") from exc
        return self.version(ModelReference(name, version=str(created.version)))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            f"point {name}@{alias} at version {version}",
            "set_registered_model_alias",
            name,
            alias,
            version,
        )

    def tag_version(self, name: str, version: str, key: str, value: str) -> None:
        self._call(
            f"tag {name} version {version}", "set_model_version_tag", name, version, key, value
        )

    # -- reading ---------------------------------------------------------------------------
    def version(self, reference: ModelReference) -> RegisteredVersion:
        """The version a reference names (alias resolved), or a RegistryError saying why not."""
        try:
            if reference.alias is not None:
                found = self.client.get_model_version_by_alias(reference.name, reference.alias)
            else:
                found = self.client.get_model_version(reference.name, str(reference.version))
        except Exception as exc:
            raise RegistryError(
                f"{reference} is not in the registry at {self.uri}: {_first_line(exc)}"
            ) from exc
        return RegisteredVersion(
            name=found.name,
            version=str(found.version),
            source=str(found.source),
            tags=dict(found.tags or {}),
            aliases=list(found.aliases or []),
        )

    def alias_holder(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version ``alias`` points at, or None when it points nowhere yet."""
        try:
            return self.version(ModelReference(name, alias=alias))
        except RegistryError:
            return None

    def versions(self, name: str) -> list[RegisteredVersion]:
        try:
            found = self.client.search_model_versions(f"name = '{name}'")
            aliases = dict(self.client.get_registered_model(name).aliases or {})
        except Exception as exc:
            raise RegistryError(f"cannot list versions of {name}: {_first_line(exc)}") from exc
        listed = [
            RegisteredVersion(
                v.name,
                str(v.version),
                str(v.source),
                dict(v.tags or {}),
                sorted(a for a, held in aliases.items() if str(held) == str(v.version)),
            )
            for v in found
        ]
        return sorted(listed, key=lambda v: int(v.version))

    def fetch(self, reference: ModelReference) -> Bundle:
        """Download (once) and verify the bundle of a registered version."""
        version = self.version(reference)
        target = self.cache / version.name / version.version
        if target.is_dir():
            try:
                return load_bundle(target)
            except BundleError:
                shutil.rmtree(target)  # a damaged cache entry is downloaded again
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version.version}.", dir=target.parent))
        try:
            import mlflow.artifacts

            downloaded = mlflow.artifacts.download_artifacts(
                artifact_uri=version.source, dst_path=str(staging), tracking_uri=self.uri
            )
            Path(downloaded).replace(target)
        except Exception as exc:
            raise RegistryError(
                f"cannot download {reference} from {version.source}: {_first_line(exc)}"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        bundle = load_bundle(target)
        if bundle.manifest.sha256 != version.tags.get("sha256", bundle.manifest.sha256):
            raise RegistryError(
                f"{reference}: downloaded model does not match its registered sha256"
            )
        if bundle.trust.digest != version.tags.get(DIGEST_TAG, bundle.trust.digest):
            raise RegistryError(
                f"{reference}: downloaded manifest does not match its registered digest"
            )
        return bundle

    # -- helpers ---------------------------------------------------------------------------
    def _call(self, what: str, method: str, *args: Any) -> None:
        try:
            getattr(self.client, method)(*args)
        except Exception as exc:
            raise RegistryError(f"registry could not {what}: {_first_line(exc)}") from exc

    def _ensure_model(self, name: str, project: str) -> None:
        try:
            self.client.get_registered_model(name)
        except Exception:
            self.client.create_registered_model(
                name, tags={"project": project}, description=f"modelyard {project} models"
            )

    def _registration_experiment(self) -> str:
        found = self.client.get_experiment_by_name(REGISTRATION_EXPERIMENT)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.artifacts is not None and is_embedded(self.uri):
            location = Path(self.artifacts).resolve().as_uri()
        return str(
            self.client.create_experiment(REGISTRATION_EXPERIMENT, artifact_location=location)
        )


def _version_tags(bundle: Bundle) -> dict[str, str]:
    manifest = bundle.manifest
    tags = {
        "project": manifest.project,
        "bundle_version": manifest.version,
        "sha256": manifest.sha256,
        "git_commit": str(manifest.git_commit),
        "git_dirty": str(manifest.git_dirty),
        "data_fingerprint": str(manifest.data_fingerprint),
    }
    if manifest.tracking:
        tags["training_run"] = json.dumps(manifest.tracking)
    if bundle.trust.digest is not None:  # legacy bundles have none
        tags[DIGEST_TAG] = bundle.trust.digest
    return tags


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_registry(cfg: "DictConfig") -> ModelRegistry:
    """The model registry the configuration names (``registry.uri``, ``cache``, ``artifacts``)."""
    return ModelRegistry(
        uri=str(cfg.registry.uri),
        cache=Path(cfg.registry.cache),
        artifacts=Path(cfg.registry.artifacts),
    )
