"""Vision data layer on real files: decoding untrusted bytes, indexing folder-per-class datasets
(zip and directory), stratified splits, class weights and pixel caching."""

import io
import pickle
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from conftest import shared_datasets_root
from modelyard.core.errors import ConfigError, DataError
from modelyard.core.row_accounting import ReadLedger, RefusalPolicy
from modelyard.projects.vision.image_decoding import (
    ALLOWED_FORMATS,
    ImageError,
    ImageLimits,
    decode_image,
    normalise,
    prepare_pixels,
    to_model_input,
)
from modelyard.projects.vision.image_folders import (
    ImageIndex,
    cache_images,
    class_weights,
    index_image_folder,
    read_member,
    stratified_split,
)
from vision_fixtures import bilevel_png, encode

REAL_IMAGES = shared_datasets_root() / "images"
RED, GREEN, BLUE = (220, 20, 20), (20, 200, 40), (30, 40, 230)


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


# ------------------------------------------------------------------------------ decode_image


def test_decode_png_keeps_exact_pixels() -> None:
    source = Image.new("RGB", (7, 5), RED)
    source.putpixel((3, 2), BLUE)
    image = decode_image(encode(source, "PNG"))
    assert (image.mode, image.size) == ("RGB", (7, 5))
    assert np.array_equal(np.asarray(image), np.asarray(source))


def test_decode_jpeg_gives_rgb_close_to_the_original() -> None:
    image = decode_image(encode(Image.new("RGB", (16, 12), GREEN), "JPEG", quality=95))
    assert (image.mode, image.size) == ("RGB", (16, 12))
    assert np.abs(np.asarray(image).astype(int) - GREEN).max() <= 3


def test_decode_rgba_composites_transparency_on_white() -> None:
    source = Image.new("RGBA", (3, 1))
    source.putpixel((0, 0), (*RED, 255))
    source.putpixel((1, 0), (*RED, 0))
    source.putpixel((2, 0), (0, 0, 0, 128))
    image = decode_image(encode(source, "PNG"))
    assert image.mode == "RGB"
    assert pixel(image, (0, 0)) == RED
    assert pixel(image, (1, 0)) == (255, 255, 255)
    assert all(abs(channel - 127) <= 1 for channel in pixel(image, (2, 0)))


def test_decode_grey_and_bilevel_become_three_equal_channels() -> None:
    grey = Image.new("L", (4, 4), 77)
    assert pixel(decode_image(encode(grey, "PNG")), (1, 1)) == (77, 77, 77)
    assert pixel(decode_image(encode(grey.convert("LA"), "PNG")), (0, 0)) == (77, 77, 77)
    bilevel = Image.new("1", (9, 3), 1)
    assert pixel(decode_image(encode(bilevel, "PNG")), (8, 2)) == (255, 255, 255)


def test_decode_palette_uses_the_palette_and_its_transparent_index() -> None:
    source = Image.new("P", (2, 1))
    source.putpalette([*RED, *BLUE] + [0] * 762)
    source.putpixel((1, 0), 1)
    image = decode_image(encode(source, "PNG"))
    assert [pixel(image, (0, 0)), pixel(image, (1, 0))] == [RED, BLUE]
    transparent = decode_image(encode(source, "PNG", transparency=1))
    assert [pixel(transparent, (0, 0)), pixel(transparent, (1, 0))] == [RED, (255, 255, 255)]


def test_decode_cmyk_jpeg_becomes_rgb() -> None:
    image = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95))
    red, green, blue = pixel(image, (4, 4))
    assert image.mode == "RGB" and red > 240 and green < 15 and blue < 15


def test_decode_16_bit_grey_is_scaled_not_clipped() -> None:
    source = Image.fromarray(np.array([[0, 1000, 32768, 65535]], dtype=np.uint16))
    assert source.mode == "I;16"
    image = decode_image(encode(source, "PNG"))
    assert np.asarray(image)[0, :, 0].tolist() == [0, 3, 128, 255]


def test_decode_accepts_multi_picture_jpeg_as_jpeg() -> None:
    first, second = Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)
    data = encode(first, "MPO", save_all=True, append_images=[second], quality=95)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert np.abs(np.asarray(decode_image(data)).astype(int) - RED).max() <= 3


def test_decode_applies_exif_orientation() -> None:
    source = Image.new("RGB", (30, 20), BLUE)
    source.paste(RED, (0, 0, 15, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    image = decode_image(encode(source, "JPEG", exif=exif, quality=95))
    assert image.size == (20, 30)
    top, bottom = np.asarray(image)[3, 10].astype(int), np.asarray(image)[26, 10].astype(int)
    assert np.abs(top - RED).max() <= 10 and np.abs(bottom - BLUE).max() <= 10


def test_decode_rejects_empty_data() -> None:
    with pytest.raises(ImageError, match="empty data"):
        decode_image(b"")


def test_decode_rejects_bytes_that_are_not_an_image() -> None:
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError, match="not an image"):
        decode_image(noise)
    with pytest.raises(ImageError, match="not an image"):
        decode_image(b"name,value\n1,2\n")


def test_decode_rejects_a_truncated_jpeg() -> None:
    rng = np.random.default_rng(1)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, "JPEG", quality=90)
    with pytest.raises(ImageError, match="truncated or corrupt JPEG") as raised:
        decode_image(data[: len(data) // 2])
    assert isinstance(raised.value, DataError)


def test_decode_rejects_a_png_with_a_damaged_pixel_stream() -> None:
    data = bytearray(encode(Image.new("RGB", (32, 32), RED), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start : start + 8] = b"\xff" * 8
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(bytes(data))


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_decode_rejects_formats_outside_the_allowed_list(fmt: str) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow build has no WebP support")
    data = encode(Image.new("RGB", (8, 8), RED), fmt)
    with pytest.raises(ImageError, match=f"unsupported format {fmt} \\(accepted: JPEG, PNG\\)"):
        decode_image(data)
    assert fmt not in ALLOWED_FORMATS


def test_decode_rejects_a_decompression_bomb_from_its_header_alone() -> None:
    """7000 x 7000 = 49 Mpx: over the 40 Mpx default, under Pillow's own 89 Mpx warning."""
    data = bilevel_png(7_000, 7_000)
    assert len(data) < 50_000
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"decompression bomb: 7000x7000 = 49,000,000 pixels"):
        decode_image(data)
    assert time.perf_counter() - started < 0.25  # decoding would allocate and fill 49 MB
    with pytest.raises(ImageError, match="exceeds the limit of 40,000,000"):
        decode_image(bilevel_png(7_000, 7_000, with_pixels=False))
    # the same header under higher limits does get decoded, and fails for want of pixels
    higher = ImageLimits(max_pixels=50_000_000, max_decoded_bytes=10**9)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        decode_image(bilevel_png(7_000, 7_000, with_pixels=False), higher)


def test_decode_pixel_limit_is_inclusive() -> None:
    data = encode(Image.new("RGB", (100, 100), RED), "PNG")
    assert decode_image(data, ImageLimits(max_pixels=10_000)).size == (100, 100)
    with pytest.raises(ImageError, match="exceeds the limit of 9,999"):
        decode_image(data, ImageLimits(max_pixels=9_999))
    with pytest.raises(ConfigError, match="max_pixels"):
        ImageLimits(max_pixels=0)


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_bombs_above_pillows_own_limit_are_refused_with_the_projects_limits(side: int) -> None:
    """Pillow warns at 89 Mpx and raises at 179 Mpx with its process-wide limit; what applies,
    and what the error names, are the limits given (here named as a project's)."""
    filters_before = list(warnings.filters)
    limits = ImageLimits(owner="project plants")
    with pytest.raises(ImageError, match=r"limit of 40,000,000 \(max_pixels of project plants\)"):
        decode_image(bilevel_png(side, side), limits)
    generous = ImageLimits(max_pixels=10**12, owner="project plants")
    with pytest.raises(ImageError, match=r"\(max_decoded_bytes of project plants\)") as raised:
        decode_image(bilevel_png(side, side), generous)
    assert "178,956,970" not in str(raised.value) and "89,478,485" not in str(raised.value)
    assert warnings.filters == filters_before


def test_image_error_carries_its_reason_and_survives_pickling() -> None:
    with pytest.raises(ImageError) as raised:
        decode_image(b"")
    error = raised.value
    assert error.reason == "empty data (0 bytes)"
    assert str(error) == "invalid image: empty data (0 bytes)"
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.reason) == (str(error), error.reason)


# ------------------------------------------------------------------ pixels and normalisation


def test_normalise_matches_hand_computed_values() -> None:
    pixels = np.array([[[0, 51, 255]]], dtype=np.uint8)  # one pixel, (H=1, W=1, 3)
    result = normalise(pixels, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    assert result.dtype == np.float32 and result.shape == (3, 1, 1)
    # R: (0 - .5) / .5 = -1;  G: (.2 - .5) / .25 = -1.2;  B: (1 - .5) / .5 = 1
    np.testing.assert_allclose(result[:, 0, 0], [-1.0, -1.2, 1.0], rtol=1e-6)


def test_normalise_moves_channels_first_for_batches() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    result = normalise(pixels, mean, std)
    assert result.shape == (2, 3, 4, 5) and result.flags.c_contiguous
    expected = (pixels[1, 2, 3, 1] / 255 - mean[1]) / std[1]
    assert result[1, 1, 2, 3] == pytest.approx(expected, rel=1e-5)


def test_normalise_rejects_bad_inputs() -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        normalise(pixels.astype(np.float32), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 3\)"):
        normalise(np.zeros((4, 4, 4), dtype=np.uint8), (0, 0, 0), (1, 1, 1))
    with pytest.raises(ConfigError, match="mean must be 3 finite numbers"):
        normalise(pixels, (0.5, 0.5), (1, 1, 1))
    with pytest.raises(ConfigError, match="std must be 3 finite numbers"):
        normalise(pixels, (0, 0, 0), ("a", "b", "c"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="std must be positive"):
        normalise(pixels, (0, 0, 0), (1, 0, 1))


def test_prepare_pixels_squashes_to_a_square_deterministically() -> None:
    source = Image.new("RGB", (50, 20), RED)
    source.paste(BLUE, (25, 0, 50, 20))
    pixels = prepare_pixels(source, 16)
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 16, 3)
    assert tuple(pixels[8, 2]) == RED and tuple(pixels[8, 13]) == BLUE  # squashed, not cropped
    assert np.array_equal(pixels, prepare_pixels(source, 16))
    expected = np.asarray(source.resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal(pixels, expected)


def test_prepare_pixels_converts_other_modes_and_checks_size() -> None:
    assert tuple(prepare_pixels(Image.new("L", (3, 3), 9), 2)[0, 0]) == (9, 9, 9)
    with pytest.raises(ConfigError, match="image size"):
        prepare_pixels(Image.new("RGB", (3, 3)), 0)


def test_to_model_input_is_normalised_prepared_pixels() -> None:
    image = decode_image(encode(Image.new("RGB", (40, 30), GREEN), "PNG"))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    tensor = to_model_input(image, 24, mean, std)
    assert tensor.dtype == np.float32 and tensor.shape == (3, 24, 24)
    np.testing.assert_array_equal(tensor, normalise(prepare_pixels(image, 24), mean, std))


# ------------------------------------------------------------------------ index_image_folder

LAYOUT = {"cat": 5, "dog": 3, "eel": 2}


def sample_images() -> dict[str, bytes]:
    """Members of a small three-class dataset under a top folder, mixed formats and cases."""
    colours = {"cat": RED, "dog": GREEN, "eel": BLUE}
    suffixes = [(".png", "PNG"), (".JPG", "JPEG"), (".jpeg", "JPEG"), (".PNG", "PNG")]
    files = {}
    for name, count in LAYOUT.items():
        for i in range(count):
            suffix, fmt = suffixes[i % len(suffixes)]
            image = Image.new("RGB", (12 + i, 10), colours[name])
            files[f"Top/{name}/{name}_{i}{suffix}"] = encode(image, fmt)
    return files


def clutter() -> dict[str, bytes]:
    """What real downloads also carry: macOS forks, hidden files, notes; none is an image."""
    fork = b"\x00\x05\x16\x07 not an image"
    return {
        "__MACOSX/Top/cat/._cat_0.png": fork,
        "Top/cat/._cat_0.png": fork,
        "Top/.hidden/x.png": fork,
        "Top/.DS_Store": b"junk",
        "Top/dog/notes.txt": b"notes",
    }


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], folders: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for folder in folders:
            archive.writestr(folder.rstrip("/") + "/", b"")
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def dataset_files() -> dict[str, bytes]:
    return {**sample_images(), **clutter()}


def test_zip_and_directory_give_the_same_index(
    tmp_path: Path, dataset_files: dict[str, bytes]
) -> None:
    from_dir = index_image_folder(write_tree(tmp_path / "tree", dataset_files))
    from_zip = index_image_folder(write_zip(tmp_path / "data.zip", dataset_files))
    assert from_dir.classes == from_zip.classes == ["cat", "dog", "eel"]
    assert from_dir.members == from_zip.members == sorted(sample_images())
    assert np.array_equal(from_dir.labels, from_zip.labels)
    assert from_zip.labels.dtype == np.int64
    assert from_zip.class_counts() == LAYOUT
    labelled = dict(zip(from_zip.members, from_zip.labels.tolist(), strict=True))
    assert labelled["Top/dog/dog_1.JPG"] == 1 and labelled["Top/eel/eel_0.png"] == 2


def test_binary_dataset_without_a_top_folder(tmp_path: Path) -> None:
    files = {
        f"{label}/{i}.png": encode(Image.new("RGB", (4, 4), RED), "PNG")
        for label in ("no", "yes")
        for i in range(3)
    }
    index = index_image_folder(write_tree(tmp_path, files))
    assert index.classes == ["no", "yes"]
    assert index.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert index.members[0] == "no/0.png"


def test_several_single_top_folders_are_unwrapped(tmp_path: Path) -> None:
    files = {f"dl/v2/{c}/{c}.png": b"x" for c in ("a", "b")}
    index = index_image_folder(write_zip(tmp_path / "nested.zip", files))
    assert index.classes == ["a", "b"] and index.members == ["dl/v2/a/a.png", "dl/v2/b/b.png"]


def test_missing_source_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image source not found"):
        index_image_folder(tmp_path / "nowhere.zip")


def test_a_file_that_is_not_a_zip_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data.zip"
    path.write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match="neither a directory nor a zip"):
        index_image_folder(path)


def test_no_images_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no images \(.jpg, .jpeg, .png\) found"):
        index_image_folder(write_tree(tmp_path, {"a/readme.txt": b"x", "__MACOSX/a/b.png": b"x"}))


def test_a_single_class_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has 1 class folder \('only'\); .* at least 2"):
        index_image_folder(
            write_zip(tmp_path / "one.zip", {"only/a.png": b"x", "only/b.png": b"x"})
        )


def test_an_empty_class_folder_is_named(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", sample_images())
    (root / "Top" / "fox").mkdir()
    (root / "Top" / "fox" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="class folder 'fox' contains no images"):
        index_image_folder(root)
    zipped = write_zip(tmp_path / "d.zip", sample_images(), folders=("Top/", "Top/gnu/"))
    with pytest.raises(DataError, match="class folder 'gnu' contains no images"):
        index_image_folder(zipped)


def test_images_outside_the_class_layout_are_named(tmp_path: Path) -> None:
    files = {"a/1.png": b"x", "b/2.png": b"x", "b/deeper/3.png": b"x"}
    with pytest.raises(DataError, match=r"<class>/<image>.*'b/deeper/3\.png'"):
        index_image_folder(write_zip(tmp_path / "deep.zip", files))
    files = {"a/1.png": b"x", "b/2.png": b"x", "loose.png": b"x"}
    with pytest.raises(DataError, match=r"'loose\.png'"):
        index_image_folder(write_zip(tmp_path / "loose.zip", files))


# ------------------------------------------------------------------------------- read_member


@pytest.mark.parametrize("kind", ["zip", "directory"])
def test_read_member_returns_the_stored_bytes(tmp_path: Path, kind: str) -> None:
    files = sample_images()
    source = write_zip(tmp_path / "d.zip", files) if kind == "zip" else write_tree(tmp_path, files)
    index = index_image_folder(source)
    member = index.members[4]
    assert read_member(index, member) == files[member]
    with pytest.raises(DataError, match=r"'Top/cat/missing\.png' not found"):
        read_member(index, "Top/cat/missing.png")


def test_read_member_stays_inside_a_directory_source(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    index = index_image_folder(write_tree(tmp_path / "tree", sample_images()))
    with pytest.raises(DataError, match="not a path inside"):
        read_member(index, "../secret.png")


# ----------------------------------------------------------------------------- cache_images


def test_cache_images_decodes_and_resizes_the_requested_rows(tmp_path: Path) -> None:
    index = index_image_folder(write_zip(tmp_path / "d.zip", sample_images()))
    rows = np.array([9, 0, 5])  # eel, cat, dog
    pixels = cache_images(index, rows, size=8, progress=True)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 8, 8, 3)
    for slot, colour in enumerate([BLUE, RED, GREEN]):
        assert np.abs(pixels[slot].astype(int) - colour).max() <= 4  # JPEG members are lossy
    assert cache_images(index, np.array([], dtype=np.int64), size=8).shape == (0, 8, 8, 3)


def test_cache_images_names_a_corrupt_member(tmp_path: Path) -> None:
    files = sample_images()
    files["Top/dog/dog_1.JPG"] = files["Top/dog/dog_1.JPG"][:40]
    index = index_image_folder(write_tree(tmp_path, files))
    with pytest.raises(DataError, match=r"invalid image 'Top/dog/dog_1\.JPG' in .*truncated"):
        cache_images(index, np.arange(len(index.members)), size=8)


def test_cache_images_checks_rows_and_size(tmp_path: Path) -> None:
    index = index_image_folder(write_zip(tmp_path / "d.zip", sample_images()))
    with pytest.raises(ValueError, match="rows must index"):
        cache_images(index, np.array([10]), size=8)
    with pytest.raises(ConfigError, match="image size"):
        cache_images(index, np.array([0]), size=0)


# ------------------------------------------------------------------------- stratified_split


def imbalanced_labels() -> np.ndarray:
    return np.repeat(np.array([0, 1, 2]), [100, 100, 10])


def test_split_is_disjoint_covers_everything_and_keeps_the_rare_class() -> None:
    labels = imbalanced_labels()
    parts = stratified_split(labels, test_fraction=0.2, val_fraction=0.1, seed=7)
    joined = np.concatenate([parts["train"], parts["val"], parts["test"]])
    assert sorted(joined.tolist()) == list(range(len(labels)))
    counts = {name: np.bincount(labels[rows], minlength=3).tolist() for name, rows in parts.items()}
    # per class: test = round(n * .2); val = round((n - test) * .1); train = the rest
    assert counts == {"test": [20, 20, 2], "val": [8, 8, 1], "train": [72, 72, 7]}
    assert all(rows.dtype == np.int64 for rows in parts.values())


def test_split_is_deterministic_and_shuffled() -> None:
    labels = imbalanced_labels()
    first = stratified_split(labels, 0.2, 0.1, seed=3)
    again = stratified_split(labels, 0.2, 0.1, seed=3)
    other = stratified_split(labels, 0.2, 0.1, seed=4)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["test"], other["test"])
    assert first["test"][first["test"] < 100].tolist() != list(range(20))  # not the first rows


def test_split_of_one_class_ignores_the_others() -> None:
    """Appending a new class must not reshuffle an existing one (seeded per class)."""
    base = np.repeat(np.array([0, 1]), [30, 30])
    grown = np.concatenate([base, np.full(15, 2)])
    before = stratified_split(base, 0.2, 0.2, seed=1)
    after = stratified_split(grown, 0.2, 0.2, seed=1)
    assert np.array_equal(before["test"], after["test"][after["test"] < 60])


@pytest.mark.parametrize(
    ("size", "expected"),
    [(1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (5, (3, 1, 1))],
)
def test_split_of_tiny_classes(size: int, expected: tuple[int, int, int]) -> None:
    parts = stratified_split(np.zeros(size, dtype=np.int64), 0.2, 0.1, seed=0)
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == expected


def test_split_never_empties_train_and_allows_zero_fractions() -> None:
    labels = np.zeros(10, dtype=np.int64)
    parts = stratified_split(labels, test_fraction=0.99, val_fraction=0.5, seed=0)
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (1, 0, 9)
    parts = stratified_split(labels, test_fraction=0.0, val_fraction=0.0, seed=0)
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (10, 0, 0)


@pytest.mark.parametrize(
    ("test_fraction", "val_fraction", "message"),
    [
        (-0.1, 0.1, "test_fraction must be in"),
        (1.0, 0.1, "test_fraction must be in"),
        (0.2, float("nan"), "val_fraction must be in"),
        (0.2, "a lot", "val_fraction must be a number"),
    ],
)
def test_split_rejects_bad_fractions(
    test_fraction: float, val_fraction: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        stratified_split(imbalanced_labels(), test_fraction, val_fraction, seed=0)


def test_split_rejects_a_negative_seed() -> None:
    with pytest.raises(ConfigError, match="seed"):
        stratified_split(imbalanced_labels(), 0.2, 0.1, seed=-1)


# ---------------------------------------------------------------------------- class_weights


def test_class_weights_are_inverse_frequency_with_mean_one() -> None:
    weights = class_weights(np.array([0, 1, 1, 1]), 2)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, [1.5, 0.5])  # 1/1 and 1/3, divided by their mean 2/3


def test_class_weights_give_an_absent_class_zero() -> None:
    labels = np.array([0, 0, 2, 2, 2, 2, 2, 2])
    weights = class_weights(labels, 3)
    np.testing.assert_allclose(weights, [1.5, 0.0, 0.5])  # 1/2, 1/6 over their mean 1/3
    counts = np.bincount(labels, minlength=3)
    assert counts[0] * weights[0] == pytest.approx(counts[2] * weights[2])  # equal total weight


def test_class_weights_reject_labels_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        class_weights(np.array([0, 3]), 3)


# ------------------------------------------------------------------------ the real datasets


def real_index(name: str) -> ImageIndex:
    path = REAL_IMAGES / name
    if not path.is_file():
        pytest.skip(f"real image dataset not present at {path}")
    return index_image_folder(path)


def decode_random_members(index: ImageIndex, count: int) -> list[Image.Image]:
    """One zip handle for all reads: read_member reopens the zip (21,688 entries) every call."""
    rows = np.random.default_rng(0).choice(len(index.members), size=count, replace=False)
    assert read_member(index, index.members[rows[0]])[:2] == b"\xff\xd8"  # JPEG magic
    with zipfile.ZipFile(index.source) as archive:
        return [decode_image(archive.read(index.members[row])) for row in rows]


def check_cache(index: ImageIndex, size: int) -> None:
    rows = np.random.default_rng(1).choice(len(index.members), size=20, replace=False)
    pixels = cache_images(index, rows, size=size)
    assert pixels.shape == (20, size, size, 3) and pixels.std() > 10  # real, varied content


def test_real_eurosat() -> None:
    index = real_index("eurosat_rgb.zip")
    assert index.classes == [
        "AnnualCrop",
        "Forest",
        "HerbaceousVegetation",
        "Highway",
        "Industrial",
        "Pasture",
        "PermanentCrop",
        "Residential",
        "River",
        "SeaLake",
    ]
    assert len(index.members) == 21_688
    assert all(member.startswith("EuroSAT_RGB/") for member in index.members)
    assert min(index.class_counts().values()) == index.class_counts()["Pasture"] == 1_610
    for image in decode_random_members(index, 20):
        assert (image.mode, image.size) == ("RGB", (64, 64))
    check_cache(index, 64)


def test_real_plantvillage() -> None:
    index = real_index("plantvillage_potato.zip")
    counts = index.class_counts()
    assert index.classes == ["Potato___Early_blight", "Potato___Late_blight", "Potato___healthy"]
    assert counts == {
        "Potato___Early_blight": 811,
        "Potato___Late_blight": 786,
        "Potato___healthy": 116,
    }
    assert min(counts, key=lambda name: counts[name]) == "Potato___healthy"
    for image in decode_random_members(index, 20):
        assert (image.mode, image.size) == ("RGB", (256, 256))
    check_cache(index, 32)
    parts = stratified_split(index.labels, 0.15, 0.15, seed=0)
    for rows in parts.values():
        assert set(index.labels[rows].tolist()) == {0, 1, 2}


def test_channel_statistics_match_a_float_computation_without_copying() -> None:
    from modelyard.projects.vision.datamodule import channel_statistics

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(50, 9, 7, 3), dtype=np.uint8)
    pixels[..., 2] = 17  # a constant channel: its std is floored at 1e-3
    scaled = pixels.reshape(-1, 3).astype(np.float64) / 255.0
    mean, std = channel_statistics(pixels, chunk=7)  # chunks that do not divide the images
    np.testing.assert_allclose(mean, scaled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std[:2], scaled.std(axis=0)[:2], rtol=1e-9)
    assert mean[2] == pytest.approx(17 / 255) and std[2] == 1e-3


# ------------------------------------------------------------------------------ file accounting


def test_every_file_is_accounted_for_and_clutter_is_filtered_by_rule(
    tmp_path: Path, dataset_files: dict[str, bytes]
) -> None:
    ledger = ReadLedger()
    index_image_folder(write_zip(tmp_path / "data.zip", dataset_files), ledger)

    report = ledger.to_json()["data.zip"]
    assert report["unit"] == "files"
    assert (report["read"], report["kept"], report["refused"]) == (15, 10, 0)
    assert report["filtered_by_rule"] == {
        "hidden or system file (.*, __MACOSX)": 4,
        "not an image file (notes, metadata)": 1,
    }


def test_images_in_unsupported_formats_are_refused_by_name(
    tmp_path: Path, dataset_files: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    # On main a .gif in a class folder was left out without a word.
    gif = encode(Image.new("RGB", (4, 4), RED), "GIF")
    files = {**dataset_files, "Top/cat/cat_9.gif": gif, "Top/eel/eel_9.webp": b"x"}
    source = write_tree(tmp_path / "tree", files)

    with pytest.raises(DataError, match=r"^tree: 2 of 15 files refused \(13.333%\)") as failure:
        index_image_folder(source)
    assert "unsupported_image_format 2 (files Top/cat/cat_9.gif, Top/eel/eel_9.webp)" in str(
        failure.value
    )

    ledger = ReadLedger(RefusalPolicy(on_refused="warn"))
    with caplog.at_level("WARNING"):
        index = index_image_folder(source, ledger)
    assert len(index.members) == 10
    assert "REFUSED ROWS tree: 2 of 15 files refused" in caplog.text
