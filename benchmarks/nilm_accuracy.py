"""Benchmark: NILM accuracy on a house never seen in training, next to the mean-predictor baseline.

    python benchmarks/nilm_accuracy.py --source ../shared/datasets/nilm [HYDRA OVERRIDES...]

Trains ``experiment=baseline`` (unless overridden) on ``project.data.train_houses``, evaluates on
``project.data.test_houses`` and prints, per appliance, MAE of model vs baseline, their ratio and
on/off F1, then checks the targets of the NILM issue: MAE ratio <= 0.5 for every appliance and
kettle F1 >= 0.8. Results are written as JSON under ``benchmarks/results/``.
"""

import platform
from typing import Any

from bench_common import parser, prepared_config, train_and_evaluate, write_results

MAX_MAE_RATIO = 0.5
MIN_KETTLE_F1 = 0.8


def table(overall: dict[str, Any]) -> str:
    lines = [
        "| appliance | MAE model (W) | MAE mean baseline (W) | ratio | MAE always off (W) | F1 "
        "| precision | recall | SAE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, scores in overall.items():
        model, base = scores["model"], scores["baseline_mean"]
        sae = "n/a" if model["sae"] is None else f"{model['sae']:.2f}"
        lines.append(
            f"| {name} | {model['mae_w']:.2f} | {base['mae_w']:.2f} | "
            f"{scores['mae_ratio_to_baseline']:.2f} | {scores['baseline_off']['mae_w']:.2f} | "
            f"{model['f1']:.3f} | "
            f"{model['precision']:.3f} | {model['recall']:.3f} | {sae} |"
        )
    return "\n".join(lines)


def targets_met(overall: dict[str, Any]) -> dict[str, bool]:
    met = {
        f"{n} MAE ratio <= {MAX_MAE_RATIO}": s["mae_ratio_to_baseline"] <= MAX_MAE_RATIO
        for n, s in overall.items()
    }
    if "kettle" in overall:
        met[f"kettle F1 >= {MIN_KETTLE_F1}"] = overall["kettle"]["model"]["f1"] >= MIN_KETTLE_F1
    return met


def main() -> None:
    args = parser(__doc__.splitlines()[0], "nilm_accuracy").parse_args()
    cfg, overrides = prepared_config(args)
    trained, metrics, path, train_s = train_and_evaluate(cfg)
    overall = metrics["overall"]
    met = targets_met(overall)
    houses = f"{list(cfg.project.data.train_houses)} -> {list(cfg.project.data.test_houses)}"
    print(f"\n{houses}; {trained.epochs} epochs in {train_s:.0f} s; overrides: {overrides}")
    print(table(overall))
    for target, ok in met.items():
        print(f"  [{'x' if ok else ' '}] {target}")
    write_results(
        args.name,
        {
            "overrides": overrides,
            "train_houses": list(cfg.project.data.train_houses),
            "test_houses": list(cfg.project.data.test_houses),
            "train_seconds": train_s,
            "epochs": trained.epochs,
            "machine": platform.processor() or platform.machine(),
            "run": str(trained.run_dir),
            "metrics": str(path),
            "overall": overall,
            "targets": met,
        },
    )


if __name__ == "__main__":
    main()
