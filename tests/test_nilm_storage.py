"""Prepared houses on disk: exact round trip, atomic writes, clear errors on bad files."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelyard.core.errors import DataError
from modelyard.projects.nilm.storage import list_prepared, load_house, save_house
from nilm_fixtures import make_house


def test_round_trip_keeps_every_array_and_the_metadata(tmp_path: Path) -> None:
    house = make_house("ukdale_house2", 50, n_targets=3, invalid=(0, 7, 8, 49), seed=4)
    path = save_house(house, tmp_path / "prepared")

    assert path == tmp_path / "prepared" / "ukdale_house2.npz"
    loaded = load_house(path)

    assert loaded.name == "ukdale_house2"
    assert loaded.interval_s == 60
    assert loaded.appliances == ("app0", "app1", "app2")
    for field in ("times", "aggregate", "targets", "valid"):
        original, back = getattr(house, field), getattr(loaded, field)
        assert back.dtype == original.dtype, field
        assert back.shape == original.shape, field
        np.testing.assert_array_equal(back, original, err_msg=field)


def test_save_leaves_no_temporary_files_and_overwrites(tmp_path: Path) -> None:
    save_house(make_house("h1", 10, seed=1), tmp_path)
    save_house(make_house("h2", 10, seed=2), tmp_path)
    newer = make_house("h1", 12, seed=3)
    save_house(newer, tmp_path)  # replaces the first h1

    assert sorted(p.name for p in tmp_path.iterdir()) == ["h1.npz", "h2.npz"]
    np.testing.assert_array_equal(load_house(tmp_path / "h1.npz").aggregate, newer.aggregate)
    assert list_prepared(tmp_path) == ["h1", "h2"]


def test_saved_file_holds_no_pickles(tmp_path: Path) -> None:
    path = save_house(make_house("h", 5), tmp_path)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"times", "aggregate", "targets", "valid", "meta"}


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="prepared house not found") as info:
        load_house(tmp_path / "nope.npz")
    assert "modelyard data prepare" in str(info.value)


def test_load_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "h.npz"
    path.write_bytes(b"definitely not an npz archive" * 20)
    with pytest.raises(DataError, match="not a readable prepared house"):
        load_house(path)


def test_load_truncated_file(tmp_path: Path) -> None:
    path = save_house(make_house("h", 200), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable prepared house"):
        load_house(path)


def test_load_archive_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "h.npz"
    np.savez(path, times=np.zeros(3, np.int64), aggregate=np.zeros(3, np.float32))
    with pytest.raises(DataError, match="not a readable prepared house"):
        load_house(path)


def test_load_archive_with_broken_metadata(tmp_path: Path) -> None:
    house = make_house("h", 4)
    path = tmp_path / "h.npz"
    np.savez(
        path,
        times=house.times,
        aggregate=house.aggregate,
        targets=house.targets,
        valid=house.valid,
        meta=np.array("{not json"),
    )
    with pytest.raises(DataError, match="not a readable prepared house"):
        load_house(path)


def test_load_archive_with_a_corrupted_member(tmp_path: Path) -> None:
    path = save_house(make_house("h", 200), tmp_path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("aggregate.npy")
    # Flip bytes inside the stored aggregate data (past the local header and the .npy header):
    # the archive's directory stays intact, but the member's CRC no longer matches.
    data = bytearray(path.read_bytes())
    inside = info.header_offset + 30 + len(info.filename) + 200
    data[inside : inside + 8] = bytes(b ^ 0xFF for b in data[inside : inside + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="not a readable prepared house"):
        load_house(path)
