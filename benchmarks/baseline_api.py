"""Contender (a): the API most course projects ship, for the serving benchmark.

FastAPI + PyTorch eager, the trained checkpoint loaded once at start, one forward pass per
request inside ``torch.no_grad()``, a sync endpoint (FastAPI runs it on its thread pool), default
torch threading. It answers the same requests as ``modelyard serve`` (NILM: a mains series with
``edges`` pad or valid; images: one uploaded file, top-3 classes), with the same preprocessing
code, so both contenders do the same work per request.

Run: ``BASELINE_RUN_DIR=<training run> uvicorn baseline_api:app --app-dir benchmarks``.
"""

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from fastapi import FastAPI, UploadFile
from pydantic import BaseModel

from modelyard.core.families import load_task
from modelyard.core.run_dir import RunDir
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.torch_model import TorchModel
from modelyard.projects.vision.image_decoding import decode_image, to_model_input

RUN_DIR = RunDir(Path(os.environ.get("BASELINE_RUN_DIR", ".")))


class Request(BaseModel):
    aggregate_w: list[float]
    edges: Literal["pad", "valid"] = "pad"


class Response(BaseModel):
    appliances: dict[str, list[float]]


CONFIG = RUN_DIR.read_config()
PRE = RUN_DIR.read_preprocessing()


def load_network() -> torch.nn.Module:
    loaded = load_task(CONFIG).load_model(RUN_DIR)
    assert isinstance(loaded, TorchModel), "the baseline serves torch models"
    return loaded.module.eval()


MODEL = load_network()
app = FastAPI()


if CONFIG.project.task == "nilm":
    NORM = Normalisation.from_json(PRE["normalisation"])
    WINDOW = int(PRE["window"])
    APPLIANCES = [str(a) for a in PRE["appliances"]]

    @app.post("/predict")
    def predict(request: Request) -> Response:
        series = np.maximum(np.asarray(request.aggregate_w, dtype=np.float32), 0.0)
        half = WINDOW // 2
        if request.edges == "pad":
            series = np.pad(series, (half, half), mode="edge")
        normalised = NORM.normalise_aggregate(series)
        windows = np.lib.stride_tricks.sliding_window_view(normalised, WINDOW)
        with torch.no_grad():
            scores = MODEL(torch.from_numpy(np.ascontiguousarray(windows))).numpy()
        mains = series[half : series.size - half, None]
        watts = np.clip(NORM.denormalise_targets(scores), 0.0, mains)
        return Response(appliances={a: watts[:, j].tolist() for j, a in enumerate(APPLIANCES)})

else:
    CLASSES = [str(c) for c in PRE["classes"]]
    SIZE, MEAN, STD = int(PRE["image_size"]), PRE["mean"], PRE["std"]

    @app.post("/predict")
    def classify(file: UploadFile) -> list[dict[str, float | str]]:
        image = decode_image(file.file.read())
        batch = torch.from_numpy(to_model_input(image, SIZE, MEAN, STD)[None])
        with torch.no_grad():
            probabilities = torch.softmax(MODEL(batch), dim=1)[0]
        values, indices = torch.topk(probabilities, 3)
        return [
            {"label": CLASSES[int(i)], "probability": float(p)}
            for p, i in zip(values, indices, strict=True)
        ]
