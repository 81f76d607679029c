"""Tiling bookkeeping: where tiles go, how their maps blend back, who owns which pixel.

Tiles overlap by ``overlap`` pixels. Each pixel belongs to the tile whose core (the part
nearest its centre) contains it; across each core boundary a linear ramp of ``feather``
pixels blends the two tiles. With ``overlap / 2 - feather / 2`` at least the network's
receptive-field radius (about 56 px), every stitched pixel was computed at least that far
from any tile edge, so a plain Grad-CAM map stitched from tiles equals the whole-image map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: How an image is cut: ``balanced`` (the tile count of fixed tiles, each as small as that
#: count allows; ``TileGrid.build``) or ``fixed`` (every tile of the weights' tile size).
TILINGS = ("balanced", "fixed")


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis; the last tile ends exactly at the border."""
    if length <= tile:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def balanced_tile_side(length: int, tile: int, overlap: int, multiple: int) -> int:
    """The smallest side (a multiple of ``multiple``, at most ``tile``) that covers ``length``
    with as many tiles as ``tile`` needs, at least ``overlap`` apart: the tiles share the
    length evenly instead of the last one lying mostly inside its neighbour (1600 px, 512 px
    tiles, overlap 128: 4 x 496 instead of 4 x 512 with the last tile 384 px inside the
    third; 600 px: 2 x 368 instead of 2 x 512)."""
    count = len(tile_starts(length, tile, overlap))
    side = -(-(length + (count - 1) * overlap) // count)
    return min(round_up(side, multiple), tile)


def axis_weights(length: int, starts: list[int], tile: int, feather: int) -> list[np.ndarray]:
    """Per-tile 1-D blending weights (each of size ``tile``) that sum to 1 at every pixel."""
    bounds = [0] + [(starts[i] + tile + starts[i + 1]) // 2 for i in range(len(starts) - 1)]
    bounds.append(length)
    half = feather / 2.0
    coords = np.arange(length, dtype=np.float64) + 0.5
    weights = []
    for i, start in enumerate(starts):
        lo, hi = bounds[i], bounds[i + 1]
        w = np.ones(length)
        if i > 0:  # ramp in across the left boundary
            w *= np.clip((coords - (lo - half)) / max(feather, 1e-9), 0, 1) if feather else (
                coords >= lo
            )
        if i < len(starts) - 1:  # ramp out across the right boundary
            w *= np.clip(((hi + half) - coords) / max(feather, 1e-9), 0, 1) if feather else (
                coords < hi
            )
        full = np.zeros(tile)
        seg = w[start : start + tile]
        full[: len(seg)] = seg
        weights.append(full.astype(np.float32))
    return weights


@dataclass
class TileGrid:
    """Tiles of one image: all of size (tile_h, tile_w); the image is padded when smaller.

    ``multiple``: the model's input sides must be multiples of it (the classifier's
    ``INPUT_MULTIPLE``); a tile shrunk to a small image is rounded up to it. ``balanced``:
    the tile count of ``tile``-sized tiles, each as small as that count allows
    (:func:`balanced_tile_side`; fewer pixels per pass, never less overlap).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    ys: list[int]
    xs: list[int]
    wy: list[np.ndarray]
    wx: list[np.ndarray]

    @classmethod
    def build(cls, height: int, width: int, tile: int, overlap: int, *, multiple: int,
              feather: int = 16, balanced: bool = False) -> TileGrid:
        if multiple < 1 or tile % multiple:
            raise ValueError(f"tile size {tile} must be a multiple of {multiple}")
        if not 0 <= feather <= overlap:
            raise ValueError(f"feather {feather} must be within [0, overlap={overlap}]")
        tile_h = min(tile, round_up(height, multiple))
        tile_w = min(tile, round_up(width, multiple))
        if balanced:
            tile_h = balanced_tile_side(height, tile_h, overlap, multiple)
            tile_w = balanced_tile_side(width, tile_w, overlap, multiple)
        ys, xs = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
        return cls(
            height, width, tile_h, tile_w, ys, xs,
            axis_weights(height, ys, tile_h, feather), axis_weights(width, xs, tile_w, feather),
        )

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def tiles(self) -> list[tuple[int, int]]:
        """(row, column) indices of every tile, row-major."""
        return [(i, j) for i in range(len(self.ys)) for j in range(len(self.xs))]

    def window(self, i: int, j: int) -> tuple[slice, slice]:
        """The image region a tile covers (may be smaller than the tile for padded images)."""
        y, x = self.ys[i], self.xs[j]
        return (
            slice(y, min(y + self.tile_h, self.height)),
            slice(x, min(x + self.tile_w, self.width)),
        )

    def owner(self, y: int, x: int) -> tuple[int, int]:
        """The tile whose blending weight is largest at pixel (y, x)."""
        i = max(range(len(self.ys)), key=lambda k: self._axis_weight(self.wy, self.ys, k, y))
        j = max(range(len(self.xs)), key=lambda k: self._axis_weight(self.wx, self.xs, k, x))
        return i, j

    @staticmethod
    def _axis_weight(weights: list[np.ndarray], starts: list[int], k: int, p: int) -> float:
        offset = p - starts[k]
        return float(weights[k][offset]) if 0 <= offset < len(weights[k]) else -1.0


def extract_tile(image: np.ndarray, grid: TileGrid, i: int, j: int) -> np.ndarray:
    """One (tile_h, tile_w, C) crop of the image, padded where the image is smaller.

    Padded pixels get :data:`PAD_FILL`, the ImageNet mean colour, so that they normalise to
    (almost) zero: the network sees "nothing" there rather than black.
    """
    ys, xs = grid.window(i, j)
    crop = image[ys, xs]
    if crop.shape[0] == grid.tile_h and crop.shape[1] == grid.tile_w:
        return crop
    out = np.empty((grid.tile_h, grid.tile_w, image.shape[2]), dtype=image.dtype)
    out[...] = PAD_FILL
    out[: crop.shape[0], : crop.shape[1]] = crop
    return out


#: uint8 fill for padded pixels: ImageNet mean colour, which normalises to (almost) zero.
PAD_FILL = np.array([124, 116, 104], dtype=np.uint8)


def stitch_tiles(
    target: np.ndarray, grid: TileGrid, i: int, j: int, tile_map: np.ndarray
) -> None:
    """Add one tile's map into ``target`` (H, W) with its blending weights, in place."""
    ys, xs = grid.window(i, j)
    h, w = ys.stop - ys.start, xs.stop - xs.start
    weight = grid.wy[i][:h, None] * grid.wx[j][None, :w]
    target[ys, xs] += tile_map[:h, :w] * weight
