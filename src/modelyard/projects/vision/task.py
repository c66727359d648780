"""The vision task: classify images from a folder-per-class dataset (zip or directory)."""

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf

from modelyard.core.bundle import TensorSpec
from modelyard.core.bundle_examples import ExampleFile
from modelyard.core.errors import ConfigError, DataError
from modelyard.core.reference_profile import ReferenceProfile
from modelyard.core.row_accounting import ReadLedger, RefusalPolicy
from modelyard.core.run_dir import RunDir
from modelyard.projects.base import GateMetric, Task
from modelyard.projects.torch_model import LightningModel
from modelyard.projects.trained_model import InferenceModel
from modelyard.projects.vision.binary import (
    choose_threshold,
    positive_index,
    ranking_scores,
)
from modelyard.projects.vision.contract import (
    DecisionRule,
    PretrainedRecord,
    VisionContract,
    VisionLimits,
)
from modelyard.projects.vision.datamodule import ImageDataModule
from modelyard.projects.vision.drift_features import EMBEDDING_OUTPUT, EMBEDDING_SIZE
from modelyard.projects.vision.examples import example_images
from modelyard.projects.vision.image_cache import (
    PARTS,
    load_part,
    save_classes,
    save_part,
)
from modelyard.projects.vision.image_decoding import normalise
from modelyard.projects.vision.image_folders import (
    ImageIndex,
    cache_images,
    class_weights,
    index_image_folder,
    member_reader,
    stratified_split,
)
from modelyard.projects.vision.lightning_module import ImageClassifier
from modelyard.projects.vision.metrics import (
    accuracy_interval,
    classification_scores,
    majority_baseline,
    softmax,
)
from modelyard.projects.vision.model import build_backbone
from modelyard.projects.vision.plots import (
    plot_confusion_matrix,
    plot_embedding,
    plot_pr_curve,
    plot_roc_curve,
)
from modelyard.projects.vision.pretrained import (
    PretrainedSettings,
    ResolvedWeights,
    load_weights,
    read_state_dict,
    resolve_weights,
    statistics,
)
from modelyard.projects.vision.realised_accuracy import promoted
from modelyard.projects.vision.reference_sample import (
    REFERENCE_ROWS,
    Decoded,
    build_profile,
    cached_image,
    decoded_upload,
    profile_rows,
    stratified_sample,
)

SUMMARY_FILE = "prepare.json"
EVAL_BATCH = 256


#: Fewer images of a class than this in a split make its numbers there mostly noise.
FEW_IMAGES_PER_CLASS = 5


def few_images_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """One sentence per split whose classes have fewer than :data:`FEW_IMAGES_PER_CLASS` images
    (``counts``: images per class in each split)."""
    found = []
    for part, per_class in counts.items():
        few = {name: n for name, n in per_class.items() if n < FEW_IMAGES_PER_CLASS}
        if few:
            listed = ", ".join(f"{name}: {n}" for name, n in few.items())
            found.append(
                f"the {part} split has fewer than {FEW_IMAGES_PER_CLASS} images of some classes "
                f"({listed}): its metrics will be very uncertain; add images or change "
                "project.data.split"
            )
    return found


class VisionTask(Task):
    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.data = cfg.project.data
        self.size = int(self.data.image_size)
        # a bad rule or target fails before any work (one-line ConfigError)
        self.decision_rule = DecisionRule.from_config(_plain(cfg.project.get("decision")))
        # so do bad pretrained settings; the weights themselves are fetched when first needed
        self.pretrained = PretrainedSettings.from_config(_plain(cfg.get("model")) or {})
        self._weights: ResolvedWeights | None = None

    def pretrained_weights(self) -> ResolvedWeights | None:
        """``model.pretrained``'s file, fetched (once) and checked; None without one, or for
        timm's own weights (timm fetches those)."""
        source = self.pretrained.source
        if source is None or self.pretrained.from_timm:
            return None
        if self._weights is None:
            cache = Path(self.cfg.paths.get("weights") or Path(self.cfg.paths.workdir) / "weights")
            self._weights = resolve_weights(source, self.pretrained.sha256, cache)
        return self._weights

    def _source(self, source: Path) -> Path:
        """The configured archive inside ``source`` when there is one, else ``source`` itself."""
        archive = self.data.get("archive")
        return source / str(archive) if archive and (source / str(archive)).exists() else source

    def _index(self, source: Path, ledger: ReadLedger | None = None) -> ImageIndex:
        """The image index, its files checked against ``project.data``'s refusal policy."""
        ledger = ledger or ReadLedger(RefusalPolicy.from_config(self.data))
        return index_image_folder(self._source(source), ledger)

    def prepare(self, source: Path, output: Path) -> dict[str, Any]:
        ledger = ReadLedger(RefusalPolicy.from_config(self.data))
        index = self._index(source, ledger)
        split = self.data.split
        parts = stratified_split(
            index.labels, float(split.test_fraction), float(split.val_fraction), int(split.seed)
        )
        counts: dict[str, dict[str, int]] = {}
        for part in PARTS:
            rows = parts[part]
            pixels = cache_images(index, rows, self.size, progress=True)
            save_part(output, part, pixels, index.labels[rows])
            counts[part] = {
                name: int(np.sum(index.labels[rows] == k)) for k, name in enumerate(index.classes)
            }
        weights = class_weights(index.labels[parts["train"]], len(index.classes)).tolist()
        save_classes(output, index.classes, {"class_weights": weights})
        summary = {
            "source": str(index.source),
            "classes": index.classes,
            "images": int(index.labels.size),
            "image_size": self.size,
            "per_split_and_class": counts,
            "class_weights": dict(zip(index.classes, weights, strict=True)),
            "reading": ledger.to_json(),
        }
        few = few_images_warnings(counts)
        if few:
            summary["warnings"] = few
        (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def training_files(self, raw: Path) -> list[Path]:
        """The archive, or every file of a plain image folder (class folders, fetched as is)."""
        source = self._source(raw)
        if source.is_file():
            return [source]
        found = sorted(path for path in source.rglob("*") if path.is_file())
        if not found:
            raise DataError(f"no image files under {source}: run `modelyard data fetch` first")
        return found

    def datamodule(self) -> ImageDataModule:
        return ImageDataModule(
            prepared_dir=Path(self.cfg.paths.prepared),
            batch_size=int(self.data.batch_size),
            seed=int(self.cfg.seed),
            weighted=bool(self.data.class_weights),
            brightness=float(self.data.augment.brightness),
            augment_training=bool(self.data.augment.enabled),
            num_workers=self.data.get("num_workers", 0),
            statistics=statistics(self.pretrained, self.pretrained_weights())[1],
        )

    def build_model(self, datamodule: L.LightningDataModule) -> LightningModel:
        """The classifier, from ``model.pretrained``'s weights when set (see :mod:`.pretrained`);
        its body frozen by ``model.freeze`` and learning at ``model.pretrained_lr_scale``."""
        assert isinstance(datamodule, ImageDataModule)
        model = self.cfg.model
        options = _plain(model.get("backbone_options")) or {}
        n_classes = len(datamodule.classes)
        try:
            timm_network = (
                build_backbone(str(model.backbone), n_classes, timm_pretrained=True, **options)
                if self.pretrained.from_timm
                else None
            )
            network = ImageClassifier(
                n_classes=n_classes,
                class_names=datamodule.classes,
                backbone=str(model.backbone),
                backbone_options=options,
                class_weights=datamodule.weights,
                lr=float(model.lr),
                weight_decay=float(model.weight_decay),
                label_smoothing=float(model.label_smoothing),
                test_time_augmentation=str(model.get("test_time_augmentation", "none")),
                freeze=self.pretrained.freeze,
                pretrained_lr_scale=self.pretrained.lr_scale,
                network=timm_network,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model: {exc}") from exc
        weights = self.pretrained_weights()
        if weights is not None:
            load_weights(network.net, read_state_dict(weights), str(weights.path))
        return LightningModel(network)

    def load_model(self, run_dir: RunDir) -> LightningModel:
        return LightningModel.load(ImageClassifier, run_dir)

    def preprocessing(self, datamodule: L.LightningDataModule) -> dict[str, Any]:
        assert isinstance(datamodule, ImageDataModule)
        return self.contract(datamodule).to_preprocessing()

    def contract(self, datamodule: ImageDataModule) -> VisionContract:
        """What the trained model stands on: the data's classes and statistics, and the
        project's ``serving:`` limits, which serving reads from the bundle's contract. A
        two-class model's decision threshold is added after training (:meth:`fitted_preprocessing`).
        """
        self._positive_class(datamodule.classes)  # a wrong positive class fails before training
        weights = self.pretrained_weights()
        record = None
        if self.pretrained.source is not None:
            record = PretrainedRecord(
                source=self.pretrained.source, sha256=None if weights is None else weights.sha256
            )
        return VisionContract(
            classes=tuple(datamodule.classes),
            image_size=self.size,
            mean=tuple(datamodule.mean),
            std=tuple(datamodule.std),
            normalisation=statistics(self.pretrained, weights)[0],
            pretrained=record,
            test_time_augmentation=str(self.cfg.model.get("test_time_augmentation", "none")),
            limits=VisionLimits.from_serving_config(self.cfg.project.get("serving")),
        )

    def _positive_class(self, classes: list[str]) -> str | None:
        """The configured positive class of a two-class project (default the second class);
        None for more classes. A ConfigError for a positive class that is not one of them."""
        positive = self.decision_rule.positive
        if len(classes) != 2:
            if positive is not None:
                raise ConfigError(
                    f"project.decision.positive={positive!r} applies to two-class projects; "
                    f"this one has {len(classes)} classes"
                )
            return None
        try:
            return classes[positive_index(classes, positive)]
        except ValueError as exc:
            raise ConfigError(f"project.decision.positive: {exc}") from None

    def fitted_preprocessing(self, run: RunDir) -> dict[str, Any] | None:
        """A two-class model's decision threshold, chosen on the validation split with the
        trained (best) model by ``project.decision``'s rule; None for more classes."""
        contract = VisionContract.parse(run.read_preprocessing())
        positive = self._positive_class(list(contract.classes))
        if positive is None:
            return None
        pixels, labels = load_part(Path(self.cfg.paths.prepared), "val")
        logits = self.run_logits(run, pixels)
        index = list(contract.classes).index(positive)
        decision = choose_threshold(
            (labels == index).astype(np.int64),
            softmax(logits)[:, index],
            self.decision_rule,
            positive,
            f"validation split ({labels.size} images)",
        )
        return contract.model_copy(update={"decision": decision}).to_preprocessing()

    def run_logits(self, run: RunDir, pixels: np.ndarray) -> np.ndarray:
        """The trained (best) model of ``run`` on prepared uint8 ``pixels``, normalised as the
        run's contract says: its logits, one row per image."""
        contract = VisionContract.parse(run.read_preprocessing())
        return self._logits(self.load_model(run), contract, pixels)

    @staticmethod
    def _logits(model: InferenceModel, contract: VisionContract, pixels: np.ndarray) -> np.ndarray:
        batches = [
            model.predict(
                normalise(pixels[start : start + EVAL_BATCH], contract.mean, contract.std)
            )
            for start in range(0, len(pixels), EVAL_BATCH)
        ]
        return np.concatenate(batches)

    def example_input(self, preprocessing: dict[str, Any], batch: int) -> np.ndarray:
        contract = VisionContract.parse(preprocessing)
        pixels, _ = load_part(Path(self.cfg.paths.prepared), "test")
        return normalise(pixels[:batch], contract.mean, contract.std)

    def tensor_specs(
        self, preprocessing: dict[str, Any]
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        contract = VisionContract.parse(preprocessing)
        size, classes = contract.image_size, len(contract.classes)
        return (
            [TensorSpec(name="image", dtype="float32", shape=["batch", 3, size, size])],
            [
                TensorSpec(name="logits", dtype="float32", shape=["batch", classes]),
                # the compact embedding the server logs for drift (drift_features)
                TensorSpec(name=EMBEDDING_OUTPUT, dtype="float32", shape=["batch", EMBEDDING_SIZE]),
            ],
        )

    def reference_profile(
        self, run: RunDir, preprocessing: dict[str, Any], onnx_model: Path
    ) -> ReferenceProfile:
        """A stratified, seeded sample of the training images (see :mod:`.reference_sample`),
        with the evaluation's accuracy and macro-F1 for realised accuracy to be compared with."""
        contract = VisionContract.parse(preprocessing)
        seed = int(self.cfg.seed)
        raw = Path(self.cfg.paths.raw)
        if self._source(raw).exists():
            index = self._index(raw)
            if tuple(index.classes) != contract.classes:
                raise DataError(
                    f"the images at {index.source} have classes {index.classes}, the model "
                    f"{list(contract.classes)}: run `modelyard data prepare` and train again"
                )
            split = self.data.split
            train = stratified_split(
                index.labels, float(split.test_fraction), float(split.val_fraction), int(split.seed)
            )["train"]
            chosen = train[stratified_sample(index.labels[train], REFERENCE_ROWS, seed)]
            with member_reader(index.source) as read:
                images = [partial(_decode_member, read, index.members[i], contract) for i in chosen]
                rows = profile_rows(images, contract, onnx_model)
            how = "decoded from the original files as the server decodes an upload"
        else:
            pixels, labels = load_part(Path(self.cfg.paths.prepared), "train")
            train = labels
            chosen = stratified_sample(labels, REFERENCE_ROWS, seed)
            rows = profile_rows(
                [partial(cached_image, pixels[i]) for i in chosen], contract, onnx_model
            )
            how = (
                f"from the prepared pixel cache, since the raw images ({raw}) were absent: "
                "width, height and bytes_per_pixel are unknown"
            )
        drawn = (
            f"{len(rows)} of the {len(train)} training-split images, stratified by class "
            f"(each class keeps its share; seed {seed}), {how}; predictions and embedding by "
            "the exported ONNX model in ONNX Runtime"
        )
        return build_profile(rows, drawn, seed, self._promoted_metrics(run))

    def examples(self, preprocessing: dict[str, Any]) -> list[ExampleFile]:
        """A few test-split images of different classes, as their original files (see
        :mod:`.examples`); none when the raw images are absent."""
        raw = Path(self.cfg.paths.raw)
        if not self._source(raw).exists():
            return []
        index = self._index(raw)
        split = self.data.split
        test = stratified_split(
            index.labels, float(split.test_fraction), float(split.val_fraction), int(split.seed)
        )["test"]
        with member_reader(index.source) as read:
            return example_images(index, test, read)

    def _promoted_metrics(self, run: RunDir) -> dict[str, float]:
        """The run's evaluation accuracy and macro-F1 as realised accuracy expects them (none
        before it has been evaluated)."""
        path = run.evaluation_metrics
        if not path.is_file():
            return {}
        return promoted(json.loads(path.read_text()))

    def headline(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Accuracy and macro-F1; for two classes also ROC-AUC, PR-AUC and the threshold."""
        shown: dict[str, Any] = {
            k: round(float(metrics[k]), 4) for k in ("accuracy", "macro_f1") if k in metrics
        }
        binary = metrics.get("binary")
        if isinstance(binary, dict):
            decision = binary.get("decision")
            threshold = decision.get("threshold") if isinstance(decision, dict) else None
            ranked = {"roc_auc": binary.get("roc_auc"), "pr_auc": binary.get("pr_auc")}
            for key, value in {**ranked, "threshold": threshold}.items():
                if isinstance(value, int | float):  # None when the images are of one class
                    shown[key] = round(float(value), 4)
        return shown

    def gate_metrics(self, metrics: dict[str, Any]) -> dict[str, GateMetric]:
        """Accuracy and macro-F1 on the evaluation images."""
        return {
            key: GateMetric(float(metrics[key]), higher_is_better=True)
            for key in ("accuracy", "macro_f1")
        }

    def _evaluation_images(self, source: Path | None, classes: list[str]) -> tuple[Any, Any]:
        if source is None:
            return load_part(Path(self.cfg.paths.prepared), "test")
        index = self._index(source)
        unknown = sorted(set(index.classes) - set(classes))
        if unknown:
            raise DataError(f"{source} has classes the model does not know: {unknown}")
        rows = np.arange(len(index.members))
        labels = np.array([classes.index(index.classes[k]) for k in index.labels], np.int64)
        return cache_images(index, rows, self.size, progress=True), labels

    def evaluate(
        self,
        model: InferenceModel,
        preprocessing: dict[str, Any],
        source: Path | None,
        output_dir: Path,
    ) -> dict[str, Any]:
        contract = VisionContract.parse(preprocessing)
        classes = list(contract.classes)
        pixels, labels = self._evaluation_images(source, classes)
        logits, features, has_features = [], [], False
        for start in range(0, len(labels), EVAL_BATCH):
            batch = normalise(pixels[start : start + EVAL_BATCH], contract.mean, contract.std)
            logits.append(model.predict(batch))
            embedded = model.embed(batch)  # None for a bundle: the logits are plotted instead
            has_features = embedded is not None
            features.append(embedded if embedded is not None else logits[-1])
        all_logits = np.concatenate(logits)
        predicted = all_logits.argmax(axis=1)
        scores = classification_scores(labels, predicted, classes)
        plots = output_dir / "plots"
        confusion = plot_confusion_matrix(
            plots / "confusion_matrix.png", scores["confusion_matrix"], classes
        )
        embedding = plot_embedding(
            plots / "embedding.png", np.concatenate(features), labels, classes
        )
        metrics: dict[str, Any] = {
            "task": "vision",
            "source": str(source) if source is not None else str(self.cfg.paths.prepared),
            **scores,
            # how uncertain the accuracy is with this many images
            "accuracy_interval": accuracy_interval(int((predicted == labels).sum()), labels.size),
            "baseline": majority_baseline(labels, classes),
            "embedding_of": "penultimate features" if has_features else "logits",
            "plots": [str(confusion), str(embedding)],
        }
        if len(classes) == 2:
            binary = self._binary_evaluation(contract, all_logits, labels, plots)
            metrics["binary"] = binary
            metrics["plots"] += [
                binary[c]["plot"] for c in ("roc_curve", "pr_curve") if c in binary
            ]
        return metrics

    def _binary_evaluation(
        self, contract: VisionContract, logits: np.ndarray, labels: np.ndarray, plots: Path
    ) -> dict[str, Any]:
        """ROC-AUC, PR-AUC and their curves for the positive class; the scores at the
        contract's decision threshold (when the run has one)."""
        classes = list(contract.classes)
        decision = contract.decision
        positive = decision.positive_class if decision else self._positive_class(classes)
        assert positive is not None
        index = classes.index(positive)
        truth = (labels == index).astype(np.int64)
        probability = softmax(logits)[:, index]
        result: dict[str, Any] = {
            "positive_class": positive,
            "positive_class_rule": _positive_rule(decision is not None, self.decision_rule),
            "prevalence": float(truth.mean()) if truth.size else 0.0,
        }
        if truth.size and truth.min() != truth.max():
            result |= self._ranking(truth, probability, positive, plots)
        else:  # e.g. --source with one class folder: nothing to rank, the rest still holds
            result["ranking_skipped"] = (
                f"the {truth.size} evaluated images are of one class: ROC-AUC and PR-AUC need both"
            )
        if decision is not None:
            decided = np.where(probability >= decision.threshold, index, 1 - index)
            at = classification_scores(labels, decided, classes)
            result["decision"] = decision.model_dump(mode="json")
            result["at_threshold"] = {
                "accuracy": at["accuracy"],
                "macro_f1": at["macro_f1"],
                "precision": at["per_class"][positive]["precision"],
                "recall": at["per_class"][positive]["recall"],
                "f1": at["per_class"][positive]["f1"],
                "confusion_matrix": at["confusion_matrix"],
            }
        return result

    @staticmethod
    def _ranking(
        truth: np.ndarray, probability: np.ndarray, positive: str, plots: Path
    ) -> dict[str, Any]:
        """ROC-AUC, PR-AUC, their curves (points and PNG) and the constant-score baseline."""
        ranking = ranking_scores(truth, probability)
        prevalence = float(truth.mean())
        roc = plot_roc_curve(
            plots / "roc_curve.png", ranking["roc_curve"], ranking["roc_auc"], positive
        )
        pr = plot_pr_curve(
            plots / "pr_curve.png", ranking["pr_curve"], ranking["pr_auc"], prevalence, positive
        )
        ranking["roc_curve"]["plot"], ranking["pr_curve"]["plot"] = str(roc), str(pr)
        # a constant score ranks nothing: ROC-AUC 0.5, and average precision = the prevalence
        return {**ranking, "baseline": {"roc_auc": 0.5, "pr_auc": prevalence}}


def _positive_rule(from_decision: bool, rule: DecisionRule) -> str:
    if from_decision:
        return "the model's decision (chosen at training from project.decision.positive)"
    if rule.positive is not None:
        return "configured (project.decision.positive)"
    return "the second class in the model's class order (project.decision.positive unset)"


def _decode_member(read: Callable[[str], bytes], member: str, contract: VisionContract) -> Decoded:
    return decoded_upload(read(member), contract)


def _plain(options: Any) -> dict[str, Any]:
    """Config options as plain containers: checkpoints must not hold OmegaConf objects."""
    if options is None:
        return {}
    container = OmegaConf.to_container(options, resolve=True)
    if not isinstance(container, dict):
        raise ConfigError("model.backbone_options must be a mapping")
    return {str(k): v for k, v in container.items()}
