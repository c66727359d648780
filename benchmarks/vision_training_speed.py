"""Benchmark: training speed of the image CNN under two variants of the config, side by side.

    # memory layout: channels-first (NCHW) vs channels-last (NHWC), the default variants
    python benchmarks/vision_training_speed.py --source ../shared/datasets/images project=eurosat \
        model.backbone_options.stem_stride=2 trainer.limit_train_batches=40
    python benchmarks/vision_training_speed.py --source ../shared/datasets/images project=plants \
        trainer.limit_train_batches=8
    # precision: float32 vs bfloat16 autocast
    python benchmarks/vision_training_speed.py --source ../shared/datasets/images project=eurosat \
        trainer.limit_train_batches=20 --variants trainer.precision=32-true \
        trainer.precision=bf16-mixed

Runs the real ``modelyard train`` (``stages.train.run``: same config, same seed, one epoch) once
per variant (an override added to the others), alternately (A, B, B, A, ... so that drift in
machine load hits both), and reports per variant the median training throughput (images per
second, from the second training batch on), validation throughput and the validation scores.
Speed-up = second variant / first. Findings and numbers: docs/profiling.md.
"""

import platform
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from bench_common import parser, prepared_config, write_results
from modelyard.core.config import load_config
from modelyard.stages import train

LAYOUTS = (
    "model.backbone_options.channels_last=false",
    "model.backbone_options.channels_last=true",
)


class PhaseClock(L.Callback):
    """Training images/s from batch ``warmup`` on; validation images/s without the sanity check."""

    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup
        self.train_started = self.train_finished = 0.0
        self.train_images = 0
        self.val_seconds = 0.0
        self.val_images = 0
        self._val_started = 0.0

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.train_started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx >= self.warmup:
            self.train_images += int(batch[0].shape[0])
            self.train_finished = time.perf_counter()

    def on_validation_epoch_start(self, trainer: Any, module: Any) -> None:
        self._val_started = time.perf_counter()

    def on_validation_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int, *_: Any
    ) -> None:
        if not trainer.sanity_checking:
            self.val_images += int(batch[0].shape[0])

    def on_validation_epoch_end(self, trainer: Any, module: Any) -> None:
        if not trainer.sanity_checking:
            self.val_seconds += time.perf_counter() - self._val_started


def one_run(overrides: list[str], workdir: str, variant: str) -> dict[str, Any]:
    cfg = load_config(
        [
            *overrides,
            f"paths.workdir={workdir}",
            "tracking=none",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            variant,
        ]
    )
    clock = PhaseClock()
    result = train.run(cfg, callbacks=[clock])
    scores = _last_validation(result.run_dir / "logs" / "metrics.csv")
    return {
        "variant": variant,
        "train_images_per_s": clock.train_images / (clock.train_finished - clock.train_started),
        "val_images_per_s": clock.val_images / clock.val_seconds if clock.val_seconds else None,
        "fit_seconds": result.duration_s,
        **scores,
    }


def _last_validation(csv: Path) -> dict[str, float]:
    header, *rows = [line.split(",") for line in csv.read_text().splitlines()]
    wanted = ("val_acc", "val_macro_f1", "val_loss")
    for row in reversed(rows):
        values = dict(zip(header, row, strict=False))
        if all(values.get(name) for name in wanted):
            return {name: float(values[name]) for name in wanted}
    return {}


def main() -> None:
    args = parser(__doc__.splitlines()[0], "vision_training_speed")
    args.add_argument("--rounds", type=int, default=2, help="runs per variant")
    args.add_argument(
        "--variants", nargs=2, default=list(LAYOUTS), help="two overrides to compare (A, B)"
    )
    options = args.parse_args()
    overrides = list(options.overrides)
    if not any(o.startswith("experiment=") for o in overrides):
        overrides.insert(0, "experiment=baseline")
    probe = load_config([*overrides, f"paths.workdir={options.workdir}"])
    if not (Path(probe.paths.prepared) / "prepare.json").is_file():
        prepared_config(options)
    variants = list(options.variants)
    runs: list[dict[str, Any]] = []
    for round_index in range(options.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            runs.append(one_run(overrides, options.workdir, variant))
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in runs[-1].items()})
    summary = {}
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {
            "train_images_per_s": statistics.median(r["train_images_per_s"] for r in mine),
            "val_images_per_s": statistics.median(r["val_images_per_s"] or 0.0 for r in mine),
            "val_acc": [r.get("val_acc") for r in mine],
            "val_macro_f1": [r.get("val_macro_f1") for r in mine],
        }
    first, last = summary[variants[0]], summary[variants[1]]
    speedup = last["train_images_per_s"] / first["train_images_per_s"]
    print(f"\n{probe.project.name}, {torch.get_num_threads()} threads, {overrides}")
    for name, row in summary.items():
        print(f"  {name:15s} {row}")
    print(f"  training speed-up {variants[1]} / {variants[0]}: {speedup:.2f}x")
    write_results(
        options.name,
        {
            "overrides": overrides,
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "runs": runs,
            "summary": summary,
            "train_speedup": speedup,
        },
    )


if __name__ == "__main__":
    main()
