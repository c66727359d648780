"""Torch networks behind :class:`~modelyard.projects.trained_model.TrainedModel`.

:class:`TorchModel` predicts, embeds (when the network defines ``embed``) and exports with
torch.export: the network itself, or the module its ``export_module(example)`` builds when it
has one (a module with more outputs than the prediction, e.g. a vision model's embedding).
:class:`LightningModel` adds training with ``lightning.Trainer`` (see
:mod:`.lightning_training`) and loading from a run's best checkpoint.
"""

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from modelyard.core.run_dir import RunDir
from modelyard.projects.lightning_training import fit_with_lightning
from modelyard.projects.trained_model import ExportError, FitOutcome, FitRequest

ONNX_OPSET = 18


class TorchModel:
    """A torch network as numpy in, numpy out (CPU, inference mode)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).numpy()  # type: ignore[no-any-return]

    def embed(self, batch: np.ndarray) -> np.ndarray | None:
        embed = getattr(self.module, "embed", None)
        if embed is None:
            return None
        with torch.inference_mode():
            return embed(torch.from_numpy(batch)).numpy()  # type: ignore[no-any-return]

    def exported_module(self, example: np.ndarray) -> torch.nn.Module:
        """What the ONNX graph computes: the network, or its own ``export_module(example)``."""
        self.module.eval()
        build = getattr(self.module, "export_module", None)
        if build is None:
            return self.module
        exported: torch.nn.Module = build(torch.from_numpy(example))
        return exported.eval()

    def predict_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        module = self.exported_module(batch)
        with torch.inference_mode():
            result = module(torch.from_numpy(batch))
        outputs = result if isinstance(result, tuple | list) else (result,)
        return [output.numpy() for output in outputs]

    def export_onnx(
        self, path: Path, example: np.ndarray, input_name: str, output_names: Sequence[str]
    ) -> None:
        """Export with torch.export (dynamo) and a dynamic first (batch) axis."""
        module = self.exported_module(example)
        exporter_log = logging.getLogger("torch.onnx")
        previous = exporter_log.level
        exporter_log.setLevel(logging.ERROR)  # it warns about every torchvision op it cannot find
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.onnx.export(
                    module,
                    (torch.from_numpy(example),),
                    str(path),
                    input_names=[input_name],
                    output_names=list(output_names),
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    opset_version=ONNX_OPSET,
                    dynamo=True,
                    external_data=False,  # one self-contained file: one sha256 covers the model
                    verbose=False,
                )
        except Exception as exc:  # torch.export raises many unrelated types
            raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
        finally:
            exporter_log.setLevel(previous)


class LightningModel(TorchModel):
    """A LightningModule: trained by ``lightning.Trainer``, saved as the run's best checkpoint."""

    module: L.LightningModule

    def __init__(self, module: L.LightningModule) -> None:
        super().__init__(module)

    def fit(self, request: FitRequest) -> FitOutcome:
        return fit_with_lightning(self.module, request)

    @classmethod
    def load(cls, module_class: Any, run_dir: RunDir) -> "LightningModel":
        """``module_class`` restored from the run's best checkpoint on the CPU, in eval mode."""
        module = module_class.load_from_checkpoint(run_dir.checkpoint, map_location="cpu")
        module.eval()
        return cls(module)
