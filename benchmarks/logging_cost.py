"""What logging a request costs: the same bundle served by two checkouts of modelyard, side by side.

Small NILM requests (one 99-reading window, ``edges=valid``, as in ``serving.py``) to two
``modelyard serve`` processes of one bundle, each with its SQLite prediction log, one running the
code under ``--before`` (a ``src`` directory, e.g. the main branch's) and one the code under
``--after``; ``--rounds`` rounds of ``--seconds`` per side and client count, the sides alternating
which goes first. Reported per round: throughput and the server's CPU time per answered request
(``/proc`` and its own request counter, as ``serving.py --auth-compare`` reads them), which other
processes on the machine change far less than throughput.

    .venv/bin/python benchmarks/logging_cost.py --bundle BUNDLE \\
        --before ../main/src --after src --rounds 4 --seconds 3
"""

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from serving import PYTHON, load, request_bodies, served_work, server

CLIENTS = (8, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="A NILM bundle (window 99)")
    parser.add_argument("--before", type=Path, required=True, help="src directory: before")
    parser.add_argument("--after", type=Path, required=True, help="src directory: after")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    window = int(json.loads((args.bundle / "manifest.json").read_text())["inputs"][0]["shape"][1])
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        body = request_bodies(scratch, window)["small"]
        serve = [PYTHON, "-m", "modelyard", "serve", str(args.bundle), "--log-level", "warning"]
        sides = {
            name: (
                [*serve, "--prediction-log", f"sqlite:///{scratch}/{name}.db"],
                {"PYTHONPATH": str(Path(src).resolve())},
            )
            for name, src in (("before", args.before), ("after", args.after))
        }
        rates: dict[str, dict[int, list[float]]] = {s: {c: [] for c in CLIENTS} for s in sides}
        cpu: dict[str, dict[int, list[float]]] = {s: {c: [] for c in CLIENTS} for s in sides}
        with (
            server(sides["before"][0], "/ready", sides["before"][1]) as before,
            server(sides["after"][0], "/ready", sides["after"][1]) as after,
        ):
            facts = {"before": before, "after": after}
            for round_ in range(args.rounds):
                order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
                for clients in CLIENTS:
                    for side in order:
                        port, pid = facts[side]["port"], facts[side]["pid"]
                        start = served_work(port, pid, None)
                        point = load(port, body, clients, args.seconds, None)
                        end = served_work(port, pid, None)
                        us = (end[0] - start[0]) / max(1.0, end[1] - start[1]) * 1e6
                        rates[side][clients].append(point["requests_per_s"])
                        cpu[side][clients].append(round(us, 1))
                        print(
                            f"round {round_ + 1} {side:>6} {clients:>3} clients: "
                            f"{point['requests_per_s']:>8.1f} req/s, errors {point['errors']}, "
                            f"server CPU {us:.0f} us/request",
                            flush=True,
                        )
    summary: dict[str, Any] = {}
    for clients in CLIENTS:
        summary[str(clients)] = {
            "req_per_s": {side: rates[side][clients] for side in sides},
            "cpu_us_per_request": {side: cpu[side][clients] for side in sides},
            "after_over_before_median_req_per_s": _ratio(rates, clients),
            "after_over_before_median_cpu_per_request": _ratio(cpu, clients),
        }
    print(json.dumps(summary, indent=2))


def _ratio(values: dict[str, dict[int, list[float]]], clients: int) -> float:
    after, before = values["after"][clients], values["before"][clients]
    return round(float(np.median(after) / np.median(before)), 3)


if __name__ == "__main__":
    main()
