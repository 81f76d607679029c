"""Request images -> upright RGB uint8: modes, EXIF orientation and every malformed input."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from defectcam.core.image_io import (
    ImageInputError,
    decode_base64,
    decode_base64_image,
    decode_image,
)


def _bytes(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` and has no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _gradient(width: int = 40, height: int = 24) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 6 % 256, ys * 10 % 256, (xs + ys) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "PNG"),
        ("RGB", "JPEG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("1", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
    ],
)
def test_every_mode_becomes_rgb_uint8(mode: str, fmt: str) -> None:
    source = Image.fromarray(_gradient())
    if mode in ("I;16", "I"):
        wide = (np.asarray(source.convert("L"), dtype=np.uint16) * 200).astype(np.uint16)
        image = Image.fromarray(wide.astype(np.int32 if mode == "I" else np.uint16))
        image = image.convert("I") if mode == "I" else image
    else:
        image = source.convert(mode)
    decoded = decode_image(_bytes(image, fmt))
    assert decoded.rgb.shape == (24, 40, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.rgb.flags.c_contiguous
    assert decoded.source_mode == image.mode
    if mode in ("I;16", "I"):  # min-max scaled, not clipped to white
        assert decoded.rgb.min() == 0 and decoded.rgb.max() == 255


def test_rgba_drops_alpha_like_cvat() -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red
    decoded = decode_image(_bytes(Image.fromarray(rgba)))
    assert (decoded.rgb[..., 0] == 200).all()


@pytest.mark.parametrize("orientation", [3, 6, 8, 5])
def test_exif_orientation_is_applied_like_cvat(orientation: int) -> None:
    """CVAT stores frames through ImageOps.exif_transpose; coordinates follow that frame."""
    pixels = np.zeros((24, 40, 3), np.uint8)
    pixels[2:6, 3:9] = 255  # a marker near the stored top-left corner
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    data = _bytes(image, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image(data)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert decoded.orientation == orientation
    assert decoded.rgb.shape == expected.shape
    assert np.array_equal(decoded.rgb, expected)
    # CVAT's image_size_within_orientation: width and height swap for orientations 5..8.
    assert (decoded.width, decoded.height) == ((24, 40) if orientation > 4 else (40, 24))


def test_data_url_prefix_and_line_breaks_are_accepted() -> None:
    data = _bytes(Image.fromarray(_gradient()))
    text = base64.encodebytes(data).decode()  # 76-character lines
    decoded = decode_base64_image("data:image/png;base64," + text)
    assert decoded.rgb.shape == (24, 40, 3)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("not base64!!", "base64"),
        ("abc", "base64"),
        ("=" * 4, "base64"),
    ],
)
def test_bad_base64(text: str, needle: str) -> None:
    with pytest.raises(ImageInputError) as info:
        decode_base64(text)
    assert info.value.status == 400 and needle in info.value.message


def test_bytes_that_are_no_image() -> None:
    with pytest.raises(ImageInputError, match="not a readable image") as info:
        decode_image(b"%PDF-1.4 definitely not a picture")
    assert info.value.status == 400


def test_truncated_jpeg() -> None:
    data = _bytes(Image.fromarray(_gradient(200, 150)), "JPEG", quality=90)
    with pytest.raises(ImageInputError, match="truncated") as info:
        decode_image(data[: len(data) // 2])
    assert info.value.status == 400


@pytest.mark.parametrize(("width", "height"), [(0, 0), (1, 50), (50, 1), (7, 100)])
def test_empty_and_degenerate_sizes(width: int, height: int) -> None:
    if width and height:
        data = _bytes(Image.new("RGB", (width, height), (9, 9, 9)))
    else:
        data = _png_header_only(width, height)
    with pytest.raises(ImageInputError) as info:
        decode_image(data)
    assert info.value.status == 400


def test_pixel_limit_is_checked_before_decoding() -> None:
    # Header only: decoding would fail, so a 413 proves the size was checked first.
    with pytest.raises(ImageInputError, match="too large") as info:
        decode_image(_png_header_only(8_000, 8_000), max_pixels=50_000_000)
    assert info.value.status == 413
    with pytest.raises(ImageInputError, match=r"limit is 9999 pixels \(set by --max-pixels\)"):
        decode_image(_bytes(Image.new("RGB", (100, 100))), max_pixels=9_999,
                     limit_name="--max-pixels")


def test_pillow_bomb_guard_maps_to_413() -> None:
    # Beyond Pillow's own hard limit (2 x MAX_IMAGE_PIXELS) Image.open itself refuses.
    with pytest.raises(ImageInputError) as info:
        decode_image(_png_header_only(30_000, 30_000), max_pixels=10**12)
    assert info.value.status == 413


def test_messages_speak_of_the_file_or_of_the_base64() -> None:
    """The command line names the file; a request's 'image' is base64 (issue 14.5)."""
    text = b"just some notes, renamed to photo.jpg"
    with pytest.raises(ImageInputError) as from_file:
        decode_image(text, name="photo.jpg")
    assert from_file.value.message.startswith("photo.jpg is not a readable image file")
    assert "base64" not in from_file.value.message
    assert "expected a JPEG or PNG file" in from_file.value.message
    with pytest.raises(ImageInputError) as from_request:
        decode_image(text)
    assert from_request.value.message.startswith("'image' is not a readable image file")
    assert "expected the base64 of a JPEG or PNG file" in from_request.value.message
