"""A two-class image project end to end on a folder the test builds: prepare -> train (the
threshold chosen on validation) -> evaluate (ROC-AUC, PR-AUC, baseline) -> export -> a real
server on 127.0.0.1 and offline ``modelyard predict``, which must answer alike.

The class folders are ``9_dark`` and ``10_bright``, written to the zip in that (natural) order,
while sorted as strings ``10_bright`` comes first: the class order must be the sorted one in
training, bundle and server alike, which a dark image classified ``9_dark`` proves end to end.
"""

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from omegaconf import DictConfig
from PIL import Image

from cli_helpers import modelyard
from log_tables import table_rows
from modelyard.core.bundle import Bundle
from modelyard.core.run_dir import RunDir
from modelyard.projects.vision.binary import choose_threshold, roc_auc
from modelyard.projects.vision.contract import DecisionRule, VisionContract
from modelyard.projects.vision.image_cache import load_part
from modelyard.projects.vision.image_decoding import normalise
from modelyard.projects.vision.metrics import softmax
from modelyard.projects.vision.serving import DECISION_COLUMNS
from modelyard.projects.vision.task import VisionTask
from modelyard.serving.log_schema import predictions
from modelyard.serving.runtime import OnnxModel
from modelyard.serving.server_process import running_server
from modelyard.stages import evaluate
from test_prediction_log_process import serve
from test_serving_service import samples, stop
from vision_fixtures import folder_run_config, make_vision_bundle, run_to_bundle

#: Discovery order (as written to the zip) differs from the sorted order.
WRITTEN = ("9_dark", "10_bright")
SORTED = ("10_bright", "9_dark")
LEVEL = {"9_dark": 40, "10_bright": 210}
SIZE = 16


def picture(kind: str, seed: int) -> bytes:
    noise = np.random.default_rng(seed).integers(-25, 26, size=(SIZE, SIZE, 3))
    pixels = np.clip(LEVEL[kind] + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Built:
    def __init__(self, cfg: DictConfig, run: Path, metrics: dict[str, Any], bundle: Bundle):
        self.cfg, self.run, self.metrics, self.bundle = cfg, run, metrics, bundle


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    source = tmp_path_factory.mktemp("images")
    with zipfile.ZipFile(source / "eurosat_rgb.zip", "w") as archive:
        for kind in WRITTEN:
            for i in range(30):
                archive.writestr(f"{kind}/{i}.png", picture(kind, i + 100 * len(kind)))
    cfg = folder_run_config(
        source,
        tmp_path_factory.mktemp("w"),
        SIZE,
        16,
        "project.data.split.val_fraction=0.3",
        "project.data.split.test_fraction=0.3",
        "trainer.max_epochs=4",
        "trainer.log_every_n_steps=1",
    )
    return Built(cfg, *run_to_bundle(cfg))


def onnx_probabilities(built: Built, part: str) -> tuple[np.ndarray, np.ndarray]:
    """P(positive) by the bundle's ONNX model on a prepared part, and the part's labels."""
    contract = VisionContract.from_manifest(built.bundle.manifest)
    pixels, labels = load_part(Path(built.cfg.paths.prepared), part)
    logits = OnnxModel(built.bundle.model_path).run(normalise(pixels, contract.mean, contract.std))
    return softmax(logits)[:, 1], labels


def test_the_class_order_is_the_sorted_one_everywhere(built: Built) -> None:
    prepared = json.loads((Path(built.cfg.paths.prepared) / "prepare.json").read_text())
    assert tuple(prepared["classes"]) == SORTED
    assert VisionContract.parse(RunDir(built.run).read_preprocessing()).classes == SORTED
    assert VisionContract.from_manifest(built.bundle.manifest).classes == SORTED
    assert built.metrics["class_names"] == list(SORTED)


def test_the_threshold_is_chosen_on_validation_and_travels_in_the_bundle(built: Built) -> None:
    decision = VisionContract.from_manifest(built.bundle.manifest).decision
    assert decision is not None
    assert decision == VisionContract.parse(RunDir(built.run).read_preprocessing()).decision
    # the default: the second class in order, by max F1, on the validation images
    assert (decision.positive_class, decision.rule, decision.target) == ("9_dark", "max_f1", None)
    prepared = json.loads((Path(built.cfg.paths.prepared) / "prepare.json").read_text())
    n_val = sum(prepared["per_split_and_class"]["val"].values())
    assert n_val >= 10
    assert decision.chosen_on == f"validation split ({n_val} images)"
    probability, labels = onnx_probabilities(built, "val")
    again = choose_threshold(labels, probability, DecisionRule(), "9_dark", decision.chosen_on)
    assert again.threshold == pytest.approx(decision.threshold, abs=1e-5)
    assert (again.precision, again.recall, again.f1) == (
        decision.precision,
        decision.recall,
        decision.f1,
    )


def test_another_rule_from_the_configuration(built: Built) -> None:
    cfg = built.cfg.copy()
    cfg.project.decision.rule = "recall"
    cfg.project.decision.target = 1.0
    cfg.project.decision.positive = "10_bright"
    fitted = VisionTask(cfg).fitted_preprocessing(RunDir(built.run))
    assert fitted is not None
    decision = VisionContract.parse(fitted).decision
    assert decision is not None
    assert (decision.positive_class, decision.rule, decision.target) == ("10_bright", "recall", 1.0)
    probability, labels = onnx_probabilities(built, "val")
    # the highest threshold that still finds every bright validation image
    assert decision.recall == 1.0
    assert decision.threshold == pytest.approx(
        float((1 - probability)[labels == 0].min()), abs=1e-5
    )


def test_evaluation_reports_ranking_scores_curves_and_baseline(built: Built) -> None:
    binary = built.metrics["binary"]
    assert isinstance(binary, dict)
    assert binary["positive_class"] == "9_dark"
    probability, labels = onnx_probabilities(built, "test")
    assert binary["roc_auc"] == pytest.approx(roc_auc(labels, probability), abs=1e-6)
    assert binary["roc_auc"] >= 0.9  # dark and bright are trivially separable
    assert binary["pr_auc"] >= 0.9
    assert binary["prevalence"] == pytest.approx(0.5)
    assert binary["baseline"] == {"roc_auc": 0.5, "pr_auc": pytest.approx(0.5)}
    assert built.metrics["baseline"]["accuracy"] == pytest.approx(0.5)
    interval = built.metrics["accuracy_interval"]
    assert isinstance(interval, dict)
    assert interval["n"] == labels.size and interval["method"] == "wilson"
    assert interval["low"] <= built.metrics["accuracy"] <= interval["high"]
    assert (
        binary["decision"]["threshold"]
        == built.bundle.manifest.preprocessing["decision"]["threshold"]
    )
    decided = probability >= binary["decision"]["threshold"]
    assert binary["at_threshold"]["accuracy"] == pytest.approx(
        float(np.mean(decided == (labels == 1)))
    )
    plots = {Path(p).name: Path(p) for p in built.metrics["plots"]}
    assert {"roc_curve.png", "pr_curve.png"} <= set(plots)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots.values())
    # the bundle carries the same numbers
    assert built.bundle.manifest.metrics["binary"]["roc_auc"] == binary["roc_auc"]


def test_served_and_offline_answers_are_the_same_decision(built: Built, tmp_path: Path) -> None:
    images = tmp_path / "uploads"
    images.mkdir()
    files = {f"{kind}.png": picture(kind, 999) for kind in WRITTEN}
    for name, data in files.items():
        (images / name).write_bytes(data)
    contract = VisionContract.from_manifest(built.bundle.manifest)
    assert contract.decision is not None
    with running_server(built.bundle.path) as url:
        served = {
            name: httpx.post(
                f"{url}/predict", files={"file": (name, data, "image/png")}, timeout=30
            )
            for name, data in files.items()
        }
        info = httpx.get(f"{url}/info", timeout=30).json()
        schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    answers = {name: response.json() for name, response in served.items()}
    assert all(r.status_code == 200 for r in served.values()), answers
    for kind in WRITTEN:
        answer = answers[f"{kind}.png"]
        assert answer["top"][0]["label"] == kind
        assert answer["decision"]["label"] == kind
        assert answer["decision"]["is_positive"] == (kind == "9_dark")
        assert answer["decision"]["threshold"] == contract.decision.threshold
        assert answer["decision"]["positive_class"] == "9_dark"
    assert info["details"]["decision"] == contract.decision.model_dump(mode="json")
    response = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]
    assert response["application/json"]["schema"]["$ref"].endswith("/BinaryImagePrediction")
    assert "decision" in schema["components"]["schemas"]["BinaryImagePrediction"]["required"]

    written = tmp_path / "predicted.csv"
    result = modelyard(
        "predict", str(built.bundle.path), str(images), str(written), workdir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    rows = {row["file"]: row for row in csv.DictReader(written.open())}
    for name, answer in answers.items():
        row = rows[name]
        assert row["label_1"] == answer["top"][0]["label"]
        assert float(row["probability_1"]) == answer["top"][0]["probability"]
        expected = answer["decision"]
        assert [row[c] for c in DECISION_COLUMNS] == [str(expected[c]) for c in DECISION_COLUMNS]


def test_a_multi_class_bundle_answers_top_k_only(tmp_path: Path) -> None:
    bundle = make_vision_bundle(tmp_path / "bundle")
    with running_server(bundle.path) as url:
        answer = httpx.post(
            f"{url}/predict",
            files={"file": ("x.png", picture("9_dark", 1), "image/png")},
            timeout=30,
        ).json()
        info = httpx.get(f"{url}/info", timeout=30).json()
        schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    assert set(answer) == {"model", "version", "top"}
    assert "decision" not in info["details"]
    assert "BinaryImagePrediction" not in schema["components"]["schemas"]


def test_a_bundle_evaluated_on_another_folder_keeps_its_decision(
    built: Built, tmp_path: Path
) -> None:
    for kind in WRITTEN:
        (tmp_path / "folder" / kind).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "folder" / kind / f"{i}.png").write_bytes(picture(kind, 5000 + i))
    metrics, _ = evaluate.run(
        built.cfg, model=built.bundle.path, source=tmp_path / "folder", output=tmp_path / "m.json"
    )
    assert metrics["evaluated"]["kind"] == "bundle"
    binary = metrics["binary"]
    assert binary["decision"] == built.bundle.manifest.preprocessing["decision"]
    assert binary["positive_class"] == "9_dark" and binary["prevalence"] == 0.5
    assert 0.0 <= binary["roc_auc"] <= 1.0 and binary["baseline"]["pr_auc"] == 0.5
    assert metrics["accuracy_interval"]["n"] == 8
    assert (tmp_path / "plots" / "roc_curve.png").is_file()


def test_the_log_keeps_the_decision_and_the_monitor_scores_it(built: Built, tmp_path: Path) -> None:
    """The served decision is logged beside the top classes and counted as the answered label;
    ``modelyard monitor`` scores the feedback against the decision, expecting the evaluation's
    accuracy at the threshold."""
    log_url = f"sqlite:///{tmp_path}/predictions.db"
    process, url = serve(built.bundle.path, log_url)
    sent: dict[str, tuple[dict[str, Any], str]] = {}
    try:
        for i, kind in enumerate(WRITTEN * 3):
            data = picture(kind, 7000 + i)
            response = httpx.post(
                f"{url}/predict", files={"file": ("x.png", data, "image/png")}, timeout=30
            )
            assert response.status_code == 200, response.text
            prediction_id = response.headers["X-Prediction-ID"]
            sent[prediction_id] = (response.json(), kind)
            truth = {"prediction_id": prediction_id, "truth": {"label": kind}}
            assert httpx.post(f"{url}/feedback", json=truth, timeout=30).status_code == 200
        counted = samples(httpx.get(f"{url}/metrics", timeout=10).text)
    finally:
        stop(process)
    logged = {row.server_request_id: row.outputs for row in table_rows(log_url, predictions)}
    assert set(logged) == set(sent)
    for prediction_id, (answer, _) in sent.items():
        assert logged[prediction_id] == {"top": answer["top"], "decision": answer["decision"]}
    for kind in WRITTEN:
        decided = sum(answer["decision"]["label"] == kind for answer, _ in sent.values())
        assert counted[("modelyard_predicted_label_total", (("label", kind),))] == decided

    output = tmp_path / "monitor"
    result = modelyard(
        "monitor", str(built.bundle.path), "--log", log_url, "--output", str(output),
        "--min-feedback", "5", workdir=tmp_path,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    accuracy = json.loads((output / "verdict.json").read_text())["realised_accuracy"]
    right = sum(answer["decision"]["label"] == kind for answer, kind in sent.values())
    assert accuracy["pairs"] == len(sent)
    assert accuracy["metrics"]["accuracy"]["realised"] == pytest.approx(right / len(sent))
    at_threshold = built.metrics["binary"]["at_threshold"]
    assert accuracy["metrics"]["accuracy"]["promoted"] == pytest.approx(at_threshold["accuracy"])
    assert accuracy["metrics"]["macro_f1"]["promoted"] == pytest.approx(at_threshold["macro_f1"])
