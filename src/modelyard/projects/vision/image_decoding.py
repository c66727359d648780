"""Turn untrusted image bytes into exactly the array a vision model was trained on.

Training (dataset caching) and the prediction server both go through this module, so a model sees
the same pixels in both places: same EXIF handling, same colour conversion, same resampling filter,
same reduced-size JPEG decoding. That is also why it depends on numpy and Pillow only (the server
has no torch and no pandas).

Accepted formats are JPEG and PNG (:data:`ALLOWED_FORMATS`). WebP, BMP, GIF, TIFF and the rest are
rejected even though Pillow can open them: the server advertises JPEG and PNG, and every other
decoder accepted is attack surface and a source of training/serving skew (GIF palettes, animated
frames, TIFF's many bit depths) that no dataset here needs.

Memory is budgeted before any pixel is decoded (:func:`open_image`), from the header alone:

* ``max_pixels`` bounds the size the header claims (a 1-bit PNG of 20000 x 20000 is 50 KB);
* ``max_decoded_bytes`` bounds what decoding will hold: width x height x channels x bytes per
  sample (16-bit PNG samples count 2 bytes; at least what Pillow stores, which pads any
  multi-channel pixel to 4 bytes), plus the full-size 8-bit images the conversion to RGB
  allocates at 4 bytes a pixel (none for RGB, 1 for grey, palette and CMYK, 2 for RGBA and
  16-bit grey, 3 for other transparent images, 1 more for an EXIF rotation), plus, for
  progressive JPEGs, libjpeg's whole-image coefficient buffer (2 bytes a sample). Measured peaks
  of real decodes lie between half the estimate and the estimate (``tests/test_image_budget.py``).

Pillow's own decompression-bomb check (a process-wide 89/179 Mpx) is bypassed by opening JPEG and
PNG with their plugins directly: the limits that apply, and that errors name, are the project's.

JPEGs are decoded at reduced size when the model's input is much smaller: ``draft`` makes
libjpeg scale the DCT by 1/2, 1/4 or 1/8, choosing the largest reduction that keeps both sides
at least twice the input side, then the usual bilinear resize runs. A 12-Mpx photo is then
decoded into 0.75 MB of pixels instead of 48 MB, and changes pixels only for JPEGs at least
four times the input side (none of the EuroSAT or PlantVillage files). Twice, not once: the
bilinear resize then still averages several decoded pixels into each input pixel, so the
result stays within a few levels of resizing the full decode. PNG has no such decoder option
(``reduce`` works on the fully decoded image and saves no memory), so the byte budget is what
protects against large PNGs.
"""

import ctypes
import ctypes.util
import io
import struct
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray
from PIL import (
    ExifTags,
    Image,
    ImageMode,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
)

from modelyard.core.errors import ConfigError, DataError

ALLOWED_FORMATS = ("JPEG", "PNG")
DEFAULT_MAX_PIXELS = 40_000_000
# Small enough that the default two concurrent decodes stay within 200 MB a worker, large enough
# for far more than the data needs: EuroSAT (64 x 64) and PlantVillage (256 x 256) images need
# 16 KB and 256 KB, a 12-Mpx RGB PNG 48 MB, a 12-Mpx phone JPEG decoded at reduced size 0.75 MB.
DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024
RESAMPLING = Image.Resampling.BILINEAR
# A JPEG is decoded at no less than this many times the model's input side (see the module text).
DRAFT_FACTOR = 2
# Pillow stores RGB, RGBA, LA and CMYK pixels in 4 bytes; one working copy costs this per pixel.
WORKING_BYTES_PER_PIXEL = 4

# Cameras write multi-picture JPEGs (MPO); Pillow names them separately, but the first frame is a
# plain JPEG and that is what a user uploading a phone photo means.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples a pixel
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_UPRIGHT = 1  # EXIF orientation: stored as displayed
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_MMAP_THRESHOLD_BYTES = 1024 * 1024
# What Pillow raises from a damaged stream: its decoders use OSError, its parsers SyntaxError,
# and struct/EOF/ValueError escape from header and EXIF parsing on short or garbled input.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


class ImageError(DataError):
    """An uploaded or stored image cannot be used; ``reason`` says why, in words for the user."""

    def __init__(self, reason: str) -> None:
        # Only the reason goes into args, so the error survives pickling (DataLoader workers).
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid image: {self.reason}"


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost; ``owner`` names whose limits they are in every refusal."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    owner: str = "the default"

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_decoded_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive whole number, got {value!r}")


@dataclass(frozen=True)
class DecodeCost:
    """The memory a decode will hold at its peak, worked out from the header alone."""

    width: int  # the size that will be decoded (after JPEG DCT scaling)
    height: int
    channels: int
    bytes_per_sample: int
    stored_bytes_per_pixel: int  # Pillow pads multi-channel pixels to 4 bytes
    working_copies: int  # full-size 8-bit images the conversion to RGB allocates
    coefficient_bytes: int = 0  # progressive JPEG: libjpeg keeps every DCT coefficient

    @property
    def bytes_per_pixel(self) -> int:
        return max(self.channels * self.bytes_per_sample, self.stored_bytes_per_pixel)

    @property
    def decoded_bytes(self) -> int:
        return self.width * self.height * self.bytes_per_pixel

    @property
    def conversion_bytes(self) -> int:
        return self.width * self.height * WORKING_BYTES_PER_PIXEL * self.working_copies

    @property
    def total_bytes(self) -> int:
        return self.decoded_bytes + self.conversion_bytes + self.coefficient_bytes

    def describe(self) -> str:
        """The arithmetic in words, for the refusal: every number the limit was compared with."""
        sample = "byte" if self.bytes_per_sample == 1 else "bytes"
        layout = f"{self.channels} channels of {self.bytes_per_sample} {sample}"
        if self.bytes_per_pixel > self.channels * self.bytes_per_sample:
            layout += f", stored in {self.bytes_per_pixel}"
        parts = [
            f"{self.width}x{self.height} pixels x {self.bytes_per_pixel} bytes ({layout}) = "
            f"{self.decoded_bytes:,} bytes decoded",
            f"{self.conversion_bytes:,} to convert to RGB",
        ]
        if self.coefficient_bytes:
            parts.append(f"{self.coefficient_bytes:,} of progressive JPEG coefficients")
        return f"{' + '.join(parts)} = {self.total_bytes:,} bytes"


@dataclass(frozen=True)
class OpenedImage:
    """A checked header: the image (nothing decoded yet), its size as sent, and its cost."""

    image: Image.Image
    original_size: tuple[int, int]
    cost: DecodeCost


def decode_image(
    data: bytes, limits: ImageLimits | None = None, size: int | None = None
) -> Image.Image:
    """Decode JPEG or PNG bytes into an upright RGB image, or raise :class:`ImageError`.

    ``size`` is the model's input side: JPEGs much larger than it are decoded at reduced size
    (see the module text). Truncated files are always detected by forcing a full decode here,
    unless some other code has set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``.
    """
    return finish_decode(open_image(data, limits, size))


def image_pixels(data: bytes, size: int, limits: ImageLimits | None = None) -> NDArray[np.uint8]:
    """Bytes -> uint8 ``(size, size, 3)``: what training caches and what the server computes."""
    return opened_pixels(open_image(data, limits, size), size)


def opened_pixels(opened: "OpenedImage", size: int) -> NDArray[np.uint8]:
    """A checked header -> uint8 ``(size, size, 3)`` pixels; the large images are closed as soon
    as the small result exists, so their memory does not wait for the garbage collector (or for
    a server thread's next task, which is when its last arguments are dropped)."""
    image = finish_decode(opened)
    try:
        return prepare_pixels(image, size)
    finally:
        image.close()
        opened.image.close()


def open_image(
    data: bytes, limits: ImageLimits | None = None, size: int | None = None
) -> OpenedImage:
    """Read and check the header only: format, pixel count and decode budget; no pixel decoded.

    Costs milliseconds whatever the header claims, so refusals are immediate.
    """
    limits = limits or ImageLimits()
    if size is not None:
        check_image_size(size)
    if not data:
        raise ImageError("empty data (0 bytes)")
    image = _open(data, limits)
    _check_format(image)
    original_size = image.size
    _check_pixel_count(image, limits)
    if size is not None and image.format != "PNG":
        image.draft(None, (DRAFT_FACTOR * size, DRAFT_FACTOR * size))
    cost = decode_cost(image, data, original_size)
    if cost.total_bytes > limits.max_decoded_bytes:
        raise ImageError(
            f"too large to decode: {cost.describe()}, over the limit of "
            f"{limits.max_decoded_bytes:,} bytes (max_decoded_bytes of {limits.owner})"
        )
    return OpenedImage(image, original_size, cost)


def finish_decode(opened: OpenedImage) -> Image.Image:
    """Decode the pixels of a checked header, turn them upright and convert them to RGB."""
    image = opened.image
    _load(image)
    _apply_orientation(image)
    return to_rgb(image)


def decode_cost(
    image: Image.Image, data: bytes, original_size: tuple[int, int] | None = None
) -> DecodeCost:
    """The peak memory of decoding ``image`` (opened from ``data``) to RGB, from its header."""
    width, height = image.size
    if image.format == "PNG":
        channels, bytes_per_sample = _png_samples(data)
    else:  # JPEG: 8-bit samples, one per band (L, RGB from YCbCr, CMYK)
        channels, bytes_per_sample = len(image.getbands()), 1
    copies = _working_copies(image) + (_orientation(image) != _UPRIGHT)
    coefficients = 0
    if image.format != "PNG" and image.info.get("progressive"):
        full_width, full_height = original_size or image.size
        coefficients = int(full_width * full_height * _jpeg_samples_per_pixel(image) * 2)
    stored = _stored_bytes_per_pixel(image.mode)
    return DecodeCost(width, height, channels, bytes_per_sample, stored, copies, coefficients)


def _stored_bytes_per_pixel(mode: str) -> int:
    """Bytes a pixel of ``mode`` takes in Pillow's memory: 4 for any multi-band mode."""
    description = ImageMode.getmode(mode)
    if len(description.bands) > 1:
        return WORKING_BYTES_PER_PIXEL
    return int(np.dtype(description.typestr).itemsize)


def _png_samples(data: bytes) -> tuple[int, int]:
    """(channels, bytes per sample) from the IHDR chunk, which PNG requires to come first."""
    if data[12:16] != b"IHDR":
        raise ImageError("truncated or corrupt PNG header (IHDR is not the first chunk)")
    bit_depth, colour_type = data[24], data[25]
    return _PNG_CHANNELS.get(colour_type, 4), 2 if bit_depth == 16 else 1


def _jpeg_samples_per_pixel(image: Image.Image) -> float:
    """Samples a pixel across components, after chroma subsampling (4:2:0 RGB: 1.5)."""
    layers = getattr(image, "layer", None) or []
    if not layers:
        return float(len(image.getbands()))
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    return float(sum(layer[1] * layer[2] for layer in layers)) / (h_max * v_max)


def _working_copies(image: Image.Image) -> int:
    """Full-size 8-bit images :func:`to_rgb` allocates for this mode (its branches, in order)."""
    if image.mode == "RGB":
        return 0
    if image.mode in _WIDE_GREY_MODES:
        return 2  # the numpy copy and shift, then the RGB image
    if image.mode == "RGBA":
        return 2  # the white background and the composite (then RGB, once the white is freed)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return 3  # RGBA first, then as above
    return 1


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation the header already holds (PNG: only an ``eXIf`` before the pixels;
    asking Pillow for a PNG's EXIF otherwise decodes the whole image)."""
    if image.format == "PNG" and "exif" not in image.info:
        return _UPRIGHT
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, _UPRIGHT))
    except (*_DECODE_ERRORS, TypeError):
        return _UPRIGHT


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """Read the header only (Pillow opens lazily); identify the format and the size.

    JPEG and PNG are opened with their plugins directly, which skips Pillow's process-wide bomb
    check: the project's own limits are checked next, and they are the ones a refusal names.
    (Only a multi-picture JPEG still meets Pillow's check, which is then reported with the
    project's limit too. Its warning is silenced while the header is read: the warning filter
    is process-global while set, and concurrent calls at worst leave that one filter in place.)
    """
    stream = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if data.startswith(_PNG_SIGNATURE):
                return PngImagePlugin.PngImageFile(stream)
            if data.startswith(_JPEG_SIGNATURE):
                return JpegImagePlugin.jpeg_factory(stream)
            return Image.open(stream)
    except Image.DecompressionBombError:
        raise ImageError(
            f"decompression bomb: more pixels than the limit of {limits.max_pixels:,} "
            f"(max_pixels of {limits.owner})"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"not an image ({len(data)} bytes in no recognised image format; "
            f"expected {' or '.join(ALLOWED_FORMATS)})"
        ) from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"truncated or corrupt header ({exc})") from None


def _check_format(image: Image.Image) -> None:
    """Reject anything but the allowed formats, naming what was sent."""
    found = image.format or "unknown"
    if _FORMAT_ALIASES.get(found, found) not in ALLOWED_FORMATS:
        raise ImageError(f"unsupported format {found} (accepted: {', '.join(ALLOWED_FORMATS)})")


def _check_pixel_count(image: Image.Image, limits: ImageLimits) -> None:
    """Compare the size the header claims with the limit, before decoding anything."""
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"truncated or corrupt header (size {width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageError(
            f"decompression bomb: {width}x{height} = {width * height:,} pixels "
            f"exceeds the limit of {limits.max_pixels:,} (max_pixels of {limits.owner})"
        )


def _load(image: Image.Image) -> None:
    """Decode every pixel now, so that a cut or damaged file fails here and not later."""
    try:
        image.load()
    except _BOMB_ERRORS as exc:
        raise ImageError(f"decompression bomb: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"truncated or corrupt {image.format} data ({exc})") from None


def _apply_orientation(image: Image.Image) -> None:
    """Rotate/flip as the EXIF orientation tag says: phones store photos sideways and tag them.

    In place: an upright image is then not copied (Pillow's default returns a full copy).
    """
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except _DECODE_ERRORS as exc:
        raise ImageError(f"truncated or corrupt EXIF metadata ({exc})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any colour mode to 8-bit RGB, the only layout the models take.

    Transparent pixels are composited on white (what a viewer shows, and what a photographed leaf
    on a blank background looks like) rather than left as whatever colour hides under alpha 0.
    16-bit greyscale is scaled down by 256; Pillow's own conversion would clip it to white.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_GREY_MODES:
        return _wide_grey_to_rgb(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _composite_on_white(image if image.mode == "RGBA" else image.convert("RGBA"))
    try:
        return image.convert("RGB")
    except ValueError:
        raise ImageError(f"unsupported colour mode {image.mode}") from None


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    """Keep the high byte of each sample; 16-bit arrays are shifted without a wider copy."""
    grey = np.asarray(image)
    if grey.dtype != np.uint16:  # 32-bit "I": values outside 16 bits are clipped first
        grey = np.clip(grey, 0, 65535)
    grey8 = (grey >> 8).astype(np.uint8)
    del grey
    return Image.fromarray(grey8).convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    composed = Image.alpha_composite(white, rgba)
    del white  # freed before the conversion allocates the RGB copy
    return composed.convert("RGB")


def return_large_blocks_to_the_os() -> bool:
    """Make glibc give every allocation of 1 MiB or more back to the OS as soon as it is freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which
    blocks that size come from per-thread heaps and stay resident once freed: on a server whose
    worker threads decode large images, four parallel 160 MB decodes left 2.6 GB resident, and
    ``malloc_trim`` after each decode still left 30-160 MB (it cannot shrink thread heaps while
    another decode runs). A fixed threshold disables that adjustment: Pillow's 16 MiB image
    blocks and large numpy arrays are then mapped and unmapped, and resident memory returns to
    idle after every decode. Process-wide, so the server calls it once; returns whether it took
    effect (only with glibc on Linux; elsewhere a no-op).
    """
    mallopt = _glibc_function("mallopt")
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1)


def _glibc_function(name: str) -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):  # musl and other C libraries lack glibc's tuning calls
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int]
    function.restype = ctypes.c_int
    return cast("Callable[[int, int], int]", function)


def check_image_size(size: object) -> None:
    """A model input side must be a positive whole number (``True`` is not one)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"image size must be a positive whole number of pixels, got {size!r}")


def prepare_pixels(image: Image.Image, size: int) -> NDArray[np.uint8]:
    """Resize to ``size`` x ``size`` and return uint8 ``(size, size, 3)`` pixels.

    Non-square images are squashed, not cropped: training resizes the same way, and cropping would
    throw away the edge of a leaf or a field. Bilinear resampling is deterministic and the same in
    every Pillow build; it is the step whose output datasets are cached, so the float
    normalisation (:func:`normalise`) can run per batch.
    """
    check_image_size(size)
    resized = to_rgb(image).resize((size, size), RESAMPLING)
    return np.array(resized, dtype=np.uint8)


def normalise(
    pixels: NDArray[np.uint8], mean: Sequence[float], std: Sequence[float]
) -> NDArray[np.float32]:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` as ``(x / 255 - mean) / std``.

    Channel-first because that is what the convolution layers (and the exported ONNX graph) take;
    ``mean``/``std`` are per channel on the 0-1 scale, as ImageNet statistics are published.
    """
    if pixels.dtype != np.uint8 or pixels.ndim < 3 or pixels.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 pixels shaped (..., H, W, 3), got {pixels.dtype} {pixels.shape}"
        )
    centre = _channel_values(mean, "mean")
    scale = _channel_values(std, "std")
    if np.any(scale <= 0):
        raise ConfigError(f"std must be positive for every channel, got {list(std)}")
    values = pixels.astype(np.float32) / np.float32(255.0)
    values = (values - centre) / scale
    return np.ascontiguousarray(np.moveaxis(values, -1, -3))


def _channel_values(values: Sequence[float], name: str) -> NDArray[np.float32]:
    problem = ConfigError(f"{name} must be 3 finite numbers (R, G, B), got {values!r}")
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise problem from None
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        raise problem
    return array


def to_model_input(
    image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]
) -> NDArray[np.float32]:
    """One decoded image -> the float32 ``(3, size, size)`` tensor the model takes."""
    return normalise(prepare_pixels(image, size), mean, std)
