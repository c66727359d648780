"""Prepared houses on disk: one uncompressed ``.npz`` per house (plain arrays, never pickles)."""

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from modelyard.core.errors import DataError
from modelyard.projects.nilm.preparation import PreparedHouse

SUFFIX = ".npz"


def save_house(house: PreparedHouse, directory: Path) -> Path:
    """Write ``<directory>/<house>.npz`` atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{house.name}{SUFFIX}"
    handle, temp_name = tempfile.mkstemp(prefix=f".{house.name}.", suffix=SUFFIX, dir=directory)
    os.close(handle)
    temp = Path(temp_name)
    try:
        np.savez(
            temp,
            times=house.times,
            aggregate=house.aggregate,
            targets=house.targets,
            valid=house.valid,
            meta=np.array(
                json.dumps({"interval_s": house.interval_s, "appliances": list(house.appliances)})
            ),
        )
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def load_house(path: Path) -> PreparedHouse:
    """Read a prepared house written by :func:`save_house`."""
    if not path.is_file():
        raise DataError(f"prepared house not found: {path} (run `modelyard data prepare` first)")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return PreparedHouse(
                name=path.stem,
                interval_s=int(meta["interval_s"]),
                appliances=tuple(meta["appliances"]),
                times=data["times"],
                aggregate=data["aggregate"],
                targets=data["targets"],
                valid=data["valid"],
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable prepared house: {exc}") from exc


def list_prepared(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob(f"*{SUFFIX}"))
