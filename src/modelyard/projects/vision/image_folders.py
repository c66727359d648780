"""Folder-per-class image datasets (a directory or a zip): index, split, weight and cache them.

The layout is the one public datasets ship in: ``<class>/<image>``, optionally under one or more
single top folders (``EuroSAT_RGB/``, ``PlantVillage/``). A zip is read in place rather than
extracted, so the upstream download is used exactly as it is published.

Training side only (numpy + Pillow; no torch), so that it can be tested and run on its own.
"""

import math
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
from numpy.typing import NDArray

from modelyard.core.errors import ConfigError, DataError
from modelyard.core.row_accounting import ReadLedger, RowReport
from modelyard.projects.vision.image_decoding import ImageError, check_image_size, image_pixels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "val", "test")
# macOS zips carry resource forks under __MACOSX/ and ._<name>; they look like images but are not.
_IGNORED_NAMES = frozenset({"__MACOSX"})
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError)

Reader = Callable[[str], bytes]


@dataclass(frozen=True, eq=False)
class ImageIndex:
    """Every image of a dataset and its class, without reading any pixel.

    ``members`` are posix paths relative to ``source`` (a directory) or zip member names, sorted,
    so that the same source always gives the same order and hence the same split.
    ``eq=False`` because comparing the label arrays element-wise has no single truth value.
    """

    source: Path
    classes: list[str]
    members: list[str]
    labels: NDArray[np.int64]

    def class_counts(self) -> dict[str, int]:
        """Images per class, in class order (what imbalance handling and reports need)."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(count) for name, count in zip(self.classes, counts, strict=True)}


HIDDEN_RULE = "hidden or system file (.*, __MACOSX)"
OTHER_FILE_RULE = "not an image file (notes, metadata)"
# Images in formats the pipeline does not read: a user who put them in a class folder meant them.
UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".jp2")


def index_image_folder(source: Path, ledger: ReadLedger | None = None) -> ImageIndex:
    """List the images of a directory or zip and label each with its class folder.

    Every file is accounted for in a :class:`RowReport` (unit ``files``) checked by ``ledger``:
    hidden and system files and other non-image files (notes) are filtered by rule; an image in
    a format the pipeline does not read (``.gif``, ``.webp``, ...) is refused as
    ``unsupported_image_format`` with its name, never skipped silently.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"image source not found: {source}")
    if source.is_dir():
        files, folders = _list_directory(source)
    elif zipfile.is_zipfile(source):
        files, folders = _list_zip(source)
    else:
        raise DataError(f"image source {source} is neither a directory nor a zip file")
    index = _build_index(source, files, folders)
    ledger = ledger if ledger is not None else ReadLedger()
    ledger.add(_file_report(source, files))
    return index


def _file_report(source: Path, files: list[str]) -> RowReport:
    report = RowReport(source=source.name, unit="files", read=len(files))
    visible = [path for path in files if _all_visible(path)]
    report.filter(HIDDEN_RULE, len(files) - len(visible))
    others = [path for path in visible if not _is_image(path)]
    unsupported = sorted(p for p in others if p.lower().endswith(UNSUPPORTED_IMAGE_EXTENSIONS))
    report.filter(OTHER_FILE_RULE, len(others) - len(unsupported))
    report.refuse_many("unsupported_image_format", len(unsupported), unsupported)
    return report


def _list_directory(root: Path) -> tuple[list[str], list[str]]:
    """Relative posix paths of all visible files and folders (hidden folders are not entered)."""
    files: list[str] = []
    folders: list[str] = []
    for current, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if _visible_name(name))
        base = Path(current).relative_to(root)
        folders.extend((base / name).as_posix() for name in dirnames)
        files.extend((base / name).as_posix() for name in filenames)
    return files, folders


def _list_zip(archive_path: Path) -> tuple[list[str], list[str]]:
    """Member names of files and (explicit) folder entries; many zips have no folder entries."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            infos = archive.infolist()
    except _ZIP_READ_ERRORS as exc:
        raise DataError(f"cannot read zip file {archive_path}: {exc}") from exc
    files = [info.filename for info in infos if not info.is_dir()]
    folders = [info.filename.rstrip("/") for info in infos if info.is_dir()]
    return files, folders


def _visible_name(name: str) -> bool:
    return not name.startswith(".") and name not in _IGNORED_NAMES


def _all_visible(path: str) -> bool:
    return all(_visible_name(part) for part in PurePosixPath(path).parts)


def _is_image(path: str) -> bool:
    return _all_visible(path) and path.lower().endswith(IMAGE_EXTENSIONS)


def _build_index(source: Path, files: list[str], folders: list[str]) -> ImageIndex:
    images = sorted(path for path in files if _is_image(path))
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {source}")
    depth = _top_folder_depth(images)
    image_classes = [_class_of(path, depth, source) for path in images]
    classes = sorted(set(image_classes))
    _check_no_empty_class(source, folders, depth, set(classes))
    if len(classes) < 2:
        raise DataError(
            f"{source} has {len(classes)} class folder ({classes[0]!r}); "
            "classification needs at least 2 (one folder per class)"
        )
    position = {name: i for i, name in enumerate(classes)}
    labels = np.array([position[name] for name in image_classes], dtype=np.int64)
    return ImageIndex(source=source, classes=classes, members=images, labels=labels)


def _top_folder_depth(images: list[str]) -> int:
    """How many single top folders wrap the class folders (``EuroSAT_RGB/`` -> 1)."""
    split = [path.split("/") for path in images]
    depth = 0
    while all(len(parts) > depth + 2 for parts in split) and len({p[depth] for p in split}) == 1:
        depth += 1
    return depth


def _class_of(path: str, depth: int, source: Path) -> str:
    parts = path.split("/")[depth:]
    if len(parts) != 2:
        raise DataError(
            f"{source}: expected every image at <class>/<image> (one folder per class, "
            f"optionally inside a single top folder), but found {path!r}"
        )
    return parts[0]


def _check_no_empty_class(source: Path, folders: list[str], depth: int, classes: set[str]) -> None:
    """A class folder without images is a broken download or a typo, never intended."""
    candidates = set()
    for folder in folders:
        parts = folder.split("/")
        if len(parts) == depth + 1 and all(_visible_name(part) for part in parts):
            candidates.add(parts[-1])
    empty = sorted(candidates - classes)
    if empty:
        raise DataError(
            f"{source}: class folder {empty[0]!r} contains no images "
            f"({', '.join(IMAGE_EXTENSIONS)})"
            + (f" (also empty: {empty[1:]})" if empty[1:] else "")
        )


def read_member(index: ImageIndex, member: str) -> bytes:
    """The raw bytes of one image (opens the zip for this one read; use cache_images for many)."""
    with member_reader(index.source) as read:
        return read(member)


@contextmanager
def member_reader(source: Path) -> Iterator[Reader]:
    """A byte reader over the source that keeps a zip open for all reads in the block."""
    if source.is_dir():
        yield partial(_read_file, source)
        return
    try:
        archive = zipfile.ZipFile(source)
    except _ZIP_READ_ERRORS as exc:
        raise DataError(f"cannot read zip file {source}: {exc}") from exc
    with archive:
        yield partial(_read_zip_member, archive, source)


def _read_file(root: Path, member: str) -> bytes:
    relative = PurePosixPath(member)
    if relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"image {member!r} is not a path inside {root}")
    try:
        return (root / relative).read_bytes()
    except FileNotFoundError:
        raise DataError(f"image {member!r} not found in {root}") from None
    except OSError as exc:
        raise DataError(f"cannot read image {member!r} in {root}: {exc}") from exc


def _read_zip_member(archive: zipfile.ZipFile, source: Path, member: str) -> bytes:
    try:
        return archive.read(member)
    except KeyError:
        raise DataError(f"image {member!r} not found in {source}") from None
    except _ZIP_READ_ERRORS as exc:
        raise DataError(f"cannot read image {member!r} from {source}: {exc}") from exc


def stratified_split(
    labels: NDArray[np.integer], test_fraction: float, val_fraction: float, seed: int
) -> dict[str, NDArray[np.int64]]:
    """Split row indices into train/val/test with every class in the same proportions.

    Per class: shuffle, take ``round(n * test_fraction)`` rows for test (at least 1 when the class
    has 3 or more rows), then ``round(rest * val_fraction)`` of the rest for val (at least 1 when 2
    or more remain). A rare class thus reaches every part instead of rounding away, and train
    always keeps at least one row of each class. ``val_fraction`` is a fraction of what test
    leaves. A fraction of 0 gives an empty part. Each class is shuffled by its own generator
    seeded with ``(seed, class)``, so adding images to one class does not reshuffle the others.
    """
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"split seed must be a non-negative whole number, got {seed!r}")
    labels = _check_labels(labels)
    parts: dict[str, list[NDArray[np.int64]]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label).astype(np.int64)
        np.random.default_rng([int(seed), int(label)]).shuffle(rows)
        n_test = _part_size(len(rows), test_fraction, minimum_from=3)
        n_val = _part_size(len(rows) - n_test, val_fraction, minimum_from=2)
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test : n_test + n_val])
        parts["train"].append(rows[n_test + n_val :])
    return {
        name: np.sort(np.concatenate([*chunks, np.empty(0, np.int64)]))
        for name, chunks in parts.items()
    }


def stratified_folds(labels: NDArray[np.integer], folds: int, seed: int) -> list[NDArray[np.int64]]:
    """Split row indices into ``folds`` disjoint parts that cover every row, each class spread
    as evenly as it goes (its count per fold differs by at most one), for k-fold
    cross-validation.

    Each class is shuffled by its own generator seeded with ``(seed, class)``, as in
    :func:`stratified_split`; the classes, in class order, are then dealt round-robin into the
    folds, the deal going on where the previous class stopped, so that fold sizes also differ
    by at most one. A :class:`ConfigError` for fewer than 2 folds or more folds than the
    smallest class has rows (a fold would miss that class).
    """
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise ConfigError(f"cv.folds must be a whole number of at least 2, got {folds!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"cv.seed must be a non-negative whole number, got {seed!r}")
    labels = _check_labels(labels)
    present, counts = np.unique(labels, return_counts=True)
    if not present.size or int(counts.min()) < folds:
        smallest = int(counts.min()) if present.size else 0
        raise ConfigError(
            f"cv.folds={folds} is more folds than the smallest class has images ({smallest}): "
            "every fold must hold every class; use fewer folds or add images"
        )
    dealt: list[NDArray[np.int64]] = []
    for label in present:
        rows = np.flatnonzero(labels == label).astype(np.int64)
        np.random.default_rng([int(seed), int(label)]).shuffle(rows)
        dealt.append(rows)
    order = np.concatenate(dealt)
    fold_of = np.arange(order.size) % folds
    return [np.sort(order[fold_of == k]) for k in range(folds)]


def _check_fraction(value: float, name: str) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not math.isfinite(fraction) or not 0 <= fraction < 1:
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    return fraction


def _part_size(available: int, fraction: float, minimum_from: int) -> int:
    """Rows for a held-out part: rounded share, at least one once there are enough, never all."""
    if fraction == 0 or available < 1:
        return 0
    size = round(available * fraction)
    if available >= minimum_from:
        size = max(size, 1)
    return min(size, available - 1)


def _check_labels(labels: NDArray[np.integer]) -> NDArray[np.int64]:
    array = np.asarray(labels)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D integer array, got {array.dtype} {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    return array.astype(np.int64)


def class_weights(labels: NDArray[np.integer], n_classes: int) -> NDArray[np.float32]:
    """Inverse-frequency loss weights, scaled so the classes that occur average 1.

    With these weights every class contributes equally to a weighted cross-entropy, so a rare
    class (healthy potato leaves) is not ignored; averaging 1 keeps the loss, and hence the
    learning rate, on the same scale as without weights. Classes absent from ``labels`` get 0
    (they cannot contribute to the loss) and are left out of the average.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    array = _check_labels(labels)
    if array.size and array.max() >= n_classes:
        raise ValueError(f"label {int(array.max())} is out of range for {n_classes} classes")
    counts = np.bincount(array, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float64)
    weights[present] = 1.0 / counts[present]
    if present.any():
        weights /= weights[present].mean()
    return weights.astype(np.float32)


def cache_images(
    index: ImageIndex, rows: NDArray[np.integer], size: int, progress: bool = False
) -> NDArray[np.uint8]:
    """Decode and resize the given rows once into uint8 ``(len(rows), size, size, 3)``.

    Decoding dominates training time for small images, so it is done once per run and epochs read
    from memory. A file that fails to decode stops the run with the member's name: training on a
    silently shrunk dataset would be worse than fixing (or deleting) the file. Each image goes
    through :func:`.image_decoding.image_pixels`, as every upload to the server does.
    """
    check_image_size(size)
    positions = _check_rows(rows, len(index.members))
    pixels = np.empty((len(positions), size, size, 3), dtype=np.uint8)
    with member_reader(index.source) as read, _progress(progress, len(positions)) as advance:
        for slot, row in enumerate(positions):
            member = index.members[row]
            pixels[slot] = _member_pixels(read(member), size, member, index.source)
            advance()
    return pixels


def _check_rows(rows: NDArray[np.integer], n_members: int) -> list[int]:
    array = np.asarray(rows)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"rows must be a 1-D integer array, got {array.dtype} {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= n_members):
        raise ValueError(f"rows must index the {n_members} images of the index")
    return [int(row) for row in array]


def _member_pixels(data: bytes, size: int, member: str, source: Path) -> NDArray[np.uint8]:
    try:
        return image_pixels(data, size)
    except ImageError as exc:
        raise DataError(f"invalid image {member!r} in {source}: {exc.reason}") from exc


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr (stdout stays clean for results), or a no-op."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("decoding images", total=total)
        yield partial(bar.advance, task)
