"""Turn untrusted image bytes into exactly the array a vision model was trained on.

Training (dataset caching) and the prediction server both go through this module, so a model sees
the same pixels in both places: same EXIF handling, same colour conversion, same resampling filter.
That is also why it depends on numpy and Pillow only (the server has no torch and no pandas).

Accepted formats are JPEG and PNG (:data:`ALLOWED_FORMATS`). WebP, BMP, GIF, TIFF and the rest are
rejected even though Pillow can open them: the server advertises JPEG and PNG, and every other
decoder accepted is attack surface and a source of training/serving skew (GIF palettes, animated
frames, TIFF's many bit depths) that no dataset here needs.
"""

import io
import struct
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from modelyard.core.errors import ConfigError, DataError

ALLOWED_FORMATS = ("JPEG", "PNG")
DEFAULT_MAX_PIXELS = 40_000_000
RESAMPLING = Image.Resampling.BILINEAR

# Cameras write multi-picture JPEGs (MPO); Pillow names them separately, but the first frame is a
# plain JPEG and that is what a user uploading a phone photo means.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
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


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode JPEG or PNG bytes into an upright RGB image, or raise :class:`ImageError`.

    The pixel limit is checked on the header before any pixel is decoded, so a tiny file that
    claims gigapixels costs nothing. Pillow's own decompression-bomb warning is turned into an
    error too. (The warning filter is process-global while it is set; concurrent calls at worst
    leave that one filter in place, which only makes Pillow stricter.)

    Truncated files are always detected by forcing a full decode here, unless some other code has
    set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``, which makes Pillow pad them with grey instead.
    """
    if max_pixels < 1:
        raise ConfigError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
    if not data:
        raise ImageError("empty data (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open(data)
        _check_format(image)
        _check_pixel_count(image, max_pixels)
        _load(image)
    return to_rgb(_apply_orientation(image))


def _open(data: bytes) -> Image.Image:
    """Read the header only (Pillow opens lazily); identify the format and the size."""
    try:
        return Image.open(io.BytesIO(data))
    except _BOMB_ERRORS as exc:
        raise ImageError(f"decompression bomb: {exc}") from None
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


def _check_pixel_count(image: Image.Image, max_pixels: int) -> None:
    """Compare the size the header claims with the limit, before decoding anything."""
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"truncated or corrupt header (size {width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"decompression bomb: {width}x{height} = {width * height:,} pixels "
            f"exceeds the limit of {max_pixels:,}"
        )


def _load(image: Image.Image) -> None:
    """Decode every pixel now, so that a cut or damaged file fails here and not later."""
    try:
        image.load()
    except _BOMB_ERRORS as exc:
        raise ImageError(f"decompression bomb: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"truncated or corrupt {image.format} data ({exc})") from None


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says: phones store photos sideways and tag them."""
    try:
        return ImageOps.exif_transpose(image)
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
        return _composite_on_white(image.convert("RGBA"))
    try:
        return image.convert("RGB")
    except ValueError:
        raise ImageError(f"unsupported colour mode {image.mode}") from None


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    grey = np.asarray(image).astype(np.int64)
    grey8 = (np.clip(grey, 0, 65535) >> 8).astype(np.uint8)
    return Image.fromarray(np.repeat(grey8[..., None], 3, axis=-1))


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def prepare_pixels(image: Image.Image, size: int) -> NDArray[np.uint8]:
    """Resize to ``size`` x ``size`` and return uint8 ``(size, size, 3)`` pixels.

    Non-square images are squashed, not cropped: training resizes the same way, and cropping would
    throw away the edge of a leaf or a field. Bilinear resampling is deterministic and the same in
    every Pillow build; it is the step whose output datasets are cached, so the float
    normalisation (:func:`normalise`) can run per batch.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"image size must be a positive whole number of pixels, got {size!r}")
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
