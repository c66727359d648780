"""The decode budget: its arithmetic per image mode, refusals from the header alone, reduced-size
JPEG decoding, and proof (by measuring a real decode's peak memory) that the estimate bounds it."""

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelyard.core.bundle import load_bundle
from modelyard.core.errors import ConfigError
from modelyard.projects.vision.image_decoding import (
    ImageError,
    ImageLimits,
    decode_image,
    image_pixels,
    open_image,
    prepare_pixels,
)
from modelyard.projects.vision.image_folders import cache_images, index_image_folder
from modelyard.projects.vision.serving import VisionServing
from modelyard.serving.runtime import OnnxModel
from vision_fixtures import encode, flat_png, make_vision_bundle, photo

GENEROUS = ImageLimits(max_pixels=10**9, max_decoded_bytes=10**10)


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways
    return encode(Image.new("RGB", (30, 20), (9, 9, 9)), "JPEG", exif=exif)


def transparent_palette_png() -> bytes:
    return encode(Image.new("P", (30, 20)), "PNG", transparency=0)


PIXELS = 30 * 20
# (image, channels, bytes per sample, bytes a pixel in memory, working copies, total bytes)
MODES = {
    "16-bit RGBA PNG": (lambda: flat_png(30, 20, 16, 6), 4, 2, 8, 2, PIXELS * (8 + 8)),
    "16-bit grey PNG (I;16)": (lambda: flat_png(30, 20, 16, 0), 1, 2, 2, 2, PIXELS * (2 + 8)),
    "RGB PNG": (lambda: flat_png(30, 20, 8, 2), 3, 1, 4, 0, PIXELS * 4),
    "RGBA PNG": (lambda: flat_png(30, 20, 8, 6), 4, 1, 4, 2, PIXELS * (4 + 8)),
    "grey+alpha PNG": (lambda: flat_png(30, 20, 8, 4), 2, 1, 4, 3, PIXELS * (4 + 12)),
    "palette PNG": (lambda: flat_png(30, 20, 8, 3), 1, 1, 1, 1, PIXELS * (1 + 4)),
    "palette PNG with transparency": (transparent_palette_png, 1, 1, 1, 3, PIXELS * (1 + 12)),
    "CMYK JPEG": (
        lambda: encode(Image.new("CMYK", (30, 20)), "JPEG"),
        4,
        1,
        4,
        1,
        PIXELS * (4 + 4),
    ),
    "grey JPEG": (lambda: encode(Image.new("L", (30, 20)), "JPEG"), 1, 1, 1, 1, PIXELS * 5),
    "RGB JPEG turned by EXIF": (rotated_jpeg, 3, 1, 4, 1, PIXELS * (4 + 4)),
}


@pytest.mark.parametrize("mode", MODES)
def test_the_budget_counts_decoded_samples_and_the_conversion_to_rgb(mode: str) -> None:
    build, channels, sample_bytes, pixel_bytes, copies, total = MODES[mode]
    cost = open_image(build()).cost
    assert (cost.width * cost.height, cost.channels, cost.bytes_per_sample) == (
        PIXELS,
        channels,
        sample_bytes,
    )
    assert (cost.bytes_per_pixel, cost.working_copies) == (pixel_bytes, copies)
    assert cost.decoded_bytes == PIXELS * pixel_bytes
    assert cost.conversion_bytes == PIXELS * 4 * copies
    assert cost.total_bytes == total


def test_a_progressive_jpeg_also_counts_its_coefficient_buffer() -> None:
    """libjpeg keeps every coefficient of a progressive JPEG: 2 bytes a sample, full size, with
    chroma subsampled 4:2:0 (Pillow's default) 1.5 samples a pixel."""
    baseline, progressive = open_image(photo(400, 300)), open_image(photo(400, 300, True))
    assert baseline.cost.coefficient_bytes == 0
    assert progressive.cost.coefficient_bytes == 400 * 300 * 3 // 2 * 2
    # the coefficients stay full size when the pixels are decoded at 1/8
    assert open_image(photo(400, 300, True), size=16).cost.coefficient_bytes == 360_000


def test_over_budget_is_refused_from_the_header_naming_every_number() -> None:
    """6300 x 6300 16-bit RGBA is under max_pixels and 300 KB; header only: no pixels at all, so
    decoding would say 'truncated' and the budget message proves nothing was decoded."""
    header_only = flat_png(6300, 6300, 16, 6, with_pixels=False)
    limits = ImageLimits(owner="project plants")
    started = time.perf_counter()
    with pytest.raises(ImageError) as raised:
        decode_image(header_only, limits, size=128)
    assert time.perf_counter() - started < 0.25
    assert raised.value.reason == (
        "too large to decode: 6300x6300 pixels x 8 bytes (4 channels of 2 bytes) = "
        "317,520,000 bytes decoded + 317,520,000 to convert to RGB = 635,040,000 bytes, "
        "over the limit of 67,108,864 bytes (max_decoded_bytes of project plants)"
    )


def test_the_budget_is_inclusive() -> None:
    data = flat_png(100, 100, 8, 2)  # RGB: 4 bytes a pixel in memory, nothing to convert
    assert decode_image(data, ImageLimits(max_decoded_bytes=40_000)).size == (100, 100)
    with pytest.raises(ImageError, match=r"= 40,000 bytes, over the limit of 39,999 bytes"):
        decode_image(data, ImageLimits(max_decoded_bytes=39_999))
    with pytest.raises(ImageError, match=r"stored in 4\) = 40,000 bytes decoded"):
        decode_image(data, ImageLimits(max_decoded_bytes=39_999))


def test_large_jpegs_are_decoded_at_reduced_size_but_at_least_twice_the_input() -> None:
    data = photo(4000, 3000)
    assert open_image(data).cost.width == 4000  # no input size: full size
    for size, decoded in [(64, (500, 375)), (200, (1000, 750)), (600, (2000, 1500))]:
        assert open_image(data, size=size).cost.width == decoded[0]
        image = decode_image(data, size=size)
        assert image.size == decoded and min(image.size) >= 2 * size
    # the reduced decode is a faithful picture: within a few levels of the full one, resized
    full, reduced = image_pixels(data, 64, GENEROUS), image_pixels(data, 64)
    full_resized = prepare_pixels(decode_image(data, GENEROUS), 64)
    assert np.array_equal(full_resized, prepare_pixels(decode_image(data), 64))
    assert not np.array_equal(full, full_resized)  # the size hint is what changes the pixels
    assert np.abs(reduced.astype(int) - full_resized.astype(int)).mean() < 3


def test_jpegs_under_four_times_the_input_side_are_decoded_as_before() -> None:
    data = photo(250, 250)  # 250 // (2 x 64) = 1: no reduction
    assert np.array_equal(image_pixels(data, 64), prepare_pixels(decode_image(data), 64))


def test_a_12_megapixel_cmyk_photo_fits_only_because_it_is_decoded_at_reduced_size() -> None:
    cmyk = encode(Image.new("CMYK", (4000, 3000), (0, 200, 200, 0)), "JPEG", quality=80)
    with pytest.raises(ImageError, match="over the limit of 67,108,864 bytes"):
        open_image(cmyk)  # 12 Mpx x (4 + 4) bytes = 96 MB at full size
    opened = open_image(cmyk, size=64)
    assert opened.cost.total_bytes == 500 * 375 * (4 + 4)  # 1.5 MB: decoded at 1/8
    assert opened.original_size == (4000, 3000)
    assert image_pixels(cmyk, 64).shape == (64, 64, 3)


MEASURE = """
import json, sys
from pathlib import Path
from modelyard.projects.vision.image_decoding import ImageLimits, image_pixels, open_image

def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024

data = Path(sys.argv[1]).read_bytes()
limits = ImageLimits(max_pixels=10**9, max_decoded_bytes=10**10)
estimate = open_image(data, limits, 16).cost.total_bytes
before = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
image_pixels(data, 16, limits)
print(json.dumps({"estimate": estimate, "peak": status("VmHWM") - before}))
"""

MEASURED = {
    "16-bit RGBA PNG": lambda: flat_png(2000, 2000, 16, 6),
    "16-bit grey PNG": lambda: flat_png(2000, 2000, 16, 0),
    "RGB PNG": lambda: flat_png(2000, 2000, 8, 2),
    "RGBA PNG": lambda: flat_png(2000, 2000, 8, 6),
    "grey+alpha PNG": lambda: flat_png(2000, 2000, 8, 4),
    "palette PNG": lambda: flat_png(2000, 2000, 8, 3),
    "progressive JPEG": lambda: photo(2000, 1500, progressive=True),
}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("kind", MEASURED)
def test_the_estimate_bounds_the_measured_peak_of_a_real_decode(kind: str, tmp_path: Path) -> None:
    """A fresh process decodes one 3-4 Mpx image; its peak RSS growth stays under the estimate
    (plus 2 MB of decoder buffers) and is at least half of it (the estimate is not padding)."""
    path = tmp_path / "image"
    path.write_bytes(MEASURED[kind]())
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    numbers = json.loads(result.stdout)
    assert numbers["estimate"] > 5_000_000
    assert numbers["estimate"] / 2 <= numbers["peak"] <= numbers["estimate"] + 2_000_000, numbers


def test_serving_computes_the_pixels_training_cached_large_jpegs_included(
    tmp_path: Path,
) -> None:
    """Training's cache (cache_images) and the server's decode give identical model inputs for
    a 12-Mpx JPEG (reduced-size decode), a JPEG turned by EXIF and a 16-bit RGBA PNG."""
    size = 32
    images = {
        "a/photo.jpg": photo(4000, 3000),
        "a/sideways.jpg": rotated_jpeg(),
        "b/deep.png": flat_png(300, 200, 16, 6),
        "b/small.jpg": photo(100, 80),
    }
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as archive:
        for name, data in images.items():
            archive.writestr(name, data)
    index = index_image_folder(tmp_path / "set.zip")
    cached = cache_images(index, np.arange(len(index.members)), size)
    bundle = load_bundle(make_vision_bundle(tmp_path / "bundle", image_size=size).path)
    serving = VisionServing(bundle, OnnxModel(bundle.model_path), {})
    for row, member in enumerate(index.members):
        batch, features = serving.decode(images[member])
        expected = (cached[row].astype(np.float32) / 255 - 0.4) / 0.2
        np.testing.assert_allclose(batch[0], np.moveaxis(expected, -1, 0), atol=1e-6)
        if member == "a/photo.jpg":
            assert (features["width"], features["height"]) == (4000, 3000)  # as sent


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_concurrent_decodes": 0}, "max_concurrent_decodes must be a whole number >= 1"),
        ({"max_decode_wait_s": -1}, "max_decode_wait_s must be seconds >= 0"),
        ({"max_decoded_bytes": 0}, "max_decoded_bytes must be a positive whole number"),
    ],
)
def test_bad_image_serving_settings_are_config_errors(
    tmp_path: Path, settings: dict[str, int], message: str
) -> None:
    bundle = load_bundle(make_vision_bundle(tmp_path / "bundle").path)
    with pytest.raises(ConfigError, match=message):
        VisionServing(bundle, OnnxModel(bundle.model_path), settings)
