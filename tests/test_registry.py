"""Model registry and promotion gates on a real embedded MLflow store, with real trained bundles.

Two kc_house models are trained on the real table: a "good" one (experiment=quick) and a "poor"
one (one batch of training). Both are exported, registered and pushed through the gates.
"""

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from omegaconf import DictConfig

from cli_helpers import assert_user_error, modelyard, modelyard_in_process
from modelyard.core.bundle import Bundle, load_bundle
from modelyard.core.config import load_config
from modelyard.projects.base import GateMetric
from modelyard.registry.gates import compare_metrics
from modelyard.registry.references import ModelReference, ReferenceError, parse_reference
from modelyard.registry.store import RegistryError, open_registry
from modelyard.serving.adapter import bundle_example
from modelyard.serving.server_process import running_server
from modelyard.stages import evaluate, export, train
from modelyard.stages.promote import promote

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Models:
    def __init__(self, overrides: list[str], good: Bundle, poor: Bundle, twin: Path) -> None:
        self.overrides = overrides
        self.good = good
        self.poor = poor
        self.twin = twin  # a second run with exactly the good one's seed, data and config

    @property
    def cfg(self) -> DictConfig:
        return load_config(self.overrides)


def _train_and_export(cfg: DictConfig, name: str) -> Bundle:
    trained = train.run(cfg)
    evaluate.run(cfg, model=trained.run_dir)
    return export.run(cfg, run_dir=trained.run_dir, output=Path(cfg.paths.bundles) / name)


@pytest.fixture(scope="module")
def models(kc_house_data: list[str], tmp_path_factory: pytest.TempPathFactory) -> Models:
    workdir = tmp_path_factory.mktemp("registry")
    overrides = [
        *kc_house_data,
        "experiment=quick",
        "tracking=none",
        f"paths.workdir={workdir}",
        "trainer.enable_progress_bar=false",
        "registry.gates.latency_requests=20",
    ]
    cfg = load_config([*overrides, "run_name=good"])
    good = _train_and_export(cfg, "good")
    twin = train.run(load_config([*overrides, "run_name=twin"])).run_dir
    poor_cfg = load_config(
        [*overrides, "run_name=poor", "trainer.max_epochs=1", "trainer.limit_train_batches=1"]
    )
    poor = _train_and_export(poor_cfg, "poor")
    return Models(overrides, good, poor, twin)


def test_same_seed_data_and_config_give_the_same_numbers(models: Models, tmp_path: Path) -> None:
    good_run = Path(models.cfg.paths.runs) / "good"
    first = json.loads((good_run / "train.json").read_text())
    second = json.loads((models.twin / "train.json").read_text())
    assert first["best_score"] == second["best_score"]
    assert first["data_fingerprint"] == second["data_fingerprint"]
    again, _ = evaluate.run(models.cfg, model=models.twin, output=tmp_path / "twin.json")
    original = json.loads((good_run / "evaluation" / "metrics.json").read_text())
    assert again["model"] == original["model"]


def test_references_parse_and_bad_ones_are_explained() -> None:
    assert parse_reference("models:/nilm@production") == ModelReference("nilm", alias="production")
    assert parse_reference("models:/kc_house/12") == ModelReference("kc_house", version="12")
    assert str(ModelReference("nilm", alias="staging")) == "models:/nilm@staging"
    for bad in ("models:/", "models:/nilm@", "models:/nilm/v1", "nilm@production", "models:/a b"):
        with pytest.raises(ReferenceError, match="bad registry reference"):
            parse_reference(bad)


def test_metric_gate_compares_in_the_right_direction_with_tolerance() -> None:
    holder = {
        "mdape": GateMetric(0.10, higher_is_better=False),
        "within_10pct": GateMetric(0.50, higher_is_better=True),
    }
    same = compare_metrics(holder, holder, tolerance=0.0)
    assert same.passed
    worse_error = {**holder, "mdape": GateMetric(0.104, higher_is_better=False)}
    verdict = compare_metrics(worse_error, holder, tolerance=0.0)
    assert not verdict.passed and "mdape" in verdict.summary
    assert compare_metrics(worse_error, holder, tolerance=0.05).passed  # 0.104 <= 0.105
    fewer_within = {**holder, "within_10pct": GateMetric(0.45, higher_is_better=True)}
    assert not compare_metrics(fewer_within, holder, tolerance=0.05).passed  # 0.45 < 0.475
    missing = {"mdape": holder["mdape"]}
    assert not compare_metrics(missing, holder, tolerance=0.0).passed
    assert compare_metrics(holder, None, tolerance=0.0).passed


def test_register_fetch_and_versions(models: Models) -> None:
    registry = open_registry(models.cfg)
    first = registry.register(models.good.path)
    assert first.name == "kc_house" and first.tags["sha256"] == models.good.manifest.sha256
    fetched = registry.fetch(first.reference)
    assert fetched.path != models.good.path
    assert (fetched.path / "model.onnx").read_bytes() == models.good.model_path.read_bytes()
    # a damaged cached copy is noticed and downloaded again
    (fetched.path / "model.onnx").write_bytes(b"tampered")
    assert load_bundle(registry.fetch(first.reference).path).manifest.sha256 == first.tags["sha256"]
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.fetch(ModelReference("kc_house", version="999"))
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.fetch(ModelReference("kc_house", alias="production"))


def test_registered_manifest_digest_guards_the_cache(models: Models) -> None:
    registry = open_registry(models.cfg)
    registered = registry.register(models.good.path)
    assert registered.tags["manifest_digest"] == models.good.trust.digest
    cached = registry.fetch(registered.reference).path
    manifest = cached / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"project"', '"extra": 1, "project"', 1))

    fetched = registry.fetch(registered.reference)  # the edited copy is refused, fetched again

    assert fetched.trust.digest == registered.tags["manifest_digest"]
    assert '"extra"' not in (fetched.path / "manifest.json").read_text()


def test_promotion_through_the_gates(models: Models) -> None:
    registry = open_registry(models.cfg)
    good = registry.register(models.good.path, name="kc_promo")
    poor = registry.register(models.poor.path, name="kc_promo")

    first = promote("kc_promo", good.version, "staging", models.overrides)
    assert first.promoted and first.gates_passed and first.previous is None
    assert [g.name for g in first.gates] == ["metrics", "latency"]
    latency = first.gates[1].details
    assert latency["requests"] == 20 and 0 < latency["p50_ms"] <= latency["p95_ms"]
    assert registry.alias_holder("kc_promo", "staging").version == good.version  # type: ignore[union-attr]

    # the poor model is worse on the same data: refused, the alias does not move
    refused = promote("kc_promo", poor.version, "staging", models.overrides)
    assert not refused.promoted and refused.previous == good.version
    metrics_gate = refused.gates[0]
    assert not metrics_gate.passed
    assert metrics_gate.details["mdape"]["candidate"] > metrics_gate.details["mdape"]["holder"]
    assert registry.alias_holder("kc_promo", "staging").version == good.version  # type: ignore[union-attr]
    evidence = json.loads((refused.evidence / "report.json").read_text())
    assert evidence["promoted"] is False and evidence["gates_passed"] is False
    assert (refused.evidence / "candidate" / "metrics.json").is_file()
    assert (refused.evidence / "holder" / "metrics.json").is_file()

    # --force moves it anyway and the version says so
    forced = promote("kc_promo", poor.version, "staging", models.overrides, force=True)
    assert forced.promoted and forced.forced
    version = registry.version(ModelReference("kc_promo", alias="staging"))
    assert version.version == poor.version
    record = json.loads(version.tags["promotion.staging"])
    assert record["forced"] is True and record["gates"] == {"metrics": False, "latency": True}
    assert record["previous"] == good.version


def test_latency_gate_fails_above_the_threshold(models: Models) -> None:
    registry = open_registry(models.cfg)
    version = registry.register(models.good.path, name="kc_slow")
    strict = [*models.overrides, "registry.gates.max_p95_latency_ms=0.001"]
    report = promote("kc_slow", version.version, "production", strict)
    assert not report.promoted
    assert report.gates[0].passed and not report.gates[1].passed
    assert "above the 0.001 ms limit" in report.gates[1].summary
    assert registry.alias_holder("kc_slow", "production") is None


def test_promote_cli_exit_codes_and_serve_a_registry_reference(models: Models) -> None:
    cfg = models.cfg
    registry = open_registry(cfg)
    version = registry.register(models.good.path, name="kc_cli")
    workdir = Path(cfg.paths.workdir)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        # In-process: MLflow, Hydra and the embedded store opened once, not per command; the
        # last line below and the server run the real entry point as their own processes.
        return modelyard_in_process(*args, workdir=workdir)

    bad_alias = cli("promote", "kc_cli", version.version, "--to", "prod", *models.overrides)
    assert_user_error(bad_alias, "--to must be one of staging, production")
    strict = cli(
        "promote", "kc_cli", version.version, "--to", "production", *models.overrides,
        "registry.gates.max_p95_latency_ms=0.001",
    )  # fmt: skip
    assert strict.returncode == 1, strict.stderr
    assert "FAIL latency" in strict.stderr and "not promoted" in strict.stderr
    done = cli("promote", "kc_cli", version.version, "--to", "production", *models.overrides)
    assert done.returncode == 0, done.stderr
    assert f"kc_cli@production -> version {version.version}" in done.stderr
    listed = cli("models", "kc_cli", *models.overrides)
    assert listed.stdout.split("\t")[:2] == [version.version, "production"]

    request = bundle_example(models.good).httpx_arguments()
    env = {**os.environ, "MODELYARD_HOME": str(workdir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    with running_server("models:/kc_cli@production", env=env) as url:
        info = httpx.get(f"{url}/info", timeout=10).json()
        assert info["version"] == models.good.manifest.version
        answer = httpx.post(f"{url}/predict", timeout=30, **request)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 1  # the example is one row
    staging = modelyard("serve", "models:/kc_cli@staging", workdir=workdir)
    assert_user_error(staging, "models:/kc_cli@staging is not")
