"""Benchmark: a tabular valuation model on held-out sales, next to the group-median baseline.

    python benchmarks/tabular_accuracy.py --source ../shared/datasets/tables project=avm
    python benchmarks/tabular_accuracy.py --source ../shared/datasets/tables project=kc_house

Trains ``experiment=baseline`` (unless overridden) and evaluates on the prepared test split
(never cleaned of outliers). Targets of the AVM issue: median absolute percentage error at least
20 % lower than the baseline's, and at least 55 % of predictions within ±10 %.
"""

import platform
from typing import Any

from bench_common import parser, prepared_config, train_and_evaluate, write_results

MIN_MDAPE_REDUCTION = 0.20
MIN_WITHIN_10PCT = 0.55


def table(metrics: dict[str, Any]) -> str:
    columns = ("mae", "mdape", "within_5pct", "within_10pct", "within_20pct")
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for who in ("model", "baseline"):
        scores = metrics[who]
        lines.append(f"| {who} | " + " | ".join(f"{scores[c]:.4g}" for c in columns) + " |")
    return "\n".join(lines)


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
        },
    )


if __name__ == "__main__":
    main()
