"""Benchmark: NILM accuracy on a house never seen in training, next to the mean-predictor baseline.

    python benchmarks/nilm_accuracy.py --source ../shared/datasets/nilm [HYDRA OVERRIDES...]

Trains ``experiment=baseline`` (unless overridden) on ``project.data.train_houses``, evaluates on
``project.data.test_houses`` and prints, per appliance, MAE of model vs baseline, their ratio and
on/off F1, then checks the targets of the NILM issue: MAE ratio <= 0.5 for every appliance and
kettle F1 >= 0.8. ``--seeds 42 1`` trains once per seed and checks the targets on the mean over
them: runs of one configuration differ by several hundredths, more for the rarely used appliances.
An ensemble (``model.members=3``) is also scored one network at a time, next to the combination.
Results are written as JSON under ``benchmarks/results/``.
"""

import platform
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench_common import parser, prepared_config, train_and_evaluate, write_results
from modelyard.core.families import load_task
from modelyard.core.run_dir import RunDir
from modelyard.projects.nilm.lightning_module import Seq2PointModule
from modelyard.projects.torch_model import LightningModel, TorchModel

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


def error_table(overall: dict[str, Any]) -> str:
    """Where each model MAE comes from, and whose runs the false "on" readings fall in."""
    lines = [
        "| appliance | MAE (W) | from false on | from missed | state right, power wrong "
        "| false-on readings while another ran |",
        "|---|---|---|---|---|---|",
    ]
    for name, scores in overall.items():
        errors = scores["model_errors"]
        during = ", ".join(
            f"{other} {count:,}"
            for other, count in sorted(errors["false_on_while_on"].items(), key=lambda i: -i[1])
            if count
        )
        lines.append(
            f"| {name} | {scores['model']['mae_w']:.2f} | {errors['false_on_w']:.2f} | "
            f"{errors['missed_w']:.2f} | {errors['right_state_w']:.2f} | {during or 'none'} |"
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


def seed_summary(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """Mean MAE ratio and F1 over seeds per appliance (with the range), and a table of them."""
    summary: dict[str, Any] = {}
    lines = [
        "| appliance | MAE ratio, mean | min .. max | F1, mean | min .. max |",
        "|---|---|---|---|---|",
    ]
    for name in runs[0]["overall"]:
        ratios = [r["overall"][name]["mae_ratio_to_baseline"] for r in runs]
        f1s = [r["overall"][name]["model"]["f1"] for r in runs]
        summary[name] = {"mae_ratio_to_baseline": mean(ratios), "f1": mean(f1s)}
        lines.append(
            f"| {name} | {mean(ratios):.2f} | {min(ratios):.2f} .. {max(ratios):.2f} | "
            f"{mean(f1s):.3f} | {min(f1s):.3f} .. {max(f1s):.3f} |"
        )
    return summary, "\n".join(lines)


def member_scores(cfg: DictConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Each network of an ensemble run scored alone on the test house (empty for one network).

    Shows what combining the members buys over a typical member, from one training run.
    """
    task = load_task(cfg)
    run = RunDir(run_dir)
    loaded = task.load_model(run)
    assert isinstance(loaded, LightningModel)
    module = loaded.module
    assert isinstance(module, Seq2PointModule)
    networks = module.members()
    if len(networks) < 2:
        return []
    preprocessing = run.read_preprocessing()
    scores = []
    for network in networks:
        with tempfile.TemporaryDirectory() as plots:
            metrics = task.evaluate(TorchModel(network), preprocessing, None, Path(plots))
        scores.append(
            {
                name: {"mae_ratio_to_baseline": s["mae_ratio_to_baseline"], "f1": s["model"]["f1"]}
                for name, s in metrics["overall"].items()
            }
        )
    return scores


def member_table(members: list[dict[str, Any]], overall: dict[str, Any]) -> str:
    """MAE ratio (F1) of each member alone next to the combined ensemble."""
    header = " | ".join(f"member {i + 1}" for i in range(len(members)))
    lines = [f"| appliance | {header} | ensemble |", "|---" * (len(members) + 2) + "|"]
    for name, scores in overall.items():
        alone = " | ".join(
            f"{m[name]['mae_ratio_to_baseline']:.2f} ({m[name]['f1']:.3f})" for m in members
        )
        combined = f"{scores['mae_ratio_to_baseline']:.2f} ({scores['model']['f1']:.3f})"
        lines.append(f"| {name} | {alone} | {combined} |")
    return "\n".join(lines)


def main() -> None:
    cli = parser(__doc__.splitlines()[0], "nilm_accuracy")
    cli.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="train once per seed and check the targets on the mean (default: the config's seed)",
    )
    args = cli.parse_args()
    cfg, overrides = prepared_config(args)
    seeds = args.seeds or [int(cfg.seed)]
    houses = f"{list(cfg.project.data.train_houses)} -> {list(cfg.project.data.test_houses)}"
    runs = []
    for seed in seeds:
        seeded = OmegaConf.merge(cfg, {"seed": seed})
        assert isinstance(seeded, DictConfig)
        trained, metrics, path, train_s = train_and_evaluate(seeded)
        overall = metrics["overall"]
        print(f"\n{houses}; seed {seed}: {trained.epochs} epochs in {train_s:.0f} s")
        print(table(overall))
        print(error_table(overall))
        members = member_scores(seeded, trained.run_dir)
        if members:
            print("each network of the ensemble alone, MAE ratio (F1):")
            print(member_table(members, overall))
        runs.append(
            {
                "seed": seed,
                "train_seconds": train_s,
                "epochs": trained.epochs,
                "run": str(trained.run_dir),
                "metrics": str(path),
                "overall": overall,
                "targets": targets_met(overall),
                "members_alone": members,
            }
        )
    summary, summary_table = seed_summary(runs)
    met = targets_met(
        {
            name: {"mae_ratio_to_baseline": s["mae_ratio_to_baseline"], "model": {"f1": s["f1"]}}
            for name, s in summary.items()
        }
    )
    print(f"\noverrides: {overrides}; seeds {seeds}")
    print(summary_table)
    for target, ok in met.items():
        print(f"  [{'x' if ok else ' '}] {target} (mean over {len(seeds)} seed(s))")
    write_results(
        args.name,
        {
            "overrides": overrides,
            "train_houses": list(cfg.project.data.train_houses),
            "test_houses": list(cfg.project.data.test_houses),
            "machine": platform.processor() or platform.machine(),
            "seeds": seeds,
            "runs": runs,
            "mean_over_seeds": summary,
            "targets": met,
        },
    )


if __name__ == "__main__":
    main()
