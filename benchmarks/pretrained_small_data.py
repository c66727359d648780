"""A small two-class image problem from scratch vs initialised from a backbone modelyard trained.

The in-house stand-in for ImageNet weights (issue 19): a backbone is trained on EuroSAT without
the two classes of the small problem (``--backbone-per-class`` images of each of the other
eight), then the small problem (``--per-class`` images of each of two similar classes, none of
them seen by the backbone) is trained three times with the same schedule, data and seeds: from
scratch, with ``model.pretrained=<the backbone's run>`` (its normalisation too, the head
replaced), and with that and all but the last stage frozen. All are projects written by
``modelyard init image`` into a scratch working directory, as a user would. Reported per
seed: test accuracy with its 95 % Wilson interval, macro-F1, ROC-AUC and the trivial baseline.

    python benchmarks/pretrained_small_data.py --source ../shared/datasets/images/eurosat_rgb.zip
"""

import argparse
import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from bench_common import write_results
from modelyard.core.config import load_config
from modelyard.core.config_dir import CONFIG_DIR_ENV
from modelyard.stages import evaluate, fetch, prepare, train
from modelyard.stages.init_project import init_image

PAIR = ("AnnualCrop", "PermanentCrop")  # two EuroSAT classes that look alike
COMMON = [
    "experiment=quick",
    # 20 validation images stop a run after 3 epochs without a better score (trainer/cpu.yaml)
    "trainer.early_stopping_patience=10",
    "tracking=none",
    "trainer.enable_progress_bar=false",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
]


def class_folder(archive: Path, classes: dict[str, tuple[int, int]], target: Path) -> Path:
    """Images ``[start, stop)`` (in name order) of each class of the zip, as a class folder."""
    with zipfile.ZipFile(archive) as source:
        names = sorted(source.namelist())
        for name, (start, stop) in classes.items():
            members = [m for m in names if f"/{name}/" in m and not m.endswith("/")][start:stop]
            (target / name).mkdir(parents=True)
            for member in members:
                (target / name / Path(member).name).write_bytes(source.read(member))
    return target


def eurosat_classes(archive: Path) -> list[str]:
    with zipfile.ZipFile(archive) as source:
        return sorted({Path(m).parent.name for m in source.namelist() if not m.endswith("/")})


def run_project(name: str, folder: Path, workdir: Path, overrides: list[str]) -> dict[str, Any]:
    """init → fetch → prepare → train → evaluate; the run, its metrics and the training time."""
    init_image(name, folder, workdir / "conf")
    cfg = load_config([f"project={name}", f"paths.workdir={workdir}", *COMMON, *overrides])
    fetch.run(cfg, progress=False)
    prepare.run(cfg)
    started = time.perf_counter()
    trained = train.run(cfg)
    seconds = time.perf_counter() - started
    metrics, _ = evaluate.run(cfg, model=trained.run_dir)
    return {"run": str(trained.run_dir), "train_s": round(seconds, 1), "metrics": metrics}


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    interval = metrics["accuracy_interval"]
    binary = metrics.get("binary") or {}
    return {
        "accuracy": metrics["accuracy"],
        "accuracy_95": [interval["low"], interval["high"]],
        "test_images": interval["n"],
        "macro_f1": metrics["macro_f1"],
        "roc_auc": binary.get("roc_auc"),
        "baseline_accuracy": metrics["baseline"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="eurosat_rgb.zip")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--backbone-per-class", type=int, default=300)
    parser.add_argument("--backbone-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--name", default="pretrained_small_data")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="modelyard-pretrained-") as scratch:
        work = Path(scratch)
        os.environ[CONFIG_DIR_ENV] = str(work / "conf")
        (work / "conf").mkdir()
        others = [c for c in eurosat_classes(args.source) if c not in PAIR]
        backbone_images = class_folder(
            args.source,
            dict.fromkeys(others, (0, args.backbone_per_class)),
            work / "backbone-images",
        )
        backbone = run_project(
            "landcover8", backbone_images, work, [f"trainer.max_epochs={args.backbone_epochs}"]
        )
        print(f"backbone: {summary(backbone['metrics'])}", flush=True)
        small = class_folder(
            args.source, dict.fromkeys(PAIR, (0, args.per_class)), work / "small-images"
        )
        # 30 % test, 20 % validation; batches of 16 so that an epoch is a few steps, not one
        split = [
            "project.data.split.test_fraction=0.3",
            "project.data.split.val_fraction=0.2",
            "project.data.batch_size=16",
        ]
        pretrained = f"model.pretrained={backbone['run']}"
        arms = {
            "scratch": [],
            "pretrained": [pretrained],
            "pretrained_frozen": [pretrained, "model.freeze=all_but_last_stage"],
        }
        results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for seed in args.seeds:
            for arm, extra in arms.items():
                name = f"pair-{arm}-{seed}"
                run = run_project(
                    name,
                    small,
                    work,
                    [*split, f"seed={seed}", f"trainer.max_epochs={args.epochs}", *extra],
                )
                results[arm].append(
                    {"seed": seed, "train_s": run["train_s"], **summary(run["metrics"])}
                )
                print(f"{arm} seed {seed}: {results[arm][-1]}", flush=True)
    payload = {
        "pair": PAIR,
        "per_class": args.per_class,
        "backbone": {
            "classes": others,
            "per_class": args.backbone_per_class,
            "epochs": args.backbone_epochs,
            "train_s": backbone["train_s"],
            **summary(backbone["metrics"]),
        },
        "epochs": args.epochs,
        "results": results,
        "median_accuracy": {
            arm: statistics.median(r["accuracy"] for r in rows) for arm, rows in results.items()
        },
    }
    print(f"results: {write_results(args.name, payload)}")


if __name__ == "__main__":
    main()
