"""Request images -> upright RGB uint8 arrays, exactly as CVAT displays the frame.

Everything a client can get wrong raises :class:`ImageInputError` with an HTTP status and a
message naming the problem; nothing here logs or prints. Why orientation and pixel modes are
handled as they are: :func:`decode_image`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default pixel limit (width x height), the decompression-bomb guard: above every camera
#: frame (drones 20-45 MP, 100 MP medium format, 150 MP aerial survey cameras such as
#: 14204 x 10652) and below Pillow's own refusal (2 x ``Image.MAX_IMAGE_PIXELS``, 179 MP).
DEFAULT_MAX_PIXELS = 160_000_000
#: The model's smallest side: the classifier works on 8-pixel cells. A thinner image is no
#: photo; :func:`decode_image` refuses it unless told otherwise (``min_side``), and the
#: service answers such a frame with no proposals.
MIN_SIDE = 8
#: File suffixes read as photos where a folder is given (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Frames between Pillow's warning size (89.5 MP) and DEFAULT_MAX_PIXELS are real photos: the
# explicit limit below is this module's decompression-bomb guard, so Pillow's warning is noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=-]+)*;base64,", re.IGNORECASE)
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageInputError(ValueError):
    """A client-side problem with the image; ``status`` is the HTTP status to answer;
    ``size``: (width, height) where the file's header told it."""

    def __init__(self, message: str, status: int = 400,
                 size: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.size = size


@dataclass
class DecodedImage:
    """``rgb``: (H, W, 3) uint8, upright; ``source_mode``/``format``: what the client sent;
    ``orientation``: the EXIF orientation that was applied (1 = none)."""

    rgb: np.ndarray
    source_mode: str
    format: str
    orientation: int

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def decode_base64(text: str) -> bytes:
    """Strict base64 (a ``data:image/...;base64,`` prefix and line breaks are tolerated)."""
    text = _DATA_URL.sub("", text.strip(), count=1)
    text = "".join(text.split())
    if not text:
        raise ImageInputError("'image' is empty; expected the base64 of a JPEG or PNG file")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageInputError(f"'image' is not valid base64 ({exc})") from exc
    if not data:
        raise ImageInputError("'image' decodes to zero bytes")
    return data


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, *, name: str | None = None,
                 limit_name: str | None = None, min_side: int = MIN_SIDE) -> DecodedImage:
    """Image file bytes -> upright RGB uint8, checking size before decoding any pixel.

    ``name``: the file the bytes come from (messages then speak of it, not of a request's
    base64 ``'image'``); ``limit_name``: what sets ``max_pixels`` (named in the 413 message);
    ``min_side``: the smallest side accepted (the faces pass 1: the service answers a
    decodable frame thinner than :data:`MIN_SIDE` with no proposals instead of an error).

    EXIF orientation: CVAT bakes it into the frames it stores (``cvat/apps/engine/
    media_extractors.py``: ``ZipChunkWriter.save_as_chunk`` and
    ``IChunkWriter._compress_image`` call ``PIL.ImageOps.exif_transpose`` before saving), so
    the frame CVAT sends is already upright and applying ``exif_transpose`` here is a no-op
    for it, while other clients sending the raw camera file get the coordinates CVAT would
    show. Modes follow CVAT's ``convert("RGB")`` (alpha dropped, palette and CMYK expanded,
    grey replicated); 16-bit and 32-bit grey are min-max scaled to 8 bits first because
    Pillow would clip them.

    Args:
        data: the image file's bytes.
        max_pixels: the largest width x height accepted (413 above).

    Returns:
        The upright RGB image and what was read from the file's header.

    Raises:
        ImageInputError: the bytes are no readable image, or its size is out of bounds.
    """
    what = name if name is not None else "'image'"
    expected = "a JPEG or PNG file" if name is not None else "the base64 of a JPEG or PNG file"
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _too_large_error(what, None, max_pixels, limit_name) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(
            f"{what} is not a readable image file ({len(data)} bytes; expected {expected})"
        ) from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large_error(what, (width, height), max_pixels, limit_name)
        if min(width, height) < max(min_side, 1):
            raise ImageInputError(
                f"{what} is {width}x{height} pixels; both sides must be at least "
                f"{max(min_side, 1)}", size=(width, height))
        source_mode, fmt = image.mode, image.format or "unknown"
        try:
            image.load()
        except Image.DecompressionBombError as exc:
            raise _too_large_error(what, (width, height), max_pixels, limit_name) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageInputError(
                f"{what}: image data is truncated or corrupt ({fmt} {width}x{height}: {exc})",
                size=(width, height)) from exc
        orientation = _orientation(image)
        rgb = pil_to_rgb(image)
    return DecodedImage(rgb=rgb, source_mode=source_mode, format=fmt, orientation=orientation)


def decode_base64_image(text: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                        limit_name: str | None = None) -> DecodedImage:
    return decode_image(decode_base64(text), max_pixels=max_pixels, limit_name=limit_name)


def _too_large_error(what: str, size: tuple[int, int] | None, max_pixels: int,
                     limit_name: str | None) -> ImageInputError:
    pixels = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size else "too many pixels"
    source = f" (set by {limit_name})" if limit_name else ""
    return ImageInputError(
        f"{what} is too large ({pixels}); the limit is {max_pixels} pixels{source}",
        status=413, size=size,
    )


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded PIL image -> upright (EXIF applied, as CVAT does) RGB uint8 array."""
    return _to_rgb_array(_exif_transpose(image))


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # broken EXIF is ignored, like an absent tag
        return 1


def _exif_transpose(image: Image.Image) -> Image.Image:
    """``ImageOps.exif_transpose`` (what CVAT applies); a broken EXIF block means "upright"."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF must not turn a good photo into an error
        return image


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in _WIDE_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
        image = Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) of an image shrunk by ``scale``: how training shrinks its photos
    (``defectcam.data.crops``), the predictor its frames and :func:`shrink_to` any image,
    rounded alike."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def working_factor(width: int, height: int, scale: float, max_side: int = 0) -> float:
    """The factor an image of this size is shrunk by for a classifier with this working scale
    and working longer side (0: none): ``scale``, lowered so that the longer side fits
    ``max_side``. Training's crops (``defectcam.data.crops``) and the predictor both ask here."""
    longer = max(width, height, 1)
    if max_side and longer * scale > max_side:
        return max_side / longer
    return scale


def shrink_to(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """``image`` shrunk (area averaging) so that its longer side is at most ``max_side``, and
    the factor used (1.0, the image itself, when it already fits or ``max_side`` is None)."""
    height, width = image.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return image, 1.0
    scale = max_side / max(height, width)
    return cv2.resize(image, scaled_size(width, height, scale),
                      interpolation=cv2.INTER_AREA), scale
