"""``defectcam propose`` shows progress per image and per tile (the quick start takes minutes)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from defectcam.cli import main
from defectcam.core.model import INPUT_MULTIPLE
from defectcam.core.tiling import TileGrid
from tests.helpers import save_untrained


def test_progress_per_image_and_per_tile(tmp_path: Path, capsys) -> None:
    weights = save_untrained(tmp_path / "weights", ("crack", "rust"), tile_size=64,
                             tile_overlap=16, iterations=0)
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in (("first.png", (96, 150)), ("second.png", (70, 64))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    assert main(["propose", *paths, "--weights", str(weights), "--out", str(tmp_path / "out"),
                 "--iterations", "0", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    # One bar over the images, ending at 2/2 ...
    assert re.search(r"images: 100%.*\| 2/2 ", err), err
    # ... one bar per image over the tiles of every defect (the grid's tile count; the bar is
    # cleared when the image is done, and tqdm redraws at most 10 times a second) ...
    for name, (h, w) in (("first.png", (96, 150)), ("second.png", (70, 64))):
        tiles = 2 * len(TileGrid.build(h, w, 64, 16, multiple=INPUT_MULTIPLE))
        assert re.search(rf"{re.escape(name)}: +\d+%.*\| \d+/{tiles} .*tile/s", err), (name, err)
        # ... and a line per finished image with its time (on stdout, with the results).
        assert re.search(rf"{re.escape(name)}: {w}x{h}, \d+ proposals .* in \d+\.\d s",
                         captured.out), captured.out


def test_no_progress_is_quiet(tmp_path: Path, capsys) -> None:
    weights = save_untrained(tmp_path / "weights", ("crack",), tile_size=64, iterations=0)
    Image.new("RGB", (64, 64), (128, 128, 128)).save(tmp_path / "grey.png")
    assert main(["propose", str(tmp_path / "grey.png"), "--weights", str(weights), "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "100%" not in err and "tile" not in err
