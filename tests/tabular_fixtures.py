"""Synthetic Boliga-format sales for tabular tests that must not depend on the real data."""

import math

import numpy as np
import pytest
from omegaconf import DictConfig

from modelyard.core.bundle import Bundle

ZIPS = {"0800": 22000, "2100": 62000, "5000": 30000, "8000": 38000, "9000": 20000}
CITIES = {"0800": "Høje Taastrup", "2100": "København Ø", "5000": "Odense C"}
SIDES = ["th", "tv", "mf", ""]
#: One valid request row for a bundle of :func:`build_avm_bundle`.
VALID_ROW = {
    "area_m2": 82.0,
    "construction_year": 1965,
    "floor": 2,
    "zip_code": "2100",
    "side": "th",
    "sale_date": "2021-10-15",
}


def danish(number: int) -> str:
    """1340000 -> 1.340.000."""
    return f"{number:,}".replace(",", ".")


def synthetic_sales(rows: int, seed: int = 7) -> str:
    """Boliga lines: apartments (and a few houses, which prepare drops) with a price per m2 set
    by the zip code and the area, plus noise."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(rows):
        zip_code = list(ZIPS)[i % len(ZIPS)]
        area = int(rng.integers(30, 151))
        year = int(rng.integers(1900, 2021))
        floor = ["st.", "1.", "2.", "3.", "4.", "kl."][int(rng.integers(0, 6))]
        side = SIDES[int(rng.integers(0, len(SIDES)))]
        address = f"Testvej {i % 90 + 1} {floor} {side}".rstrip()
        if i % 20 == 0:
            address = f"Husvej {i % 90 + 1}"  # a house: no floor
        per_m2 = ZIPS[zip_code] * (1.2 - area / 300) * math.exp(rng.normal(0, 0.05))
        price = int(round(per_m2 * area, -3))
        day = f"{int(rng.integers(1, 29)):02d}-{[7, 8, 9, 10, 11, 12][i % 6]:02d}-2021"
        city = f"{zip_code} {CITIES.get(zip_code, 'By')}"
        lines.append(
            f"{address},{city},{danish(price)},{day},{area} ,{danish(round(price / area))},{year}\n"
        )
    return "".join(lines)


def build_avm_bundle(
    tmp_path_factory: pytest.TempPathFactory, rows: int, *overrides: str
) -> tuple[DictConfig, Bundle]:
    """fetch -> prepare -> train (quick) -> export with the avm config (and ``overrides``) on a
    synthetic table."""
    from modelyard.core.bundle import load_bundle
    from modelyard.core.config import load_config
    from modelyard.stages import export, fetch, prepare, train

    source = tmp_path_factory.mktemp("source")
    (source / "boliga_sales_2021.csv").write_text(synthetic_sales(rows), encoding="utf-8")
    cfg = load_config(
        [
            "project=avm",
            "experiment=quick",
            "tracking=none",
            f"paths.workdir={tmp_path_factory.mktemp('workdir')}",
            f"project.data.source={source}",
            "project.data.files=[]",
            "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1",
            "+trainer.enable_model_summary=false",
            *overrides,
        ]
    )
    fetch.run(cfg, progress=False)
    prepare.run(cfg)
    exported = export.run(cfg, run_dir=train.run(cfg).run_dir)
    return cfg, load_bundle(exported.path)
