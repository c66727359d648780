"""Contender (a): the API most course projects ship, for the serving benchmark.

FastAPI + PyTorch eager, the trained checkpoint loaded once at start, one forward pass per
request inside ``torch.no_grad()``, a sync endpoint (FastAPI runs it on its thread pool), default
torch threading. It answers the same requests as ``modelyard serve`` for NILM (``edges`` pad or
valid), so both contenders do the same work per request.

Run: ``BASELINE_RUN_DIR=<training run> uvicorn baseline_api:app --app-dir benchmarks``.
"""

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from fastapi import FastAPI
from pydantic import BaseModel

from modelyard.core.config import read_saved_config
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.registry import load_task

RUN_DIR = Path(os.environ.get("BASELINE_RUN_DIR", "."))


class Request(BaseModel):
    aggregate_w: list[float]
    edges: Literal["pad", "valid"] = "pad"


class Response(BaseModel):
    appliances: dict[str, list[float]]


def load() -> tuple[torch.nn.Module, Normalisation, int, list[str]]:
    cfg = read_saved_config(RUN_DIR / "config.yaml")
    model = load_task(cfg).load_model(RUN_DIR / "checkpoints" / "best.ckpt")
    assert isinstance(model, torch.nn.Module)
    model.eval()
    pre = json.loads((RUN_DIR / "preprocessing.json").read_text())
    norm = Normalisation.from_json(pre["normalisation"])
    return model, norm, int(pre["window"]), [str(a) for a in pre["appliances"]]


MODEL, NORM, WINDOW, APPLIANCES = load()
app = FastAPI()


@app.post("/predict")
def predict(request: Request) -> Response:
    series = np.maximum(np.asarray(request.aggregate_w, dtype=np.float32), 0.0)
    half = WINDOW // 2
    if request.edges == "pad":
        series = np.pad(series, (half, half), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(NORM.normalise_aggregate(series), WINDOW)
    with torch.no_grad():
        scores = MODEL(torch.from_numpy(np.ascontiguousarray(windows))).numpy()
    mains = series[half : series.size - half, None]
    watts = np.clip(NORM.denormalise_targets(scores), 0.0, mains)
    return Response(appliances={a: watts[:, j].tolist() for j, a in enumerate(APPLIANCES)})
