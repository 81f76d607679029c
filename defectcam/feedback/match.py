"""Logged proposals vs. the annotations as they ended up in CVAT: the annotator's verdict.

Rules (docs/feedback-loop.md states them for users):

- Image: a logged request belongs to the export image with the same file name (the client
  sent one), else to the image whose file in ``--images`` has the logged content sha256.
  When several requests hit one image, the latest is the one judged (earlier ones are
  counted as ``superseded``).
- Geometry: both sides are rasterised to pixels of the frame: a logged polygon answer with
  :func:`polygon_to_mask`, a mask answer as its mask; final polygons, masks and boxes the
  same way. IoU is pixel IoU.
- Per image and label, proposals and final region shapes are paired greedily by
  decreasing IoU, one to one. A proposal paired with IoU >= ``accept_iou`` (0.95) is
  ``accepted``; with IoU in [``modify_iou`` (0.3), 0.95) ``modified`` (edit amount
  1 - IoU and the symmetric difference in pixels); otherwise ``rejected`` (deleted, or
  changed beyond recognition, or relabelled).
- ``missed``: final region shapes (and ``points`` shapes) of a defect label that no
  proposal was paired with and whose source is not ``auto``. Unpaired ``auto`` shapes come
  from function calls the log does not hold: counted ``unlogged_auto``, no clicks.
- CVAT's ``source`` is extra evidence, not the rule: cvat-core turns an ``auto`` shape into
  ``semi-auto`` when its points, label or rotation are edited (``computeNewSource``), so an
  accepted proposal whose shape is ``semi-auto`` (edited back to an IoU >= 0.95) or a
  modified one still ``auto`` is counted in ``source_disagreements``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defectcam.core.digest import file_sha256
from defectcam.core.postprocess import polygon_to_mask
from defectcam.data import NEGATIVE_LABEL
from defectcam.data.cvat_xml import CvatAnnotations, CvatImage, CvatShape
from defectcam.feedback.log import LoggedProposal, LoggedRequest

ACCEPT_IOU = 0.95
MODIFY_IOU = 0.3
REGION_KINDS = ("polygon", "mask", "box")
DECISIONS = ("accepted", "modified", "rejected")


@dataclass
class ProposalDecision:
    """The verdict on one logged proposal. ``shape_index``: the paired shape's index in
    ``CvatImage.shapes`` (``None`` when rejected)."""

    request_id: int
    index: int
    label: str
    confidence: float
    image: str
    decision: str
    iou: float
    shape_index: int | None = None
    shape_source: str | None = None
    proposal_area: int = 0
    final_area: int = 0
    symmetric_difference: int = 0

    @property
    def edit_amount(self) -> float:
        return 1.0 - self.iou


@dataclass
class MissedDefect:
    image: str
    label: str
    shape_index: int
    source: str
    area: int


@dataclass
class ImageVerdict:
    """One export image with its judged request (``None`` when the log has none)."""

    image: CvatImage
    request: LoggedRequest | None
    matched_by: str = ""
    decisions: list[ProposalDecision] = field(default_factory=list)
    missed: list[MissedDefect] = field(default_factory=list)
    unlogged_auto: int = 0


@dataclass
class FeedbackMatch:
    images: list[ImageVerdict]
    unmatched_requests: list[LoggedRequest]
    superseded_requests: list[LoggedRequest]
    accept_iou: float = ACCEPT_IOU
    modify_iou: float = MODIFY_IOU

    @property
    def decisions(self) -> list[ProposalDecision]:
        return [d for v in self.images for d in v.decisions]

    @property
    def missed(self) -> list[MissedDefect]:
        return [m for v in self.images for m in v.missed]

    def source_disagreements(self) -> Counter:
        """Verdicts that CVAT's ``source`` field does not back (for the report)."""
        out: Counter = Counter()
        for d in self.decisions:
            if d.decision == "accepted" and d.shape_source not in ("auto", None):
                out[f"accepted but source {d.shape_source}"] += 1
            elif d.decision == "modified" and d.shape_source == "auto":
                out["modified but source auto"] += 1
        return out


def shape_region(shape: CvatShape, height: int, width: int) -> np.ndarray | None:
    """A region shape's pixels on the frame (``None`` for points, polylines, tags)."""
    if shape.kind == "polygon":
        return polygon_to_mask(shape.points, height, width)
    if shape.kind == "mask" and shape.mask is not None and shape.box is not None:
        out = np.zeros((height, width), dtype=bool)
        x1, y1 = shape.box[0], shape.box[1]
        crop = shape.mask[: max(0, height - y1), : max(0, width - x1)]
        crop = crop[max(0, -y1):, max(0, -x1):]
        y0, x0 = max(0, y1), max(0, x1)
        out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        return out
    if shape.kind == "box":
        (x1, y1), (x2, y2) = np.asarray(shape.points, dtype=float).reshape(2, 2)
        out = np.zeros((height, width), dtype=bool)
        out[max(0, int(round(y1))) : int(round(y2)) + 1,
            max(0, int(round(x1))) : int(round(x2)) + 1] = True
        return out
    return None


def _image_file(images_dir: Path, name: str) -> Path | None:
    for candidate in (images_dir / name, images_dir / Path(name).name):
        if candidate.is_file():
            return candidate
    return None


def pair_requests(
    annotations: CvatAnnotations, requests: Sequence[LoggedRequest],
    images_dir: str | Path | None = None,
) -> tuple[list[ImageVerdict], list[LoggedRequest], list[LoggedRequest]]:
    """Export images with their latest logged request; also the requests of no export image
    and the superseded ones (an image asked for again later)."""
    used: set[int] = set()
    superseded: list[LoggedRequest] = []
    verdicts = []
    for image, (found, how) in zip(annotations.images,
                                   requests_by_image(annotations, requests, images_dir),
                                   strict=True):
        request = found[-1] if found else None
        superseded += [r for r in found[:-1] if r.id not in used]
        used.update(r.id for r in found)
        verdicts.append(ImageVerdict(image, request, how if request else ""))
    unmatched = [r for r in requests if r.id not in used]
    return verdicts, unmatched, superseded


def requests_by_image(annotations: CvatAnnotations, requests: Sequence[LoggedRequest],
                      images_dir: str | Path | None = None
                      ) -> list[tuple[list[LoggedRequest], str]]:
    """Per export image (in order): its logged requests, oldest first, and how they were
    found (``"file name"`` or ``"content sha256"``; see the module rules)."""
    by_name: dict[str, list[LoggedRequest]] = defaultdict(list)
    by_hash: dict[str, list[LoggedRequest]] = defaultdict(list)
    for request in requests:
        if request.file_name:
            by_name[request.file_name].append(request)
            by_name.setdefault(Path(request.file_name).name, []).append(request)
        by_hash[request.image_sha256].append(request)
    out = []
    for image in annotations.images:
        found = by_name.get(image.name) or by_name.get(Path(image.name).name) or []
        how = "file name"
        path = _image_file(Path(images_dir), image.name) if images_dir else None
        if path is not None:
            by_content = by_hash.get(file_sha256(path), [])
            if by_content:
                # content wins over a name: two folders may reuse "0001.jpg"
                found, how = by_content, "content sha256"
        found = [r for r in found if r.width == image.width and r.height == image.height]
        unique = {r.id: r for r in found}
        out.append((sorted(unique.values(), key=lambda r: (r.time, r.id)), how))
    return out


def _iou_matrix(props: list[np.ndarray], finals: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(props), len(finals)))
    for i, p in enumerate(props):
        for j, f in enumerate(finals):
            inter = np.count_nonzero(p & f)
            if inter:
                out[i, j] = inter / np.count_nonzero(p | f)
    return out


def judge_image(verdict: ImageVerdict, defects: Sequence[str],
                accept_iou: float = ACCEPT_IOU, modify_iou: float = MODIFY_IOU) -> None:
    """Fill ``verdict.decisions`` / ``missed`` / ``unlogged_auto`` (see the module rules)."""
    image, request = verdict.image, verdict.request
    h, w = image.height, image.width
    proposals: list[LoggedProposal] = request.proposals if request else []
    labels = list(dict.fromkeys([*defects, *(p.label for p in proposals)]))
    for label in labels:
        props = [p for p in proposals if p.label == label]
        shape_ids = [i for i, s in enumerate(image.shapes)
                     if s.label == label and s.kind in REGION_KINDS]
        prop_px = [p.region(h, w) for p in props]
        final_px = [shape_region(image.shapes[i], h, w) for i in shape_ids]
        iou = _iou_matrix(prop_px, final_px)
        pair: dict[int, int] = {}
        taken: set[int] = set()
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            i, j = divmod(int(flat), max(1, len(shape_ids)))
            if iou.size == 0 or iou[i, j] < modify_iou:
                break
            if i in pair or j in taken:
                continue
            pair[i] = j
            taken.add(j)
        for i, p in enumerate(props):
            j = pair.get(i)
            value = float(iou[i, j]) if j is not None else float(iou[i].max(initial=0.0))
            decision = ("accepted" if j is not None and value >= accept_iou
                        else "modified" if j is not None else "rejected")
            d = ProposalDecision(p.request_id, p.index, label, p.confidence, image.name,
                                 decision, value, proposal_area=int(prop_px[i].sum()))
            if j is not None:
                shape = image.shapes[shape_ids[j]]
                d.shape_index, d.shape_source = shape_ids[j], shape.source
                d.final_area = int(final_px[j].sum())
                d.symmetric_difference = int(np.count_nonzero(prop_px[i] ^ final_px[j]))
            verdict.decisions.append(d)
        for j, index in enumerate(shape_ids):
            if j in taken:
                continue
            shape = image.shapes[index]
            if shape.source == "auto":
                verdict.unlogged_auto += 1
            else:
                verdict.missed.append(MissedDefect(image.name, label, index, shape.source,
                                                   int(final_px[j].sum())))
        for index, shape in enumerate(image.shapes):  # a click drawn on a missed defect
            if shape.label == label and shape.kind == "points" and label != NEGATIVE_LABEL:
                verdict.missed.append(MissedDefect(image.name, label, index, shape.source, 0))
    verdict.decisions.sort(key=lambda d: (d.request_id, d.index))


def match_feedback(
    annotations: CvatAnnotations,
    requests: Sequence[LoggedRequest],
    images_dir: str | Path | None = None,
    defects: Sequence[str] = (),
    accept_iou: float = ACCEPT_IOU,
    modify_iou: float = MODIFY_IOU,
) -> FeedbackMatch:
    """Judge every logged proposal on the export's images (see the module rules)."""
    if not 0 < modify_iou <= accept_iou <= 1:
        raise ValueError(f"need 0 < modify_iou <= accept_iou <= 1, got {modify_iou}, "
                         f"{accept_iou}")
    verdicts, unmatched, superseded = pair_requests(annotations, requests, images_dir)
    for verdict in verdicts:
        judge_image(verdict, defects, accept_iou, modify_iou)
    return FeedbackMatch(verdicts, unmatched, superseded, accept_iou, modify_iou)


# --------------------------------------------------------------------------- clicks


def kept_region(verdict: ImageVerdict) -> np.ndarray:
    """Every defect the image keeps after review: region shapes and clicks of any label
    except the negative one."""
    h, w = verdict.image.height, verdict.image.width
    out = np.zeros((h, w), dtype=bool)
    for shape in verdict.image.shapes:
        if shape.label == NEGATIVE_LABEL:
            continue
        region = shape_region(shape, h, w)
        if region is not None:
            out |= region
        elif shape.kind in ("points", "polyline"):
            for x, y in np.asarray(shape.points, dtype=float).reshape(-1, 2):
                xi, yi = int(np.clip(x, 0, w - 1)), int(np.clip(y, 0, h - 1))
                out[yi, xi] = True
    return out
