"""Benchmark: mains outages recorded as zeros in the NILM houses, and what the outage rule removes.

    python benchmarks/nilm_outages.py --source ../shared/datasets/nilm [Hydra overrides]

Reads every house of ``--source`` as ``data prepare`` does (``project=nilm``), and reports per
house, on the aligned mains:

* the zero-mains intervals and their runs by length, the smallest non-zero mains reading, how
  many readings under 45 W sit next to a zero, how often an appliance channel reads above 5 W
  inside zero-mains intervals and outside them (a logger that is down loses the whole row, a
  house that is really quiet does not), and the readings around each zero run of at most 5 min;
* for a grid of floors (W) and shortest outages (s), the intervals the rule would mark invalid;
* the configured rule (``project.data.mains_floor_w``, ``mains_outage_s``) against no rule:
  invalid intervals, the windows of ``project.data.window`` readings left (all, and in the
  training and validation parts of ``split_by_time``) and the training part's mean mains.

The figures that justify the defaults in :mod:`modelyard.projects.nilm.outages` come from here.
"""

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from bench_common import write_results
from modelyard.core.config import load_config
from modelyard.projects.nilm.outages import MainsOutageRule, outage_mask
from modelyard.projects.nilm.preparation import (
    PreparedHouse,
    align,
    clip_impossible,
    prepare_house,
)
from modelyard.projects.nilm.readers import AGGREGATE
from modelyard.projects.nilm.sources import iter_raw_houses
from modelyard.projects.nilm.splits import split_by_time
from modelyard.projects.nilm.windows import valid_window_starts

FLOORS_W = (0.0, 1.0, 10.0, 25.0, 50.0)
SHORTEST_S = (60, 180, 300, 600, 3600)
RUN_BUCKETS_MIN = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 60), (61, 1440), (1441, None))
APPLIANCE_ON_W = 5.0
LOW_W = 45.0
SHORT_RUN_MIN = 5


def arguments() -> argparse.Namespace:
    result = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    result.add_argument("--source", required=True, help="NILM data directory (CSV layout)")
    result.add_argument("--name", default="nilm_outages", help="results file name (no .json)")
    result.add_argument("overrides", nargs="*", help="Hydra overrides")
    return result.parse_args()


def zero_runs(low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.diff(np.concatenate([[0], low.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def describe_zeros(aligned: np.ndarray, times: np.ndarray, interval_s: int) -> dict[str, Any]:
    """Zero-mains intervals, their runs by length, and appliance activity in and out of them."""
    mains, appliances = aligned[:, 0], aligned[:, 1:]
    zero = mains == 0
    starts, stops = zero_runs(zero)
    minutes = (stops - starts) * interval_s / 60
    buckets = {
        f"{lo}-{hi or 'more'} min": int(((minutes >= lo) & (minutes <= (hi or np.inf))).sum())
        for lo, hi in RUN_BUCKETS_MIN
    }
    on = np.nan_to_num(appliances, nan=0.0).max(axis=1) > APPLIANCE_ON_W
    positive = mains[mains > 0]
    low = np.flatnonzero((mains > 0) & (mains < LOW_W))
    next_to_zero = np.isin(low - 1, np.flatnonzero(zero)) | np.isin(low + 1, np.flatnonzero(zero))
    short = [
        {
            "start": str(times[start]),
            "minutes": float(minutes[k]),
            "before_w": [round(float(x), 1) for x in mains[max(0, start - 2) : start]],
            "after_w": [round(float(x), 1) for x in mains[stop : stop + 2]],
        }
        for k, (start, stop) in enumerate(zip(starts, stops, strict=True))
        if minutes[k] <= SHORT_RUN_MIN
    ]
    return {
        "intervals": int(mains.size),
        "zero_intervals": int(zero.sum()),
        "zero_share": round(float(zero.mean()), 4),
        "zero_runs": int(starts.size),
        "zero_runs_by_length": buckets,
        "longest_zero_run_min": float(minutes.max()) if minutes.size else 0.0,
        "smallest_nonzero_mains_w": round(float(positive.min()), 1) if positive.size else None,
        f"nonzero_below_{LOW_W:g}_w": int(low.size),
        f"nonzero_below_{LOW_W:g}_w_next_to_a_zero": int(next_to_zero.sum()),
        "appliance_on_share_in_zero_mains": round(float(on[zero].mean()), 4) if zero.any() else 0,
        "appliance_on_share_elsewhere": round(float(on[~zero].mean()), 4),
        f"zero_runs_up_to_{SHORT_RUN_MIN}_min": short,
    }


def windows(house: PreparedHouse, window: int, val_fraction: float) -> dict[str, Any]:
    """Windows left in the whole house and in its training and validation parts."""
    split = split_by_time([house], val_fraction)
    train = split.train[0]
    return {
        "windows": int(valid_window_starts(house.valid, window).size),
        "train_windows": int(valid_window_starts(train.valid, window).size),
        "val_windows": int(valid_window_starts(split.val[0].valid, window).size),
        "train_mains_mean_w": round(float(train.aggregate[train.valid].mean()), 1),
    }


def rule_grid(mains: np.ndarray, interval_s: int) -> dict[str, int]:
    """Intervals each (floor, shortest outage) rule marks as outage."""
    return {
        f"<= {floor:g} W for >= {shortest} s": int(
            outage_mask(mains, interval_s, MainsOutageRule(floor, shortest))[0].sum()
        )
        for floor in FLOORS_W
        for shortest in SHORTEST_S
    }


def main() -> None:
    args = arguments()
    cfg = load_config(["project=nilm", *args.overrides])
    data = cfg.project.data
    appliances = list(cfg.project.appliances)
    interval_s, window = int(data.interval_s), int(data.window)
    limits = {name: float(row.limit_w) for name, row in cfg.project.appliances.items()}
    limits[AGGREGATE] = float(data.aggregate_limit_w)
    configured = MainsOutageRule.from_config(data)
    houses: dict[str, Any] = {}
    for name, frame in iter_raw_houses(Path(args.source), data, appliances):
        clipped = clip_impossible(align(frame[[AGGREGATE, *appliances]], interval_s), limits)[0]
        aligned = clipped.to_numpy(dtype="float64")
        times = clipped.index.to_numpy()
        result: dict[str, Any] = describe_zeros(aligned, times, interval_s)
        result["outage_intervals_by_rule"] = rule_grid(aligned[:, 0], interval_s)
        for label, rule in (("without_rule", None), ("with_rule", configured)):
            house, report = prepare_house(
                name, frame, appliances, interval_s, int(data.max_fill_s), limits, rule
            )
            result[label] = dataclasses.asdict(report) | windows(
                house, window, float(data.val_fraction)
            )
        houses[name] = result
        before, after = result["without_rule"], result["with_rule"]
        print(
            f"{name}: {result['zero_intervals']:,} of {result['intervals']:,} intervals read 0 W "
            f"({result['zero_share']:.1%}) in {result['zero_runs']} runs "
            f"{result['zero_runs_by_length']}; smallest non-zero mains "
            f"{result['smallest_nonzero_mains_w']} W; an appliance above {APPLIANCE_ON_W:g} W in "
            f"{result['appliance_on_share_in_zero_mains']:.1%} of zero-mains intervals, "
            f"{result['appliance_on_share_elsewhere']:.1%} elsewhere"
        )
        print(
            f"  rule {configured}: outage intervals {after['outage_zeros']:,} "
            f"({after['outage_zeros'] / after['intervals']:.2%}) in {after['outage_runs']} runs; "
            f"invalid {before['invalid']:,} -> {after['invalid']:,}; "
            f"windows {before['windows']:,} -> {after['windows']:,} (training part "
            f"{before['train_windows']:,} -> {after['train_windows']:,}, validation "
            f"{before['val_windows']:,} -> {after['val_windows']:,}); training mains mean "
            f"{before['train_mains_mean_w']} -> {after['train_mains_mean_w']} W"
        )
        print(
            f"  readings under {LOW_W:g} W: {result[f'nonzero_below_{LOW_W:g}_w']}, next to a "
            f"zero: {result[f'nonzero_below_{LOW_W:g}_w_next_to_a_zero']}"
        )
        for run in result[f"zero_runs_up_to_{SHORT_RUN_MIN}_min"]:
            print(
                f"  zero run {run['start']} {run['minutes']:g} min: {run['before_w']} 0 ... 0 "
                f"{run['after_w']}"
            )
        for rule_name, count in result["outage_intervals_by_rule"].items():
            print(f"    {rule_name}: {count:,}")
    path = write_results(
        args.name,
        {
            "source": args.source,
            "interval_s": interval_s,
            "window": window,
            "rule": configured.to_json() if configured else None,
            "houses": houses,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
