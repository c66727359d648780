"""Test material for the monitor: a small tabular-family bundle with a hand-written reference
profile, and a real prediction log (SQLite or PostgreSQL) filled with rows as a server writes them.

The bundle's model file is a placeholder: the monitor never runs the model. The logged ``inputs``
hold flat feature dicts (one per row of a request), and :func:`flat_rows` is the drift-row
adapter the tests hand to the monitor in place of the family's ``drift_features.log_rows``.
"""

import itertools
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from modelyard.core.bundle import Bundle, TensorSpec, write_bundle
from modelyard.core.reference_profile import PROFILE_FILE, Column, ReferenceProfile
from modelyard.serving.log_schema import feedback, predictions, prepare_schema

MODEL = "avm-test"
TARGET = "price_m2"
PROMOTED = {"model": {"mdape": 0.10, "within_10pct": 0.50, "mae": 2000.0}}
NUMERICAL = ("area_m2", "rooms", "year_built")
CATEGORICAL = ("city",)
CITIES = ("aarhus", "odense", "aalborg")
_SERVER_IDS = itertools.count(1)


def features(rng: np.random.Generator, rows: int, area_scale: float = 1.0) -> list[dict[str, Any]]:
    """Rows of the stand-in family's features; ``area_scale`` shifts one column."""
    return [
        {
            "area_m2": round(float(rng.normal(100.0, 25.0)) * area_scale, 1),
            "rooms": float(rng.integers(1, 7)),
            "year_built": float(rng.integers(1900, 2020)),
            "city": str(rng.choice(CITIES)),
        }
        for _ in range(rows)
    ]


def profile(rows: int = 1000, seed: int = 0) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    sample = features(rng, rows)
    columns = {n: Column("numerical", "input") for n in NUMERICAL}
    columns |= {n: Column("categorical", "input") for n in CATEGORICAL}
    return ReferenceProfile(
        family="tabular",
        drawn=f"{rows} rows drawn at random (seed {seed}) from the synthetic training split",
        seed=seed,
        columns=columns,
        data={name: [row[name] for row in sample] for name in columns},
        metrics={},
    )


def make_bundle(
    target: Path, with_profile: bool = True, profile_of: ReferenceProfile | None = None
) -> Bundle:
    """The stand-in tabular bundle, with :func:`profile` (or ``profile_of``) as its profile."""
    scratch = target.parent / f"{target.name}-files"
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "model.onnx").write_bytes(b"placeholder: the monitor never runs the model")
    profile_file = None
    if with_profile:
        profile_file = scratch / PROFILE_FILE
        (profile_of or profile()).write(profile_file)
    return write_bundle(
        target,
        scratch / "model.onnx",
        {
            "project": "avm",
            "task": "tabular",
            "name": MODEL,
            "version": "20261201-000000",
            "created_at": datetime(2026, 12, 1, tzinfo=UTC),
            "inputs": [TensorSpec(name="x", dtype="float32", shape=["batch", 4])],
            "outputs": [TensorSpec(name="y", dtype="float32", shape=["batch", 1])],
            "preprocessing": {},
            "metrics": PROMOTED,
        },
        profile_file=profile_file,
    )


def flat_rows(inputs: Any, outputs: Any) -> list[dict[str, Any]]:
    """The stand-in ``log_rows``: a request's rows are already flat feature dicts."""
    del outputs
    return [dict(row) for row in inputs] if isinstance(inputs, list) else [dict(inputs)]


def prepare(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        prepare_schema(connection)
        feedback.create(connection, checkfirst=True)
    return engine


def log_requests(
    engine: sa.Engine,
    requests: Sequence[list[dict[str, Any]]],
    start: datetime,
    step: timedelta = timedelta(seconds=30),
    prices: Iterable[list[float]] | None = None,
    status: int = 200,
    route: str = "/predict",
    model: str = MODEL,
) -> list[str]:
    """Insert one log row per request, as the server writes them; returns their server ids."""
    price_lists = list(prices) if prices is not None else [[20000.0] * len(r) for r in requests]
    rows, ids = [], []
    for i, (inputs, values) in enumerate(zip(requests, price_lists, strict=True)):
        server_id = f"{next(_SERVER_IDS):032x}"  # unique, like the server's
        ids.append(server_id)
        rows.append(
            {
                "request_id": f"r{i}",
                "server_request_id": server_id,
                "created_at": start + i * step,
                "model": model,
                "version": "20261201-000000",
                "route": route,
                "status": status,
                "latency_ms": 1.0,
                "inputs": inputs,
                "outputs": [{TARGET: v, "warnings": []} for v in values],
            }
        )
    with engine.begin() as connection:
        connection.execute(predictions.insert(), rows)
    return ids


def send_feedback(engine: sa.Engine, truths: dict[str, Any], when: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            feedback.insert(),
            [
                {"server_request_id": k, "received_at": when, "model": MODEL, "truth": v}
                for k, v in truths.items()
            ],
        )


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
