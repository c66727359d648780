"""Lightning wrapper around an image backbone: loss, optimiser, LR schedule and epoch metrics."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from modelyard.core.errors import ConfigError
from modelyard.projects.distributed import gather_rows
from modelyard.projects.vision.drift_features import embedding_projection
from modelyard.projects.vision.metrics import classification_scores
from modelyard.projects.vision.model import build_backbone, frozen_modules


class WarmupCosine:
    """LR multiplier: linear warm-up from ~0 to 1, then a cosine decay to ``floor``.

    A callable object rather than a closure, so that ``LambdaLR`` can save and restore its state
    in a checkpoint. Warm-up matters for AdamW from scratch with BatchNorm: the first updates,
    made with poor second-moment estimates, would otherwise be the largest of the run.
    """

    def __init__(self, total_steps: int, warmup_steps: int, floor: float) -> None:
        self.total_steps = max(1, total_steps)
        self.warmup_steps = min(max(0, warmup_steps), self.total_steps - 1)
        self.floor = floor

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


#: Test-time augmentation: the views of an image whose predicted probabilities are averaged.
TEST_TIME_VIEWS = ("none", "hflip", "flips", "dihedral")


def augmented_views(images: torch.Tensor, views: str) -> list[torch.Tensor]:
    """``hflip``: the image and its mirror; ``flips``: + upside down, + both (rotated 180°);
    ``dihedral``: all 8 rotations and reflections of a square image (aerial tiles have no up)."""
    out = [images]
    if views in ("hflip", "flips", "dihedral"):
        out.append(images.flip(3))
    if views == "flips":
        out.extend([images.flip(2), images.flip(2).flip(3)])
    if views == "dihedral":
        turned = [torch.rot90(images, k, dims=(2, 3)) for k in (1, 2, 3)]
        out.extend(turned)
        out.extend(view.flip(3) for view in turned)
    return out


class ImageClassifier(L.LightningModule):
    """Cross-entropy classifier; checkpoints are selected on ``val_error`` = 1 - macro-F1.

    Macro-F1 rather than accuracy or loss, because the potato-leaf classes are imbalanced: a
    model that ignores the rare class can have a good accuracy but not a good macro-F1.

    ``test_time_augmentation`` (one of :data:`TEST_TIME_VIEWS`) is part of the trained model:
    in eval mode ``forward`` returns the log of the class probabilities averaged over the views,
    so evaluation, ONNX export and serving all predict with it (at the views' cost). Training
    and validation (checkpoint selection) use the single view.
    """

    class_weights: torch.Tensor | None

    def __init__(
        self,
        n_classes: int,
        class_names: Sequence[str] | None = None,
        backbone: str = "resnet_small",
        backbone_options: Mapping[str, Any] | None = None,
        class_weights: Sequence[float] | None = None,
        lr: float = 2e-3,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.0,
        max_epochs: int | None = None,
        warmup_fraction: float = 0.05,
        min_lr_fraction: float = 0.01,
        test_time_augmentation: str = "none",
        freeze: str = "none",
        pretrained_lr_scale: float = 1.0,
        network: nn.Module | None = None,
    ) -> None:
        """``max_epochs``: length of the cosine schedule in epochs; ``None`` spans the whole
        Trainer run (``trainer.estimated_stepping_batches``). Past its end the LR stays at
        ``min_lr_fraction * lr``. ``warmup_fraction`` of the schedule's steps warm up linearly.

        ``freeze`` (:data:`.model.FREEZE_POLICIES`) fixes the body's stages (their BatchNorms
        stay in eval mode); ``pretrained_lr_scale`` multiplies the learning rate of the body
        (every layer but the head) that still trains. ``network``: an already built backbone
        (timm's pretrained one) instead of ``build_backbone(backbone, ...)``; it is not a
        hyperparameter, a checkpoint rebuilds the backbone by name and loads its weights.
        """
        super().__init__()
        names = [str(name) for name in class_names] if class_names is not None else None
        if names is not None and len(names) != n_classes:
            raise ConfigError(f"{len(names)} class names given for {n_classes} classes")
        if class_weights is not None and len(class_weights) != n_classes:
            raise ConfigError(f"{len(class_weights)} class weights given for {n_classes} classes")
        if class_weights is not None and any(float(w) <= 0 for w in class_weights):
            raise ConfigError(f"class weights must be positive, got {list(class_weights)}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ConfigError(f"model.warmup_fraction must be in [0, 1), got {warmup_fraction}")
        if test_time_augmentation not in TEST_TIME_VIEWS:
            raise ConfigError(
                f"model.test_time_augmentation must be one of {', '.join(TEST_TIME_VIEWS)}, "
                f"got {test_time_augmentation!r}"
            )
        if not 0.0 < pretrained_lr_scale <= 1.0:
            raise ConfigError(
                f"model.pretrained_lr_scale must be in (0, 1], got {pretrained_lr_scale}"
            )
        self.save_hyperparameters(ignore=["network"])
        self.class_names = names or [str(i) for i in range(n_classes)]
        self.net = (
            network
            if network is not None
            else build_backbone(backbone, n_classes, **dict(backbone_options or {}))
        )
        # A plain list, not submodules: the same modules are already registered under self.net.
        self._frozen: list[nn.Module] = frozen_modules(self.net, freeze)
        for module in self._frozen:
            module.requires_grad_(False)
        weights = None
        if class_weights is not None:
            weights = torch.tensor([float(w) for w in class_weights], dtype=torch.float32)
        # A buffer, so the weights follow the module to the GPU and into the checkpoint.
        self.register_buffer("class_weights", weights)
        self._val_predictions: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def train(self, mode: bool = True) -> "ImageClassifier":
        """As ``nn.Module.train``, but frozen layers stay in eval mode: their BatchNorms keep
        the pretrained running statistics instead of drifting to the new data's."""
        super().train(mode)
        if mode:
            for module in self._frozen:
                module.eval()
        return self

    def on_train_start(self) -> None:
        """Lightning keeps each module's mode rather than calling ``train()`` when fitting
        starts: frozen layers go to eval mode here (after its check that warns about modules in
        eval mode, which would be a false alarm), and again on every ``train()``."""
        self.train(self.training)

    def head_parameters(self) -> list[nn.Parameter]:
        """The classification head's parameters (the rest is the body); all of them for a
        network that does not name its head (a timm model)."""
        head = getattr(self.net, "head_name", None)
        if head is None:
            return list(self.net.parameters())
        return list(self.net.get_submodule(str(head)).parameters())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) float32 -> (batch, n_classes) logits.

        In eval mode with test-time augmentation: log of the views' mean class probabilities
        (a softmax of it gives those mean probabilities).
        """
        views = str(self.hparams.get("test_time_augmentation", "none"))
        if self.training or views == "none":
            logits: torch.Tensor = self.net(images)
            return logits
        return self._averaged_views(self.net(images), images, views)

    def _averaged_views(
        self, logits: torch.Tensor, images: torch.Tensor, views: str
    ) -> torch.Tensor:
        """Log of the mean probabilities over the views; ``logits`` are the first view's."""
        probabilities = [torch.softmax(logits, dim=1)] + [
            torch.softmax(self.net(view), dim=1) for view in augmented_views(images, views)[1:]
        ]
        return torch.log(torch.stack(probabilities).mean(dim=0))

    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward`'s logits and the image's penultimate features (of the image itself,
        not its test-time views), from one pass when the backbone can ``classify`` features."""
        features = self.embed(images)
        classify = getattr(self.net, "classify", None)
        logits: torch.Tensor = classify(features) if callable(classify) else self.net(images)
        views = str(self.hparams.get("test_time_augmentation", "none"))
        if not self.training and views != "none":
            logits = self._averaged_views(logits, images, views)
        return logits, features

    def export_module(self, example: torch.Tensor) -> "WithEmbedding":
        """What the ONNX export traces: the logits and the compact embedding (two outputs)."""
        with torch.inference_mode():
            width = int(self.embed(example[:1]).shape[1])
        return WithEmbedding(self, embedding_projection(width))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) float32 -> (batch, features) penultimate features."""
        features: torch.Tensor = self.net.embed(images)  # type: ignore[operator]
        return features

    def compute_loss(
        self, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy (class-weighted, label-smoothed as configured) and the logits.

        With class weights the loss is the weighted mean ``sum(w[y] * nll) / sum(w[y])``, so its
        scale does not depend on the weights' overall size, only on their ratios.
        """
        logits = self.net(images)
        loss = nn.functional.cross_entropy(
            logits,
            targets,
            weight=self.class_weights,
            label_smoothing=float(self.hparams["label_smoothing"]),
        )
        return loss, logits

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, targets = batch
        loss, _ = self.compute_loss(images, targets)
        # Epoch-level only and off the progress bar: per-step logging costs Lightning a few
        # percent of a small network's step time.
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_predictions = []
        self._val_targets = []

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        loss, logits = self.compute_loss(images, targets)
        self.log("val_loss", loss, prog_bar=True, batch_size=len(images), sync_dist=True)
        self._val_predictions.append(logits.argmax(dim=1).cpu())
        self._val_targets.append(targets.cpu())

    def on_validation_epoch_end(self) -> None:
        """Accuracy and macro-F1 over the whole validation set, not averaged over batches.

        F1 is not a mean of per-batch values (a batch without a rare class would score it 0),
        so predictions are gathered over the epoch and scored once.
        """
        empty = torch.zeros(0, dtype=torch.long)
        # under DDP each rank holds a share of the validation set: score all of it
        predictions = gather_rows(torch.cat(self._val_predictions or [empty])).numpy()
        targets = gather_rows(torch.cat(self._val_targets or [empty])).numpy()
        if targets.size == 0:
            return
        scores = classification_scores(targets, predictions, self.class_names)
        self.log("val_acc", float(scores["accuracy"]), prog_bar=True)
        self.log("val_macro_f1", float(scores["macro_f1"]), prog_bar=True)
        self.log("val_error", 1.0 - float(scores["macro_f1"]))
        self._val_predictions = []
        self._val_targets = []

    def _schedule_steps(self) -> int:
        """Optimiser steps the cosine schedule spans (see ``max_epochs`` in ``__init__``)."""
        trainer = self.trainer
        total = float(trainer.estimated_stepping_batches)
        max_epochs = self.hparams["max_epochs"]
        if max_epochs is not None:
            per_epoch = float(trainer.num_training_batches) / trainer.accumulate_grad_batches
            total = float(max_epochs) * math.ceil(per_epoch) if math.isfinite(per_epoch) else total
        if not math.isfinite(total):
            raise ConfigError(
                "the LR schedule needs a finite run: set trainer.max_epochs or model.max_epochs"
            )
        return max(1, int(total))

    def configure_optimizers(self) -> Any:
        """AdamW with a per-step warm-up + cosine schedule.

        Biases and normalisation parameters (the 1-D tensors) get no weight decay: shrinking a
        BatchNorm scale towards 0 only fights the normalisation and does not regularise. The
        body's parameters (all but the head) learn at ``pretrained_lr_scale`` times the rate;
        frozen ones are left out.
        """
        lr = float(self.hparams["lr"])
        scale = float(self.hparams.get("pretrained_lr_scale", 1.0))
        head_ids = {id(p) for p in self.head_parameters()}
        groups = []
        for in_head, group_lr in ((False, lr * scale), (True, lr)):
            chosen = [
                p for p in self.parameters() if p.requires_grad and (id(p) in head_ids) == in_head
            ]
            for decays in (True, False):
                params = [p for p in chosen if (p.ndim > 1) == decays]
                if params:
                    decay = float(self.hparams["weight_decay"]) if decays else 0.0
                    groups.append({"params": params, "weight_decay": decay, "lr": group_lr})
        optimiser = torch.optim.AdamW(groups, lr=lr)
        total = self._schedule_steps()
        schedule = WarmupCosine(
            total,
            round(float(self.hparams["warmup_fraction"]) * total),
            float(self.hparams["min_lr_fraction"]),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
        return {
            "optimizer": optimiser,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


class WithEmbedding(nn.Module):
    """A classifier with a second output: its penultimate features times a fixed projection
    (:func:`.drift_features.embedding_projection`), the compact embedding the server logs for
    drift monitoring. The projection is a buffer, so it is a constant of the exported graph."""

    projection: torch.Tensor

    def __init__(self, classifier: ImageClassifier, projection: np.ndarray) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("projection", torch.from_numpy(projection))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.classifier.logits_and_features(images)
        return logits, features @ self.projection
