"""docs/deploy.md, "Body size": the worst-case request body per PNG pixel format, and the
table built from it, agree with real PNG encoders and with the yaml files'
maxRequestBodySize."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEPLOY_DOC = REPO / "docs" / "deploy.md"
#: Worst case (noise, which PNG cannot compress): body bytes per pixel and byte per pixel.
BODY_FACTOR = 1.34
FORMATS = {  # docs/deploy.md row -> (bytes per pixel, channels, dtype)
    "8-bit grey": (1, 1, np.uint8),
    "8-bit RGB": (3, 3, np.uint8),
    "8-bit RGBA, 16-bit grey + alpha": (4, 4, np.uint8),
    "16-bit RGB": (6, 3, np.uint16),
    "16-bit RGBA": (8, 4, np.uint16),
}


def _body_bytes(png: bytes) -> int:
    """The JSON body CVAT sends for this file."""
    return len(json.dumps({"image": base64.b64encode(png).decode("ascii")}))


def _noise_pngs(channels: int, dtype, height: int = 128, width: int = 2048) -> list[bytes]:
    rng = np.random.default_rng(channels)
    top = np.iinfo(dtype).max
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = rng.integers(0, top, shape, dtype=dtype, endpoint=True)
    encoded = [cv2.imencode(".png", pixels)[1].tobytes()]  # OpenCV writes 16-bit PNGs too
    if dtype == np.uint8:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")  # Pillow, default compression
        encoded.append(buffer.getvalue())
    return encoded


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_worst_case_body_per_pixel(name: str) -> None:
    bpp, channels, dtype = FORMATS[name]
    for png in _noise_pngs(channels, dtype):
        decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.dtype == dtype and decoded.size * decoded.itemsize == 128 * 2048 * bpp
        ratio = _body_bytes(png) / (128 * 2048 * bpp)
        assert 4 / 3 <= ratio <= BODY_FACTOR, (name, ratio)


def _deploy_doc_table() -> dict[str, list[str]]:
    text = DEPLOY_DOC.read_text()
    section = text.split("\n## Body size", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in FORMATS:
            rows[cells[0]] = cells[1:]
    return rows


def test_body_size_table_follows_the_formula_and_the_limit() -> None:
    limits = {yaml.safe_load((REPO / f).read_text())["spec"]["triggers"]["myHttpTrigger"]
              ["attributes"]["maxRequestBodySize"]
              for f in ("function.yaml", "function-gpu.yaml", "function-kube.yaml")}
    assert limits == {128 * 2**20}  # docs/deploy.md's "128 MiB (134.2 MB)"
    limit = limits.pop()
    rows = _deploy_doc_table()
    assert set(rows) == set(FORMATS)
    for name, (bpp, _, _) in FORMATS.items():
        cells = rows[name]
        assert int(cells[0]) == bpp
        assert cells[1] == f"{BODY_FACTOR * 5120 * 5120 * bpp / 1e6:.1f} MB", name
        assert cells[2] == f"{BODY_FACTOR * 100e6 * bpp / 1e6:.0f} MB", name
        largest = math.floor(limit / (BODY_FACTOR * bpp) / 1e5) / 10
        assert cells[3] == f"{largest:.1f} MP", name
        # The "largest frame" really fits, and 0.1 MP more may not.
        assert BODY_FACTOR * largest * 1e6 * bpp <= limit
        assert BODY_FACTOR * (largest + 0.1) * 1e6 * bpp > limit


def test_deploy_doc_says_which_formats_fit_at_the_pixel_limit_and_at_45_mp() -> None:
    """docs/deploy.md: at the yaml pixel limit (the decompression-bomb guard) no PNG format is sure
    to fit the body limit; at 45 MP (drone frames) only 8-bit grey is."""
    pixels = int(next(e["value"] for e in yaml.safe_load(
        (REPO / "function.yaml").read_text())["spec"]["env"]
        if e["name"] == "DEFECTCAM_MAX_PIXELS"))

    def fitting(frame_pixels: float) -> set[str]:
        return {name for name, (bpp, _, _) in FORMATS.items()
                if BODY_FACTOR * frame_pixels * bpp <= 128 * 2**20}

    assert fitting(pixels) == set() and fitting(8192 * 5460) == {"8-bit grey"}
    text = DEPLOY_DOC.read_text()
    assert re.search(rf"pixel limit \({pixels // 10**6} MP\) no PNG format is\s+sure to fit", text)
    assert re.search(r"45 MP frame is sure to\s+fit as 8-bit\s+grey only", text)
