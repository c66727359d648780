"""DDP on CPU (gloo): each rank trains on its own part of the data, and `modelyard train
trainer=ddp` runs two real processes that leave one run directory behind.

Our loaders hand Lightning a ``BatchSampler`` as *sampler* (each item is a whole batch), which
Lightning's automatic sampler replacement does not special-case: it wraps it in a
``DistributedSamplerWrapper`` that gives rank r every world_size-th batch of the *wrapped*
sampler's order. That is a partition only if every rank draws the same shuffled order - these
tests check it, with Lightning's wrapper in-process and with two real processes.
"""

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from modelyard.core.config import load_config
from modelyard.core.families import load_task
from modelyard.core.run_dir import RunDir
from modelyard.projects.nilm.dataset import batch_loader, build_windows
from modelyard.projects.vision.image_cache import save_classes, save_part
from nilm_fixtures import make_house, simple_normalisation
from trained_pipelines import PreparedData

TESTS = Path(__file__).resolve().parent
WINDOW = 5


def _batches_of_rank(sampler: Iterable[list[int]], rank: int, epoch: int) -> list[list[int]]:
    wrapped = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=False)
    wrapped.set_epoch(epoch)
    return list(wrapped)


def test_lightnings_wrapper_splits_each_epoch_between_ranks_that_share_a_seed() -> None:
    """What Lightning does to our loaders under DDP, one rank after the other in this process."""
    dataset = build_windows([make_house("h", 164, seed=1)], [0], WINDOW, simple_normalisation(1))
    assert len(dataset) == 160  # 10 batches of 16: an even split, no padding
    # every rank builds its own loader, as every DDP process does
    samplers = [batch_loader(dataset, 16, shuffle=True, seed=7).sampler for _ in range(2)]
    for epoch in range(2):
        parts = [_batches_of_rank(samplers[rank], rank, epoch) for rank in range(2)]
        windows = [{w for batch in part for w in batch} for part in parts]
        assert [len(part) for part in parts] == [5, 5]
        assert windows[0].isdisjoint(windows[1])
        assert windows[0] | windows[1] == set(range(160))
    # the same wrapper around two differently seeded samplers would not be a partition
    other = batch_loader(dataset, 16, shuffle=True, seed=8).sampler
    mixed = [_batches_of_rank(samplers[0], 0, 2), _batches_of_rank(other, 1, 2)]
    assert not {w for b in mixed[0] for w in b}.isdisjoint({w for b in mixed[1] for w in b})


DDP_SCRIPT = """
import json
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader

sys.path.insert(0, {tests!r})
from nilm_fixtures import make_house, simple_normalisation

from modelyard.projects.worker_seeding import distributed_rank
from modelyard.projects.nilm.augmentation import ActivationInjector
from modelyard.projects.nilm.dataset import WindowBatches, batch_loader, build_windows
from modelyard.projects.vision.datamodule import ImageDataModule

OUT = Path(sys.argv[1])
WINDOW = 5


class Data(L.LightningDataModule):
    def setup(self, stage=None):
        # NILM windows whose first reading gives their start: 100 windows, 10 batches
        self.windows = build_windows(
            [make_house("h", 104, seed=0)], [0], WINDOW, simple_normalisation(1)
        )
        # identical all-zero windows, augmented: a batch is exactly what the augmentation added
        n = 10 * 8 + WINDOW - 1
        trace = np.array([100.0, 250.0, 400.0], np.float32)
        injector = ActivationInjector([[trace]], 0.5, (0.5, 2.0), simple_normalisation(1), 3)
        self.flat = WindowBatches(
            np.zeros(n, np.float32), np.zeros((n, 1), np.float32),
            np.arange(n - WINDOW + 1), WINDOW, augment=injector,
        )
        # 50 images labelled 0..49 (written by the test), so a label names its image
        self.images = ImageDataModule(OUT / "images", 5, seed=3, weighted=False, brightness=0.0,
                                      augment_training=False, num_workers=1)
        self.images.setup("fit")

    def train_dataloader(self):
        return CombinedLoader(
            {{
                "nilm": batch_loader(self.windows, 10, shuffle=True, seed=3),
                "images": self.images.train_dataloader(),
                "flat": batch_loader(self.flat, 8, shuffle=False, seed=3, num_workers=2),
            }},
            mode="min_size",
        )


class Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(WINDOW, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        x = batch["nilm"][0]
        self.seen.append({{
            "epoch": self.current_epoch,
            "nilm": [round(float(v) * 100) for v in x[:, 0]],
            "images": batch["images"][1].tolist(),
            "flat": batch["flat"][0].sum(dim=1).tolist(),
        }})
        return self.layer(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


if __name__ == "__main__":
    model = Recorder()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=Data())
    record = {{
        "rank": distributed_rank(),
        "world_size": trainer.world_size,
        "seen": model.seen,
    }}
    (OUT / f"rank{{trainer.global_rank}}.json").write_text(json.dumps(record))
"""


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that would make a child think it is a rank."""
    rank_variables = {"MODELYARD_RUN_NAME", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in rank_variables}
    env["PYTHONWARNINGS"] = "ignore"
    return env


@pytest.mark.slow
def test_two_real_ddp_processes_each_train_on_their_own_part(tmp_path: Path) -> None:
    images = tmp_path / "images"  # 50 images labelled 0..49: 10 batches of 5
    save_part(images, "train", np.zeros((50, 4, 4, 3), np.uint8), np.arange(50))
    save_part(images, "val", np.zeros((5, 4, 4, 3), np.uint8), np.arange(5))
    save_classes(images, [str(i) for i in range(50)], {})
    script = tmp_path / "ddp_record.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(TESTS))))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=_clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in records] == [0, 1]
    assert [r["world_size"] for r in records] == [2, 2]
    for epoch in range(2):
        steps = [[s for s in r["seen"] if s["epoch"] == epoch] for r in records]
        assert [len(s) for s in steps] == [5, 5]  # 10 batches per loader, 5 per rank
        for key, total in (("nilm", 100), ("images", 50)):
            parts = [{v for s in rank_steps for v in s[key]} for rank_steps in steps]
            assert parts[0].isdisjoint(parts[1]), key
            assert parts[0] | parts[1] == set(range(total)), key
    for key in ("nilm", "images"):  # reshuffled between epochs
        orders = [
            [v for s in records[0]["seen"] if s["epoch"] == e for v in s[key]] for e in (0, 1)
        ]
        assert orders[0] != orders[1], key
    # Flat windows, same batch size: ranks drawing one augmentation stream would agree here.
    flat = [[s["flat"] for s in r["seen"]] for r in records]
    assert flat[0] != flat[1]
    assert any(v != 0 for batch in flat[0] for v in batch)


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_modelyard_train_trainer_ddp_runs_two_processes_into_one_run(
    nilm_data: PreparedData, tmp_path: Path
) -> None:
    fraction = 0.01  # of an epoch's batches: small, and a whole number of batches either way
    nilm_workdir = tmp_path / "ddp_workdir"  # its own runs; the session's prepared houses
    overrides = [
        "experiment=quick",
        "tracking=none",
        f"paths.workdir={nilm_workdir}",
        *nilm_data.overrides,
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={fraction}",
        "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
    ]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "modelyard"), "train", "trainer=ddp", *overrides],
        capture_output=True,
        text=True,
        timeout=240,
        env=_clean_env(),
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # Lightning's own log lines: both ranks joined one gloo group of two
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert "Starting with 2 processes" in output

    runs = [p for p in (nilm_workdir / "runs" / "nilm").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # rank 1 wrote into rank 0's run, not a second one
    run = runs[0]
    summary = json.loads((run / "train.json").read_text())
    checkpoint = RunDir(run).checkpoint
    assert checkpoint.is_file() and summary["epochs"] >= 1

    # Each rank stepped through half of the epoch's batches: Lightning's limit is a fraction of
    # the rank's own (sharded) loader, so the count halves compared with one process.
    cfg = load_config(overrides)
    task = load_task(cfg)
    datamodule = task.datamodule()
    datamodule.setup("fit")
    whole_epoch = len(datamodule.train_dataloader())
    per_rank = int(fraction * math.ceil(whole_epoch / 2))
    assert per_rank < int(fraction * whole_epoch)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["global_step"] == per_rank

    model = task.load_model(RunDir(run))
    outputs = model.predict(np.zeros((3, int(cfg.project.data.window)), np.float32))
    assert outputs.shape[0] == 3
    assert np.isfinite(outputs).all()


def test_validation_rows_are_gathered_from_every_rank(tmp_path: Path) -> None:
    """Two real gloo processes with shares of different lengths (and one empty) get the union,
    in rank order, as a median or a macro-F1 over the whole validation set needs."""
    script = tmp_path / "gather.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import torch
            import torch.distributed as dist
            from modelyard.projects.distributed import gather_rows, world_size

            rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
            dist.init_process_group(
                "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
            )
            shares = {0: torch.tensor([1.0, 2.0, 3.0]), 1: torch.tensor([10.0, 20.0])}
            gathered = gather_rows(shares[rank])
            empty = gather_rows(torch.zeros(0) if rank == 0 else torch.tensor([7.0]))
            with open(f"{out}.{rank}", "w") as handle:
                json.dump([world_size(), gathered.tolist(), empty.tolist()], handle)
            dist.destroy_process_group()
            """
        )
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    out = tmp_path / "result"
    processes = [
        subprocess.Popen([sys.executable, str(script), str(rank), port, str(out)])
        for rank in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    for rank in (0, 1):
        size, gathered, empty = json.loads(Path(f"{out}.{rank}").read_text())
        assert size == 2
        assert gathered == [1.0, 2.0, 3.0, 10.0, 20.0]
        assert empty == [7.0]


def test_without_a_process_group_rows_are_returned_as_they_are() -> None:
    from modelyard.projects.distributed import gather_rows, world_size

    values = torch.tensor([3.0, 1.0])
    assert world_size() == 1 and gather_rows(values) is values
