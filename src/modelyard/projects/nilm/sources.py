"""Read raw houses from the layout the configuration names (CSV directories or NILMTK HDF5)."""

from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from modelyard.core.errors import ConfigError, DataError
from modelyard.core.row_accounting import ReadLedger
from modelyard.projects.nilm.readers import MAINS_COLUMN, discover_houses, read_csv_house

FORMATS = ("csv", "nilmtk_hdf5")


def iter_raw_houses(
    source: Path,
    data_cfg: DictConfig,
    appliances: Sequence[str],
    ledger: ReadLedger | None = None,
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield ``(house name, house frame)`` for every house found in ``source``; an HDF5 file
    is read for ``appliances`` only (CSV houses hold every column they have).

    Every file's (or meter's) row report goes to ``ledger``, which applies the refusal policy.
    """
    layout = str(data_cfg.format)
    ledger = ledger if ledger is not None else ReadLedger()
    if layout == "csv":
        mains = str(data_cfg.get("mains_column") or MAINS_COLUMN)
        for name, directory in discover_houses(source).items():
            yield name, read_csv_house(directory, ledger, mains)
    elif layout == "nilmtk_hdf5":
        yield from _iter_hdf5_houses(source, data_cfg, appliances, ledger)
    else:
        raise ConfigError(f"project.data.format must be one of {FORMATS}, got {layout!r}")


def _iter_hdf5_houses(
    source: Path, data_cfg: DictConfig, appliances: Sequence[str], ledger: ReadLedger
) -> Iterator[tuple[str, pd.DataFrame]]:
    from modelyard.projects.nilm.hdf5_reader import read_nilmtk_building

    hdf5 = data_cfg.hdf5
    path = source if source.is_file() else source / str(hdf5.file)
    if not path.is_file():
        raise DataError(f"NILMTK HDF5 file not found: {path}")
    meters = dict(hdf5.meters) if hdf5.get("meters") else None
    for name, building in dict(hdf5.buildings).items():
        frame = read_nilmtk_building(
            path,
            int(building),
            list(appliances),
            meters=meters,
            resample=str(hdf5.get("resample", "6s")),
            ledger=ledger,
        )
        yield str(name), frame
