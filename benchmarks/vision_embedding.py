"""What the vision embedding output costs: ONNX Runtime call time with and without it.

The project's network (resnet_small, default widths) is exported twice from the same weights:
logits only (what bundles held before), and logits + the 16-number embedding (what export writes
now). Both graphs run side by side, interleaved, in one process with the server's session
settings, at the EuroSAT (64) and PlantVillage (128) input sizes, for a lone request (batch 1)
and a shared micro-batch (32). Weights are untrained: the cost does not depend on them. The
median and the best time are printed: on a shared machine the best is the least disturbed.

Run: ``python benchmarks/vision_embedding.py [--repeats 200]``.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelyard.projects.torch_model import TorchModel
from modelyard.projects.vision.lightning_module import ImageClassifier
from modelyard.serving.runtime import OnnxModel

CLASSES = 10


class LogitsOnly(torch.nn.Module):
    """The classifier without ``export_module``: the one-output graph of earlier bundles."""

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(images)
        return logits


def median_ms(model: OnnxModel, batch: np.ndarray, repeats: int) -> list[float]:
    model.run_outputs(batch)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        model.run_outputs(batch)
        times.append((time.perf_counter() - began) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    args = parser.parse_args()
    torch.manual_seed(0)
    classifier = ImageClassifier(CLASSES).eval()
    print("size batch  logits-only ms  +embedding ms  difference   (median; best of all runs)")
    with tempfile.TemporaryDirectory() as scratch:
        for size in (64, 128):
            example = np.random.default_rng(0).normal(size=(32, 3, size, size))
            example = example.astype(np.float32)
            plain, both = Path(scratch) / f"plain{size}.onnx", Path(scratch) / f"both{size}.onnx"
            TorchModel(LogitsOnly(classifier)).export_onnx(plain, example, "image", ["logits"])
            TorchModel(classifier).export_onnx(both, example, "image", ["logits", "embedding"])
            models = (OnnxModel(plain, args.threads), OnnxModel(both, args.threads))
            for batch in (1, 32):
                samples: tuple[list[float], list[float]] = ([], [])
                for _ in range(5):  # interleaved rounds: drifts of the machine hit both alike
                    for model, times in zip(models, samples, strict=True):
                        times.extend(median_ms(model, example[:batch], args.repeats // 5))
                without, with_embedding = (statistics.median(t) for t in samples)
                best = [min(t) for t in samples]
                change = (with_embedding / without - 1) * 100
                best_change = (best[1] / best[0] - 1) * 100
                print(
                    f"{size:4d} {batch:5d} {without:15.3f} {with_embedding:14.3f} {change:+10.1f} %"
                    f"   ({best[0]:.3f} vs {best[1]:.3f}: {best_change:+.1f} %)"
                )


if __name__ == "__main__":
    main()
