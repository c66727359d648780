"""Benchmark: DataLoader worker processes (num_workers) and DDP processes on this machine.

    python benchmarks/data_loading.py --nilm-source ../shared/datasets/nilm \\
        --images-source ../shared/datasets/images [--projects nilm eurosat] [--workers 0 1 2]

For each project (``experiment=quick`` data, model and batch limits), side by side in one run and
alternating between settings so that machine noise hits all of them:

* **loader**: training batches per second drawn from the real ``train_dataloader()`` alone
  (after ``--warmup`` batches, so starting the workers is not counted; it is reported apart as
  the time to the first batch);
* **epoch**: one quick training epoch with ``lightning.Trainer.fit`` on the real DataModule and
  model - wall time of the whole fit (worker start-up and validation included) and training
  batches per second after the warm-up;

for each ``num_workers`` in ``--workers``, with ratios to ``num_workers=0``. Then **DDP**: the
same number of training windows through ``modelyard train`` (a subprocess, as a user runs it)
with one process (``trainer=cpu``, ``2k`` batches; torch's default threads, and one thread) and
with two (``trainer=ddp``, ``k`` batches each; Lightning gives each ``cores / 2`` threads),
compared by the training time rank 0 records in ``train.json`` (for DDP it includes starting
rank 1, a few seconds).
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from bench_common import write_results
from modelyard.core.config import load_config
from modelyard.core.families import load_task
from modelyard.core.seeding import seed_everything
from modelyard.projects.torch_model import LightningModel
from modelyard.projects.worker_seeding import check_num_workers
from modelyard.stages import fetch, prepare
from train_throughput import BatchClock, timed_trainer

SOURCES = {"nilm": "nilm_source", "eurosat": "images_source", "plants": "images_source"}


def arguments() -> argparse.Namespace:
    result = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    result.add_argument("--nilm-source", help="NILM data directory or URL")
    result.add_argument("--images-source", help="directory holding eurosat_rgb.zip etc.")
    result.add_argument("--projects", nargs="+", default=["nilm", "eurosat"], choices=SOURCES)
    result.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    result.add_argument("--loader-batches", type=int, default=100, help="timed loader batches")
    result.add_argument("--warmup", type=int, default=5, help="untimed batches per measurement")
    result.add_argument("--repeats", type=int, default=3, help="alternating repeats")
    result.add_argument("--ddp-batches", type=int, default=30, help="batches per DDP rank")
    result.add_argument("--no-ddp", action="store_true", help="skip the 1 vs 2 processes runs")
    result.add_argument("--workdir", default=".modelyard-bench", help="modelyard working dir")
    result.add_argument("--name", default="data_loading", help="results file (without .json)")
    result.add_argument("--report", help="print the tables of a results file and stop")
    result.add_argument("overrides", nargs="*", help="Hydra overrides for every project")
    return result.parse_args()


def project_config(args: argparse.Namespace, project: str) -> DictConfig:
    """``experiment=quick`` for ``project``, its data fetched and prepared in ``--workdir``."""
    source = getattr(args, SOURCES[project])
    if not source:
        raise SystemExit(f"--{SOURCES[project].replace('_', '-')} is needed for {project}")
    overrides = [f"project={project}", "experiment=quick", *args.overrides]
    cfg = load_config([*overrides, f"paths.workdir={args.workdir}"])
    fetch.run(cfg, source=source, progress=False)
    if not any(Path(cfg.paths.prepared).glob("*.npz")):
        prepare.run(cfg)
    return cfg


def datamodule(cfg: DictConfig, workers: int) -> Any:
    """The project's real DataModule, set up, making batches in ``workers`` processes."""
    module: Any = load_task(cfg).datamodule()
    # Every project's DataModule reads num_workers when it builds a loader; set here rather than
    # through project.data.num_workers, which not every task passes on yet.
    module.num_workers = check_num_workers(workers)
    module.setup("fit")
    return module


def endless(loader: Any) -> Iterator[Any]:
    """Batches of ``loader`` epoch after epoch (persistent workers carry on)."""
    while True:
        yield from loader


def loader_rate(cfg: DictConfig, workers: int, batches: int, warmup: int) -> tuple[float, float]:
    """(training batches per second after ``warmup``, seconds to the first batch)."""
    loader = datamodule(cfg, workers).train_dataloader()
    started = time.perf_counter()
    stream = endless(loader)
    next(stream)
    first = time.perf_counter() - started
    for _ in range(warmup):
        next(stream)
    started = time.perf_counter()
    for _ in range(batches):
        next(stream)
    rate = batches / (time.perf_counter() - started)
    del stream, loader
    gc.collect()  # let the workers go before the next measurement
    return rate, first


def epoch_run(cfg: DictConfig, workers: int, warmup: int) -> tuple[float, float]:
    """One quick training epoch: (wall seconds of the fit, training batches/s after warm-up)."""
    module = datamodule(cfg, workers)
    built = load_task(cfg).build_model(module)
    assert isinstance(built, LightningModel)
    model = built.module
    clock = BatchClock(warmup)
    trainer = timed_trainer(
        cfg, clock, cfg.trainer.limit_train_batches, cfg.trainer.limit_val_batches
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=module)
    wall = time.perf_counter() - started
    timed = int(trainer.num_training_batches) - warmup
    del trainer, model, module
    gc.collect()
    return wall, timed / (clock.finished - clock.started)


#: (processes, torch threads per process; None: the default) of the DDP comparison.
DDP_SETTINGS: tuple[tuple[int, int | None], ...] = ((1, None), (1, 1), (2, None))


def ddp_run(
    args: argparse.Namespace, project: str, devices: int, threads: int | None
) -> dict[str, Any]:
    """``modelyard train`` with ``devices`` processes, the same windows in total either way."""
    batches = args.ddp_batches * (2 // devices)
    workdir = Path(args.workdir)
    run_name = f"bench-ddp{devices}-{threads}-{time.time_ns()}"
    command = [
        str(Path(sys.executable).parent / "modelyard"),
        "train",
        f"project={project}",
        "experiment=quick",
        "trainer=cpu" if devices == 1 else "trainer=ddp",
        "tracking=none",
        f"paths.workdir={workdir}",
        f"run_name={run_name}",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={batches}",
        "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
        *([f"trainer.num_threads={threads}"] if threads else []),
        *args.overrides,
    ]
    env = {k: v for k, v in os.environ.items() if k != "MODELYARD_RUN_NAME"}
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - started
    cfg = load_config([f"project={project}", f"paths.workdir={workdir}"])
    summary = json.loads((Path(cfg.paths.runs) / run_name / "train.json").read_text())
    return {
        "processes": devices,
        "threads": threads,
        "batches_per_process": batches,
        "train_s": float(summary["duration_s"]),
        "command_s": wall,
    }


def best_and_median(
    values: dict[Any, list[float]], higher_is_better: bool
) -> dict[int, tuple[float, float]]:
    """Per num_workers: (best run, median run). Keys may be JSON strings."""
    pick = max if higher_is_better else min
    return {int(w): (pick(v), statistics.median(v)) for w, v in values.items()}


def workers_table(result: dict[str, Any]) -> str:
    """Markdown table: best of the repeats (the least disturbed by other work), then the median;
    ratios are to num_workers=0."""
    columns = (
        ("loader batches/s", "loader_batches_per_s", True),
        ("epoch wall (s)", "epoch_wall_s", False),
        ("train batches/s", "train_batches_per_s", True),
    )
    stats = {key: best_and_median(result[key], better) for _, key, better in columns}
    first = best_and_median(result["first_batch_s"], higher_is_better=False)
    lines = [
        "| num_workers | "
        + " | ".join(f"{title}: best / median" for title, _, _ in columns)
        + " | first batch (s) |",
        "|---|---|---|---|---|",
    ]
    for w in sorted(first):
        cells = []
        for _, key, _ in columns:
            (best, median), (best0, median0) = stats[key][w], stats[key][0]
            cells.append(
                f"{best:.1f} ({best / best0:.2f}x) / {median:.1f} ({median / median0:.2f}x)"
            )
        lines.append(f"| {w} | " + " | ".join(cells) + f" | {first[w][1]:.2f} |")
    return "\n".join(lines)


def ddp_lines(runs: list[dict[str, Any]]) -> str:
    """One line per (processes, threads): best and median training time of the same windows."""
    lines = []
    settings = sorted({(r["processes"], r["threads"] or 0) for r in runs})
    for processes, threads in settings:
        mine = [r for r in runs if (r["processes"], r["threads"] or 0) == (processes, threads)]
        train = [r["train_s"] for r in mine]
        lines.append(
            f"{processes} process(es) x {mine[0]['batches_per_process']} batches, "
            f"threads {threads or 'default'}: training best {min(train):.1f} s, median "
            f"{statistics.median(train):.1f} s (runs {[round(t, 1) for t in train]}); whole "
            f"command median {statistics.median(r['command_s'] for r in mine):.1f} s"
        )
    return "\n".join(lines)


def report(payload: dict[str, Any]) -> None:
    for project, result in payload["projects"].items():
        print(
            f"\n{project}: batch {result['batch_size']}, {result['limit_train_batches']} "
            f"training batches/epoch, torch threads {payload['threads']}"
        )
        print(workers_table(result))
        if "ddp" in result:
            print(ddp_lines(result["ddp"]))


def measure(args: argparse.Namespace, project: str) -> dict[str, Any]:
    cfg = project_config(args, project)
    seed_everything(int(cfg.seed), int(cfg.trainer.get("num_threads", 0)))
    loader: dict[int, list[float]] = {w: [] for w in args.workers}
    first: dict[int, list[float]] = {w: [] for w in args.workers}
    wall: dict[int, list[float]] = {w: [] for w in args.workers}
    train: dict[int, list[float]] = {w: [] for w in args.workers}
    for _ in range(args.repeats):
        for w in args.workers:
            rate, startup = loader_rate(cfg, w, args.loader_batches, args.warmup)
            loader[w].append(rate)
            first[w].append(startup)
            seconds, batches_per_s = epoch_run(cfg, w, args.warmup)
            wall[w].append(seconds)
            train[w].append(batches_per_s)
    result: dict[str, Any] = {
        "batch_size": int(cfg.project.data.batch_size),
        "limit_train_batches": cfg.trainer.limit_train_batches,
        "limit_val_batches": cfg.trainer.limit_val_batches,
        "loader_batches_per_s": loader,
        "first_batch_s": first,
        "epoch_wall_s": wall,
        "train_batches_per_s": train,
    }
    print(f"\n{project}:\n{workers_table(result)}")
    if not args.no_ddp:
        result["ddp"] = [
            ddp_run(args, project, devices, threads)
            for _ in range(args.repeats)
            for devices, threads in DDP_SETTINGS
        ]
        print(ddp_lines(result["ddp"]))
    return result


def main() -> None:
    args = arguments()
    if args.report:
        report(json.loads(Path(args.report).read_text()))
        return
    load_before = os.getloadavg()
    results = {project: measure(args, project) for project in args.projects}
    path = write_results(
        args.name,
        {
            "command": " ".join(sys.argv),
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            # Other work on the machine skews every number; the 1/5/15-minute load averages
            # before and after the run say how much there was.
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "threads": torch.get_num_threads(),
            "workers": args.workers,
            "repeats": args.repeats,
            "projects": results,
        },
    )
    report(json.loads(path.read_text()))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
