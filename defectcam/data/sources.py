"""The real data sets under ../shared/data: which source holds which defect, and splits.

Each source folder has ``images/`` (JPEG) and ``masks/`` (PNG class indices, same stem).
Splits are by image, per source, decided by a seeded hash of the stem: stable across
machines, Python/NumPy versions and file-system order, and identical for every defect
that a source holds (phinet: crack and spalling share one split).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from defectcam.config import SHARED_DATA_ENV, shared_data_path
from defectcam.core.image_io import IMAGE_SUFFIXES
from defectcam.data import DEFECTS


@dataclass(frozen=True)
class DataSource:
    """``values[defect]``: mask values that mean that defect; ``None`` means any value > 0."""

    name: str
    folder: str
    values: dict[str, tuple[int, ...] | None]

    @property
    def defects(self) -> tuple[str, ...]:
        return tuple(self.values)


SOURCES: dict[str, DataSource] = {
    s.name: s
    for s in (
        DataSource("deepcrack", "crack/deepcrack", {"crack": None}),  # 0 / 255
        DataSource("crackforest", "crack/crackforest", {"crack": None}),  # 0 / 255
        DataSource("phinet", "concrete/phinet", {"crack": (1,), "spalling": (2,)}),
        DataSource("corrosion", "rust/corrosion", {"rust": None}),  # condition states 1..3
    )
}
DEFECT_SOURCES: dict[str, tuple[str, ...]] = {
    d: tuple(s.name for s in SOURCES.values() if d in s.values) for d in DEFECTS
}


@dataclass(frozen=True)
class ImagePair:
    """One image and its mask. ``name`` is the path relative to the data root: the image
    name simulated CVAT exports use, unique across sources."""

    image: Path
    mask: Path
    source: str
    name: str

    @property
    def stem(self) -> str:
        return self.image.stem


def shared_data_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$DEFECTCAM_SHARED_DATA``, else ``<repo>/../shared/data``."""
    if root is not None:
        return Path(root)
    return shared_data_path()


def get_source(source: str) -> DataSource:
    try:
        return SOURCES[source]
    except KeyError:
        raise ValueError(f"unknown source {source!r}; known: {sorted(SOURCES)}") from None


def list_pairs(source: str, root: str | Path | None = None) -> list[ImagePair]:
    """All (image, mask) pairs of a source, sorted by stem. Images without a mask are
    skipped; a missing source folder raises ``FileNotFoundError`` naming it."""
    src = get_source(source)
    base = shared_data_root(root)
    folder = base / src.folder
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise FileNotFoundError(f"{folder}: expected images/ and masks/ (set {SHARED_DATA_ENV})")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
    pairs = [
        ImagePair(p, masks[p.stem], source, f"{src.folder}/images/{p.name}")
        for p in images_dir.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in masks
    ]
    return sorted(pairs, key=lambda pair: pair.stem)


def pairs_for_defect(defect: str, root: str | Path | None = None) -> list[ImagePair]:
    """Pairs of every source holding ``defect``, source by source."""
    if defect not in DEFECT_SOURCES:
        raise ValueError(f"unknown defect {defect!r}; known: {DEFECTS}")
    return [pair for name in DEFECT_SOURCES[defect] for pair in list_pairs(name, root)]


def other_source_pairs(defect: str, root: str | Path | None = None) -> list[ImagePair]:
    """Pairs of every source that does *not* label ``defect``, source by source.

    In CVAT every classifier runs on every frame, so the photos of the other defects (painted
    steel for the crack classifier, bare concrete for the rust one) are frames it must answer
    "no" on: they give it negative clicks (and count its false positives in evaluation).
    """
    if defect not in DEFECT_SOURCES:
        raise ValueError(f"unknown defect {defect!r}; known: {DEFECTS}")
    return [pair for name, src in SOURCES.items() if defect not in src.values
            for pair in list_pairs(name, root)]


def holds_defect(pair: ImagePair, defect: str) -> bool:
    """Whether ``pair``'s source labels ``defect`` in its masks."""
    return defect in get_source(pair.source).values


def mask_for_defect(mask: np.ndarray, source: str, defect: str) -> np.ndarray:
    """Boolean mask of ``defect`` from a source's class-index mask."""
    src = get_source(source)
    if defect not in src.values:
        raise ValueError(f"source {source!r} holds {src.defects}, not {defect!r}")
    mask = np.asarray(mask)
    if mask.ndim == 3:  # a mask saved as RGB: all channels carry the same index
        mask = mask[..., 0]
    values = src.values[defect]
    if values is None:
        return mask > 0
    return np.isin(mask, values)


def read_mask(path: str | Path) -> np.ndarray:
    """A class-index PNG as a 2-D uint8 array."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise FileNotFoundError(f"cannot read mask {path}")
    return mask[..., 0] if mask.ndim == 3 else mask


def load_defect_mask(pair: ImagePair, defect: str) -> np.ndarray:
    """Boolean mask of ``defect`` on ``pair``'s image. A source that does not label the
    defect (see :func:`other_source_pairs`) gives an all-False mask: its photos show the
    other defects' structures, where the defect is taken as absent."""
    mask = read_mask(pair.mask)
    if not holds_defect(pair, defect):
        return np.zeros(mask.shape[:2], dtype=bool)
    return mask_for_defect(mask, pair.source, defect)


def known_defect_masks(pair: ImagePair) -> dict[str, np.ndarray]:
    """Boolean masks of every defect ``pair``'s source labels (one read of the mask file):
    what a simulated annotator knows lies on the photo."""
    mask = read_mask(pair.mask)
    return {d: mask_for_defect(mask, pair.source, d) for d in get_source(pair.source).defects}


def _rank(seed: int, source: str, stem: str) -> bytes:
    return hashlib.sha256(f"{seed}:{source}:{stem}".encode()).digest()


def split_source(
    pairs: Iterable[ImagePair], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[ImagePair], list[ImagePair]]:
    """Deterministic train/validation split by image, done per source.

    Within each source the stems are ordered by a seeded hash (a shuffle that depends on
    nothing but seed, source and stem) and the first ``round(n * val_fraction)`` go to
    validation. Pass a source's full listing, then filter: filtering first changes n.
    Both lists come back sorted by (source, stem).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_source: dict[str, list[ImagePair]] = {}
    for pair in pairs:
        by_source.setdefault(pair.source, []).append(pair)
    train: list[ImagePair] = []
    val: list[ImagePair] = []
    for source, members in sorted(by_source.items()):
        stems = [p.stem for p in members]
        if len(set(stems)) != len(stems):
            raise ValueError(f"source {source!r}: duplicate stems in the pairs")
        ordered = sorted(members, key=lambda p: _rank(seed, source, p.stem))
        n_val = round(len(ordered) * val_fraction)
        val += ordered[:n_val]
        train += ordered[n_val:]
    key = lambda p: (p.source, p.stem)  # noqa: E731
    return sorted(train, key=key), sorted(val, key=key)


def seeded_choice(pairs: list[ImagePair], limit: int, seed: int) -> list[ImagePair]:
    """At most ``limit`` of ``pairs``, chosen by a seeded hash of the name (stable: adding a
    pair never changes which others are chosen), in name order."""
    ranked = sorted(pairs, key=lambda p: hashlib.sha256(f"{seed}:{p.name}".encode()).digest())
    return sorted(ranked[:limit], key=lambda p: p.name)


def cap_per_source(pairs: list[ImagePair], limit: int, seed: int) -> list[ImagePair]:
    """At most ``limit`` pairs per source (:func:`seeded_choice` within each source)."""
    kept = []
    for source in sorted({p.source for p in pairs}):
        kept += seeded_choice([p for p in pairs if p.source == source], limit, seed)
    return sorted(kept, key=lambda p: p.name)
