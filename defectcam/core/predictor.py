"""Image -> (working size) -> tiles -> one stitched, normalised defect map (per classifier).

Memory is bounded by the tile batch: tiles are cut from the uint8 image and normalised on the
device one batch at a time; the only full-size buffers are the uint8 image and one float32 map
(plus, at a working scale below 1, the shrunk image and its map, shared by the defects of a
request through :class:`ImageScales`).

What makes it fast on a CPU (BENCHMARKS.md, "Request"): bf16 autocast where the CPU has native
bf16 (``precision="auto"``), the weights' working scale (large blobs such as rust need not run
at full resolution), balanced tiles (the tile count of fixed tiles, each as small as that
count allows) and, where the weights ask for it, screening inside the climb.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from defectcam.core.advcam import AdvCAMSettings, advcam_climb
from defectcam.core.cpu_memory import keep_large_allocations_in_heap
from defectcam.core.device import PRECISION_CHOICES, resolve_device, resolve_precision
from defectcam.core.image_io import scaled_size, working_factor
from defectcam.core.model import INPUT_MULTIPLE, DefectClassifier, fold_batchnorm
from defectcam.core.tiling import TILINGS, TileGrid, extract_tile, stitch_tiles
from defectcam.core.transforms import normalize_batch
from defectcam.core.weights import WeightsMetadata, check_working_scale

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_working_scale(text: str, setting: str = "--working-scale"
                        ) -> float | dict[str, float]:
    """``"0.5"`` (every defect) or ``"rust=0.5,spalling=0.5"`` (those defects), as the
    command line and the benchmarks write a working-scale override."""
    try:
        if "=" not in text:
            return check_working_scale(float(text), setting)
        scales = {}
        for part in text.split(","):
            label, _, value = part.partition("=")
            scales[label.strip()] = check_working_scale(float(value), setting)
        return scales
    except ValueError:
        raise ValueError(f"{setting} {text!r}: expected a factor in (0, 1] or label=factor "
                         "pairs such as rust=0.5,spalling=0.5") from None


def working_size(height: int, width: int, scale: float, tile_size: int,
                 max_side: int = 0) -> tuple[int, int]:
    """(height, width) a classifier with this working scale, working longer side (0: none)
    and tile size sees an image at.

    Shrunk by ``scale`` and further until the longer side fits ``max_side``
    (:func:`defectcam.core.image_io.working_factor`, rounded as training's crops are,
    ``defectcam.data.crops``), but never below one tile on the shorter side: an image that
    small costs a tile or two anyway, and shrinking it further would only lose detail.
    """
    scale = working_factor(width, height, scale, max_side)
    scale = max(scale, min(1.0, tile_size / max(1, min(height, width))))
    if scale >= 1.0:
        return height, width
    work_w, work_h = scaled_size(width, height, scale)
    return work_h, work_w


class ImageScales:
    """One request's image and its copies at the working sizes asked for, each made once:
    the defects of a request that share a working size share its copy (area averaging, as
    training shrinks its photos)."""

    def __init__(self, image: np.ndarray) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} "
                             f"{image.dtype}")
        self.image = image
        self._copies: dict[tuple[int, int], np.ndarray] = {}

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    def at(self, size: tuple[int, int]) -> np.ndarray:
        """The image at (height, width) ``size``."""
        if size == self.shape:
            return self.image
        if size not in self._copies:
            self._copies[size] = cv2.resize(self.image, (size[1], size[0]),
                                            interpolation=cv2.INTER_AREA)
        return self._copies[size]


def as_scales(image: np.ndarray | ImageScales) -> ImageScales:
    return image if isinstance(image, ImageScales) else ImageScales(image)


@dataclass
class DefectMap:
    """The normalised map of one defect over one image, and what made it.

    ``cam_map`` (H, W) float32 in [0, 1], always at the image's own size;
    ``tile_probability`` (rows, cols) the classifier's probability per tile; ``climbed``
    (rows, cols) whether the tile was climbed (screening skips negative tiles);
    ``normaliser`` the divisor that put the map in [0, 1]. ``grid`` tiles the image at its
    working size ``working_size`` ((height, width); ``None``: the image's own size).
    """

    label: str
    cam_map: np.ndarray
    grid: TileGrid
    tile_probability: np.ndarray
    climbed: np.ndarray
    normaliser: float
    iterations: int
    seconds: float
    timings: dict = field(default_factory=dict)
    working_size: tuple[int, int] | None = None

    def probability_at(self, y: int, x: int) -> float:
        """The classifier's probability for the tile that owns pixel (y, x) of the image."""
        height, width = self.cam_map.shape
        work_h, work_w = self.working_size or (height, width)
        if (work_h, work_w) != (height, width):  # the grid is in working-size pixels
            y = min(int((y + 0.5) * work_h / height), work_h - 1)
            x = min(int((x + 0.5) * work_w / width), work_w - 1)
        i, j = self.grid.owner(y, x)
        return float(self.tile_probability[i, j])


def map_normaliser(raw: np.ndarray, cam_scale: float, iterations: int) -> float:
    """The divisor that puts a defect's raw stitched map (a sum of ``iterations + 1`` CAMs)
    in [0, 1]: one per image and defect, since per-tile normalisation would blow the noise of
    a defect-free tile up to full strength; at least the weights' ``cam_scale`` per CAM, so a
    defect-free image keeps a faint map."""
    return max(float(raw.max()), cam_scale * (iterations + 1), 1e-12)


class MapParts:
    """One defect's map made of parts: maps of disjoint tile sets of one image (possibly with
    different AdvCAM steps, as a deadline runs them) merged into the map of the whole.

    Each part is un-normalised and summed per step count as it comes (memory: one full-size
    map per step count); parts with fewer steps are scaled to the most steps, as screening
    scales the tiles it does not climb, so one normaliser serves the merged map. A lone part
    is returned untouched.
    """

    def __init__(self, metadata: WeightsMetadata) -> None:
        self.metadata = metadata
        self._only: DefectMap | None = None
        self._first: DefectMap | None = None
        self._sums: dict[int, np.ndarray] = {}  # steps -> raw (unnormalised) map sum
        self._probability: np.ndarray | None = None
        self._climbed: np.ndarray | None = None
        self._seconds = 0.0

    def add(self, part: DefectMap, tiles_run: int | None = None) -> None:
        """Merge ``part`` (as :meth:`DefectMapPredictor.predict` made it; its map buffer is
        reused); ``tiles_run`` 0 says the part ran no tile and is dropped."""
        if tiles_run == 0:
            return
        self._seconds += part.seconds
        if self._first is None:
            self._first = self._only = part
            return
        if self._only is not None:
            self._fold(self._only)
            self._only = None
        self._fold(part)

    def _fold(self, part: DefectMap) -> None:
        raw = part.cam_map
        raw *= np.float32(part.normaliser)
        if part.iterations in self._sums:
            self._sums[part.iterations] += raw
        else:
            self._sums[part.iterations] = raw
        # Each tile runs in one part only: the others hold zeros there.
        if self._probability is None:
            self._probability = part.tile_probability.copy()
            self._climbed = part.climbed.copy()
        else:
            self._probability += part.tile_probability
            self._climbed |= part.climbed

    def finish(self) -> DefectMap | None:
        """The merged map (``None`` when no part ran a tile)."""
        if self._only is not None or self._first is None:
            return self._only
        top = max(self._sums)
        raw = self._sums.pop(top)
        for iterations, part in self._sums.items():
            part *= np.float32((top + 1) / (iterations + 1))
            raw += part
        self._sums = {top: raw}
        normaliser = map_normaliser(raw, self.metadata.cam_scale, top)
        return DefectMap(label=self._first.label, cam_map=raw / np.float32(normaliser),
                         grid=self._first.grid, tile_probability=self._probability,
                         climbed=self._climbed, normaliser=normaliser, iterations=top,
                         seconds=self._seconds, working_size=self._first.working_size)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else CPU, unless told otherwise; checked (``defectcam.core.device``)."""
    return resolve_device(device)


class DefectMapPredictor:
    """Runs one classifier over an image of any size, tile batch by tile batch."""

    def __init__(
        self,
        model: DefectClassifier,
        metadata: WeightsMetadata,
        device: str | torch.device | None = None,
        tile_batch: int | None = None,
        precision: str = "auto",
        working_scale: float | None = None,
        tiling: str = "balanced",
        malloc_tuning: bool = True,
    ) -> None:
        """``precision``: one of :data:`PRECISION_CHOICES` (``auto``: bf16 autocast on CPUs
        with native bf16 and bf16-capable GPUs, else fp32); ``working_scale``: overrides the
        weights' (``None``: ``metadata.working_scale``); ``tiling``: one of :data:`TILINGS`;
        ``malloc_tuning``: on a CPU, keep large buffers in the malloc heap
        (:func:`~defectcam.core.cpu_memory.keep_large_allocations_in_heap`).
        """
        self.device = pick_device(device)
        if tiling not in TILINGS:
            raise ValueError(f"tiling must be one of {list(TILINGS)}, got {tiling!r}")
        self.tiling = tiling
        #: What runs: fp32, bf16 or fp16 (``auto`` resolved for this device).
        self.precision = resolve_precision(precision, self.device)
        #: The image is shrunk by this factor before tiling (see :func:`working_size`).
        self.working_scale = check_working_scale(
            metadata.working_scale if working_scale is None else working_scale)
        # An inference copy with BatchNorm folded into the convs (same maps, fewer passes over
        # the activations) in channels_last, the faster layout for CPU convolutions
        # (BENCHMARKS.md, "Engine").
        self.model = fold_batchnorm(model).to(self.device, memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)  # the climb needs gradients w.r.t. the input only
        self.metadata = metadata
        self.tile_batch = tile_batch or (8 if self.device.type == "cuda" else 2)
        if self.device.type == "cpu":
            keep_large_allocations_in_heap(malloc_tuning)  # no page faults per pass

    def settings(self, iterations: int | None = None) -> AdvCAMSettings:
        m = self.metadata
        return AdvCAMSettings(
            iterations=m.iterations if iterations is None else iterations,
            xi=m.xi, tau=m.tau, lam=m.lam,
        )

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the network sees an image of this size at."""
        return working_size(height, width, self.working_scale, self.metadata.tile_size,
                            self.metadata.working_max_side)

    def tile_grid(self, height: int, width: int, tile_size: int | None = None) -> TileGrid:
        """The tiles an image of this size is cut into (at its working size)."""
        m = self.metadata
        return TileGrid.build(*self.working_size(height, width), tile_size or m.tile_size,
                              m.tile_overlap, multiple=INPUT_MULTIPLE,
                              balanced=self.tiling == "balanced")

    def predict(
        self,
        image: np.ndarray | ImageScales,
        iterations: int | None = None,
        screen_threshold: float | None = None,
        tile_size: int | None = None,
        progress: Callable[[int], None] | None = None,
        tiles: Sequence[tuple[int, int]] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> DefectMap:
        """Map of this defect over ``image`` (H, W, 3) uint8 RGB (or the request's
        :class:`ImageScales`, whose shrunk copies the defects share).

        ``screen_threshold``: when set, tiles whose probability is below it skip the climb
        and keep their plain Grad-CAM (scaled to the same T+1 terms).
        ``progress`` is called with the number of tiles finished after each batch.
        ``tiles``: run only these (row, column) tiles of the grid, the rest of the map stays 0
        (benchmarks time a subset of a large image's tiles this way).
        ``stop`` is asked before each batch; once it answers True the remaining tiles are
        left out like those not in ``tiles`` (a deadline's guard).

        At a working scale below 1 (or a frame beyond the working longer side) the image is
        shrunk before tiling and the stitched map is enlarged back (bilinear), so the map, and
        every proposal made from it, is in the image's own pixels; the grid and ``tiles`` are
        at the working size.
        """
        scales = as_scales(image)
        start = time.perf_counter()
        settings = self.settings(iterations)
        m = self.metadata
        height, width = scales.shape
        work = self.working_size(height, width)
        image = scales.at(work)
        grid = self.tile_grid(height, width, tile_size)
        acc = np.zeros(work, dtype=np.float32)
        probability = np.zeros((len(grid.ys), len(grid.xs)), dtype=np.float32)
        climbed = np.zeros_like(probability, dtype=bool)
        if tiles is None:
            tiles = grid.tiles()
        elif unknown := sorted(set(tiles) - set(grid.tiles())):
            raise ValueError(f"tiles {unknown} are not in the {len(grid.ys)}x{len(grid.xs)} grid")
        ran = 0
        for first in range(0, len(tiles), self.tile_batch):
            if stop is not None and stop():
                break
            ran += 1
            batch = tiles[first : first + self.tile_batch]
            crops = np.stack([extract_tile(image, grid, i, j) for i, j in batch])
            x0 = normalize_batch(torch.from_numpy(crops).to(self.device), m.mean, m.std)
            x0 = x0.contiguous(memory_format=torch.channels_last)
            cams, logits, did_climb = self._run_batch(x0, settings, screen_threshold)
            for k, (i, j) in enumerate(batch):
                stitch_tiles(acc, grid, i, j, cams[k])
                probability[i, j] = 1.0 / (1.0 + np.exp(-logits[k]))
                climbed[i, j] = did_climb[k]
            if progress is not None:
                progress(len(batch))
        # At the image's own size (bilinear: no new peaks), so that maps of parts of an image
        # merge into the map of the whole (MapParts).
        if work != (height, width):
            acc = (cv2.resize(acc, (width, height), interpolation=cv2.INTER_LINEAR) if ran
                   else np.zeros((height, width), np.float32))
        normaliser = map_normaliser(acc, m.cam_scale, settings.iterations)
        acc /= normaliser
        return DefectMap(
            label=m.label, cam_map=acc, grid=grid, tile_probability=probability,
            climbed=climbed, normaliser=normaliser, iterations=settings.iterations,
            seconds=time.perf_counter() - start,
            working_size=work if work != (height, width) else None,
        )

    def _run_batch(self, x0: torch.Tensor, settings: AdvCAMSettings,
                   screen_threshold: float | None):
        """CAM sums (B, h, w), original logits (B,) and climbed flags for one tile batch."""
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            result = advcam_climb(self.model, x0, settings, screen_threshold)
        return (result.cam.float().cpu().numpy(), result.logit.float().cpu().numpy(),
                result.climbed.cpu().numpy())


__all__ = ["PRECISIONS", "PRECISION_CHOICES", "TILINGS", "DefectMap", "DefectMapPredictor",
           "ImageScales", "MapParts", "as_scales", "check_working_scale", "map_normaliser",
           "parse_working_scale", "pick_device", "working_size"]
