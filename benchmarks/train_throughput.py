"""Benchmark: training throughput of the real pipeline vs the limit of this machine.

    python benchmarks/train_throughput.py --source ../shared/datasets/nilm [HYDRA OVERRIDES...]

Three contenders, same model, same batch size, same number of threads, measured alternately in one
process (so machine noise hits all three):

* **data loader**: the same plain loop fed by the real ``NilmDataModule`` loader - the cost of
  the data pipeline alone;
* **pipeline**: ``lightning.Trainer.fit`` on the real ``NilmDataModule`` (prepared houses ->
  windows gathered per batch, oversampling, augmentation as configured) - what ``modelyard
  train`` runs;
* **tight loop**: the same LightningModule fed pre-made tensors in a plain Python loop
  (forward, loss, backward, optimiser step) - the limit for this model on this machine.

Data-pipeline overhead = 1 - data loader / tight loop (target: at most 10 %); whole overhead =
1 - pipeline / tight loop adds Lightning's own per-step cost.
"""

import platform
import statistics
import time
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from bench_common import parser, prepared_config, write_results
from modelyard.core.families import load_task
from modelyard.core.seeding import seed_everything
from modelyard.projects.nilm.lightning_module import Seq2PointModule
from modelyard.projects.torch_model import LightningModel


class BatchClock(L.Callback):
    """Times batches ``warmup`` .. end of an epoch, so start-up costs are not counted."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.started = 0.0
        self.finished = 0.0
        self.windows = 0

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx >= self.warmup:
            self.windows += int(batch[0].shape[0])
            self.finished = time.perf_counter()


def timed_trainer(
    cfg: DictConfig, clock: BatchClock, train_batches: int | float, val_batches: int | float
) -> L.Trainer:
    """One CPU epoch of ``train_batches`` with nothing but ``clock`` attached (no logger,
    checkpoints, progress bar or sanity check), clipped as configured."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=train_batches,
        limit_val_batches=val_batches,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
        gradient_clip_val=cfg.trainer.gradient_clip_val,
    )


def pipeline_rate(cfg: DictConfig, batches: int, warmup: int) -> float:
    task = load_task(cfg)
    datamodule = task.datamodule()
    datamodule.setup("fit")
    built = task.build_model(datamodule)
    clock = BatchClock(warmup)
    trainer = timed_trainer(cfg, clock, train_batches=batches + warmup, val_batches=0)
    assert isinstance(built, LightningModel)
    trainer.fit(built.module, datamodule=datamodule)
    return clock.windows / (clock.finished - clock.started)


def loop_rate(cfg: DictConfig, batches: int, warmup: int, real_loader: bool) -> float:
    """A plain training loop, fed either the real DataLoader or one pre-made batch."""
    task = load_task(cfg)
    datamodule = task.datamodule()
    datamodule.setup("fit")
    built = task.build_model(datamodule)
    assert isinstance(built, LightningModel)
    model = built.module
    assert isinstance(model, Seq2PointModule)
    model.train()
    optimiser = model.configure_optimizers()
    assert isinstance(optimiser, torch.optim.Optimizer)
    loader = iter(datamodule.train_dataloader())
    fixed = next(loader)
    clip = float(cfg.trainer.gradient_clip_val or 0.0)
    started, windows = 0.0, 0
    for step in range(batches + warmup):
        if step == warmup:
            started = time.perf_counter()
        x, y = next(loader) if real_loader else fixed
        optimiser.zero_grad()
        loss, _ = model.compute_loss(x, y)  # the module's own loss, exactly as in training
        loss.backward()  # type: ignore[no-untyped-call]
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimiser.step()
        if step >= warmup:
            windows += int(x.shape[0])
    return windows / (time.perf_counter() - started)


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], "train_throughput")
    arguments.add_argument("--batches", type=int, default=60, help="timed batches per repeat")
    arguments.add_argument("--warmup", type=int, default=5, help="untimed batches per repeat")
    arguments.add_argument("--repeats", type=int, default=3, help="alternating repeats")
    args = arguments.parse_args()
    cfg, overrides = prepared_config(args)
    seed_everything(int(cfg.seed), int(cfg.trainer.get("num_threads", 0)))
    pipeline, loader, tight = [], [], []
    for _ in range(args.repeats):
        tight.append(loop_rate(cfg, args.batches, args.warmup, real_loader=False))
        loader.append(loop_rate(cfg, args.batches, args.warmup, real_loader=True))
        pipeline.append(pipeline_rate(cfg, args.batches, args.warmup))
    p, t, d = statistics.median(pipeline), statistics.median(tight), statistics.median(loader)
    overhead = 1.0 - p / t
    print(
        f"\noverrides: {overrides}; batch {cfg.project.data.batch_size}; "
        f"threads {torch.get_num_threads()}"
    )
    print(f"tight loop : {t:10.0f} windows/s  (runs: {[round(v) for v in tight]})")
    print(f"data loader: {d:10.0f} windows/s  (runs: {[round(v) for v in loader]})")
    print(f"pipeline   : {p:10.0f} windows/s  (runs: {[round(v) for v in pipeline]})")
    print(f"data-pipeline overhead (loop + real loader vs tight loop): {1.0 - d / t:6.1%}")
    print(f"whole overhead (Lightning fit vs tight loop):              {overhead:6.1%}")
    write_results(
        args.name,
        {
            "overrides": overrides,
            "batch_size": int(cfg.project.data.batch_size),
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "tight_loop_windows_per_s": tight,
            "loader_loop_windows_per_s": loader,
            "pipeline_windows_per_s": pipeline,
            "data_pipeline_overhead": 1.0 - d / t,
            "overhead": overhead,
        },
    )


if __name__ == "__main__":
    main()
