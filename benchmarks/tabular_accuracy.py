"""Benchmark: a tabular valuation model on held-out sales, next to the group-median baseline.

    python benchmarks/tabular_accuracy.py --source ../shared/datasets/tables project=avm
    python benchmarks/tabular_accuracy.py --source ../shared/datasets/tables project=kc_house

Trains ``experiment=baseline`` (unless overridden) and evaluates on the prepared test split
(never cleaned of outliers). Targets of the AVM issue: median absolute percentage error at least
20 % lower than the baseline's, and at least 55 % of predictions within ±10 %.

Also prints how predictable the target is from location alone: for test rows whose group (each
target-encoded categorical feature, e.g. street and building) has at least N training rows, the
share within ±10 % of that group's training median. Sales in one building that scatter more than
±10 % bound what any model of these features can reach.
"""

import platform
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from bench_common import parser, prepared_config, train_and_evaluate, write_results
from modelyard.projects.tabular.table_io import read_prepared
from modelyard.projects.tabular.task import load_schema

MIN_MDAPE_REDUCTION = 0.20
MIN_WITHIN_10PCT = 0.55


def table(metrics: dict[str, Any]) -> str:
    columns = ("mae", "mdape", "within_5pct", "within_10pct", "within_20pct")
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for who in ("model", "baseline"):
        scores = metrics[who]
        lines.append(f"| {who} | " + " | ".join(f"{scores[c]:.4g}" for c in columns) + " |")
    return "\n".join(lines)


def group_median_agreement(
    cfg: DictConfig, minimum_rows: tuple[int, ...] = (1, 3, 5)
) -> list[dict[str, Any]]:
    """Per target-encoded feature and minimum group size: test rows covered, share within ±10 %
    of their group's training median, and the median absolute percentage error of that guess."""
    schema = load_schema(cfg)
    prepared = Path(cfg.paths.prepared)
    train, test = (read_prepared(prepared, part, schema) for part in ("train", "test"))
    target = schema.target.name
    rows = []
    for feature in schema.features.categorical:
        if "target" not in feature.encodings:
            continue
        groups = train.groupby(feature.name)[target].agg(["median", "count"])
        joined = test.join(groups, on=feature.name)
        for minimum in minimum_rows:
            chosen = joined[joined["count"] >= minimum]
            error = np.abs(chosen["median"] / chosen[target] - 1).to_numpy()
            rows.append(
                {
                    "group": feature.name,
                    "min_train_rows": minimum,
                    "test_rows": len(chosen),
                    "within_10pct": float(np.mean(error <= 0.10)) if len(chosen) else None,
                    "mdape": float(np.median(error)) if len(chosen) else None,
                }
            )
    return rows


def main() -> None:
    args = parser(__doc__.splitlines()[0], "tabular_accuracy").parse_args()
    cfg, overrides = prepared_config(args)
    trained, metrics, path, train_s = train_and_evaluate(cfg)
    reduction = float(metrics["mdape_reduction_vs_baseline"])
    met = {
        f"MdAPE >= {MIN_MDAPE_REDUCTION:.0%} lower than baseline": reduction >= MIN_MDAPE_REDUCTION,
        f">= {MIN_WITHIN_10PCT:.0%} within ±10 %": metrics["model"]["within_10pct"]
        >= MIN_WITHIN_10PCT,
    }
    print(
        f"\n{cfg.project.name}: {metrics['model']['rows']} test rows; {trained.epochs} epochs in "
        f"{train_s:.0f} s; MdAPE reduction vs baseline {reduction:.1%}; overrides {overrides}"
    )
    print(table(metrics))
    for target, ok in met.items():
        print(f"  [{'x' if ok else ' '}] {target}")
    agreement = group_median_agreement(cfg)
    for row in agreement:
        if row["test_rows"]:
            print(
                f"  test rows whose {row['group']} has >= {row['min_train_rows']} training rows: "
                f"{row['test_rows']}; within ±10 % of its training median {row['within_10pct']:.3f}"
                f", MdAPE {row['mdape']:.4f}"
            )
    write_results(
        args.name,
        {
            "overrides": overrides,
            "project": str(cfg.project.name),
            "train_seconds": train_s,
            "epochs": trained.epochs,
            "machine": platform.processor() or platform.machine(),
            "metrics": str(path),
            "model": metrics["model"],
            "baseline": metrics["baseline"],
            "mdape_reduction": reduction,
            "targets": met,
            "group_median_agreement": agreement,
        },
    )


if __name__ == "__main__":
    main()
