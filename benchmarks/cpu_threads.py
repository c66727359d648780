"""Benchmark: torch CPU threads on a machine that other processes share.

    python benchmarks/cpu_threads.py --workdir /tmp/prof --rounds 3 project=nilm \
        experiment=baseline trainer.limit_train_batches=30 trainer.limit_val_batches=5

Runs the real ``modelyard train`` command (data already prepared under ``--workdir``) with one
epoch, alternately (rotating the order every round, so drifting load hits every setting):

* **default**: ``trainer.num_threads=0``, torch's default of one thread per core;
* **1 thread**: ``trainer.num_threads=1``;
* **passive wait**: the default threads with ``OMP_WAIT_POLICY=PASSIVE`` in the environment (an
  OpenMP thread that waits for its peers sleeps instead of spinning on a core).

Reports the median training wall time per setting (``duration_s`` of ``train.json``: the fit,
validation included, without start-up). Finding and numbers: docs/profiling.md.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from bench_common import write_results

SETTINGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "default": ([], {}),
    "1 thread": (["trainer.num_threads=1"], {}),
    "passive wait": ([], {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def one_run(overrides: list[str], workdir: str, setting: str, index: int) -> float:
    extra, env = SETTINGS[setting]
    run_name = f"threads-{index}-{setting.replace(' ', '_')}"
    command = [
        sys.executable,
        "-m",
        "modelyard",
        "train",
        *overrides,
        *extra,
        f"paths.workdir={workdir}",
        f"run_name={run_name}",
        "tracking=none",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **env})
    runs = Path(workdir) / "runs"
    summary = next(runs.glob(f"*/{run_name}/train.json"))
    return float(json.loads(summary.read_text())["duration_s"])


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--workdir", required=True, help="modelyard working dir, data prepared")
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--name", default="cpu_threads", help="results file name")
    args.add_argument("overrides", nargs="*", help="Hydra overrides")
    options = args.parse_args()
    names = list(SETTINGS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(options.rounds):
        shift = round_index % len(names)
        for setting in names[shift:] + names[:shift]:
            took = one_run(options.overrides, options.workdir, setting, round_index)
            seconds[setting].append(took)
            print(f"round {round_index}: {setting:12s} {took:7.1f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"\n{options.overrides} on {os.cpu_count()} CPUs, load {os.getloadavg()}")
    for name, median in medians.items():
        print(f"  {name:12s} median {median:7.1f} s  ({medians['default'] / median:.2f}x default)")
    write_results(
        options.name,
        {
            "overrides": options.overrides,
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "seconds": seconds,
            "medians": medians,
        },
    )


if __name__ == "__main__":
    main()
