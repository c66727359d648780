"""Benchmark: image classification on a held-out stratified split.

    python benchmarks/vision_accuracy.py --source ../shared/datasets/images project=eurosat
    python benchmarks/vision_accuracy.py --source ../shared/datasets/images project=plants

Trains ``experiment=baseline`` (unless overridden), evaluates on the test split and prints
accuracy, macro-F1 and per-class recall with the training time. Targets of the images issue:
EuroSAT >= 97 % accuracy; plants >= 99 % accuracy and >= 0.97 macro-F1.
"""

import platform

from bench_common import parser, prepared_config, train_and_evaluate, write_results


def main() -> None:
    args = parser(__doc__.splitlines()[0], "vision_accuracy").parse_args()
    cfg, overrides = prepared_config(args)
    trained, metrics, path, train_s = train_and_evaluate(cfg)
    print(
        f"\n{cfg.project.name}: {metrics['n_samples']} test images; {trained.epochs} epochs "
        f"in {train_s:.0f} s on {platform.processor() or platform.machine()}; {overrides}"
    )
    print(f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}")
    for name, scores in metrics["per_class"].items():
        print(f"  {name:28s} recall {scores['recall']:.3f}  precision {scores['precision']:.3f}")
    write_results(
        args.name,
        {
            "overrides": overrides,
            "project": str(cfg.project.name),
            "train_seconds": train_s,
            "epochs": trained.epochs,
            "metrics": str(path),
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "per_class": metrics["per_class"],
        },
    )


if __name__ == "__main__":
    main()
