"""Logged proposals vs. the annotations as they ended up in CVAT: the annotator's verdict.

Rules (docs/feedback-loop.md states them for users):

- Image: a logged request belongs to the export image whose file (under the ``--images``
  folders, found by its exact relative path or its content hash, never by a bare file
  name) has the logged content sha256, else to the image with the logged file name (the
  client sent one). When several requests hit one image, the latest is the one judged
  (earlier ones are counted as ``superseded``).
- Geometry: both sides are rasterised to pixels of the frame: a logged polygon answer with
  :func:`polygon_to_mask`, a mask answer as its mask; final polygons, masks and boxes the
  same way. IoU is pixel IoU.
- Per image and label, proposals and final region shapes are paired greedily by
  decreasing IoU, one to one. A proposal paired with IoU >= ``accept_iou`` (0.95) is
  ``accepted``; with IoU in [``modify_iou`` (0.3), 0.95) ``modified`` (edit amount
  1 - IoU and the symmetric difference in pixels).
- ``relabelled``: an unpaired proposal whose region a final shape of another label, left
  unpaired by that label's proposals, covers with IoU >= ``modify_iou`` (greedy, one to
  one). cvat-core keeps ``source: auto`` on a label change, so the source cannot tell.
- ``rejected``: none of these (deleted, or changed beyond recognition).
- ``missed``: final region shapes (and ``points`` shapes) of a defect label that no
  proposal was paired with and whose source is not ``auto``. Unpaired ``auto`` shapes come
  from function calls the log does not hold: counted ``unlogged_auto``, no clicks.
- CVAT's ``source`` is extra evidence, not the rule: cvat-core turns an ``auto`` shape into
  ``semi-auto`` when its points or rotation are edited (``computeNewSource``), so an
  accepted proposal whose shape is ``semi-auto`` (edited back to an IoU >= 0.95) or a
  modified one still ``auto`` is counted in ``source_disagreements``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defectcam.data import NEGATIVE_LABEL
from defectcam.data.cvat_xml import CvatAnnotations, CvatImage, CvatShape, shape_region
from defectcam.data.image_roots import ImageRoots
from defectcam.serving.interaction_log import LoggedProposal, LoggedRequest

ACCEPT_IOU = 0.95
MODIFY_IOU = 0.3
REGION_KINDS = ("polygon", "mask", "box")
DECISIONS = ("accepted", "modified", "relabelled", "rejected")


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
    #: the label of the final shape of a relabelled proposal
    new_label: str | None = None
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
    #: the image's file under --images and its sha256 (``None`` when not found)
    path: Path | None = None
    sha256: str | None = None
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


def pair_requests(
    annotations: CvatAnnotations, requests: Sequence[LoggedRequest],
    images: ImageRoots | str | Path | Sequence[str | Path] | None = None,
) -> tuple[list[ImageVerdict], list[LoggedRequest], list[LoggedRequest]]:
    """Export images with their latest logged request; also the requests of no export image
    and the superseded ones (an image asked for again later)."""
    used: set[int] = set()
    superseded: list[LoggedRequest] = []
    verdicts = []
    for image, (found, how, path, digest) in zip(
            annotations.images, requests_by_image(annotations, requests, images), strict=True):
        request = found[-1] if found else None
        superseded += [r for r in found[:-1] if r.id not in used]
        used.update(r.id for r in found)
        verdicts.append(ImageVerdict(image, request, how if request else "", path, digest))
    unmatched = [r for r in requests if r.id not in used]
    return verdicts, unmatched, superseded


def requests_by_image(
    annotations: CvatAnnotations, requests: Sequence[LoggedRequest],
    images: ImageRoots | str | Path | Sequence[str | Path] | None = None,
) -> list[tuple[list[LoggedRequest], str, Path | None, str | None]]:
    """Per export image (in order): its logged requests, oldest first, how they were found
    (``"file name"`` or ``"content sha256"``; see the module rules), the image's file and
    its content hash (``None`` when unknown)."""
    roots = ImageRoots.of(images) if images is not None else None
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
        path = roots.find(image.name, image.sha256) if roots else None
        digest = roots.digest(path) if path is not None else image.sha256
        if digest and by_hash.get(digest):
            # content wins over a name: two folders may reuse "0001.jpg"
            found, how = by_hash[digest], "content sha256"
        found = [r for r in found if r.width == image.width and r.height == image.height]
        unique = {r.id: r for r in found}
        out.append((sorted(unique.values(), key=lambda r: (r.time, r.id)), how, path, digest))
    return out


def _iou_matrix(props: list[np.ndarray], finals: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(props), len(finals)))
    for i, p in enumerate(props):
        for j, f in enumerate(finals):
            inter = np.count_nonzero(p & f)
            if inter:
                out[i, j] = inter / np.count_nonzero(p | f)
    return out


def _greedy_pairs(iou: np.ndarray, min_iou: float) -> dict[int, int]:
    """Rows paired one to one with columns by decreasing IoU, down to ``min_iou``."""
    pair: dict[int, int] = {}
    taken: set[int] = set()
    if iou.size == 0:
        return pair
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < min_iou:
            break
        if i not in pair and j not in taken:
            pair[i] = j
            taken.add(j)
    return pair


def _paired(d: ProposalDecision, shape_index: int, shape: CvatShape, proposal: np.ndarray,
            final: np.ndarray) -> None:
    d.shape_index, d.shape_source = shape_index, shape.source
    d.final_area = int(final.sum())
    d.symmetric_difference = int(np.count_nonzero(proposal ^ final))


def judge_image(verdict: ImageVerdict, defects: Sequence[str],
                accept_iou: float = ACCEPT_IOU, modify_iou: float = MODIFY_IOU) -> None:
    """Fill ``verdict.decisions`` / ``missed`` / ``unlogged_auto`` (see the module rules)."""
    image, request = verdict.image, verdict.request
    h, w = image.height, image.width
    proposals: list[LoggedProposal] = request.proposals if request else []
    labels = list(dict.fromkeys([*defects, *(p.label for p in proposals)]))
    pixels: dict[tuple[int, int], np.ndarray] = {}
    left: list[tuple[int, np.ndarray]] = []  # final region shapes no proposal of theirs took
    for label in labels:
        props = [p for p in proposals if p.label == label]
        shape_ids = [i for i, s in enumerate(image.shapes)
                     if s.label == label and s.kind in REGION_KINDS]
        prop_px = [p.region(h, w) for p in props]
        final_px = [shape_region(image.shapes[i], h, w) for i in shape_ids]
        iou = _iou_matrix(prop_px, final_px)
        pair = _greedy_pairs(iou, modify_iou)
        for i, p in enumerate(props):
            j = pair.get(i)
            value = float(iou[i, j]) if j is not None else float(iou[i].max(initial=0.0))
            decision = ("accepted" if j is not None and value >= accept_iou
                        else "modified" if j is not None else "rejected")
            d = ProposalDecision(p.request_id, p.index, label, p.confidence, image.name,
                                 decision, value, proposal_area=int(prop_px[i].sum()))
            if j is not None:
                _paired(d, shape_ids[j], image.shapes[shape_ids[j]], prop_px[i], final_px[j])
            pixels[(p.request_id, p.index)] = prop_px[i]
            verdict.decisions.append(d)
        taken = set(pair.values())
        left += [(index, final_px[j]) for j, index in enumerate(shape_ids) if j not in taken]
        for index, shape in enumerate(image.shapes):  # a click drawn on a missed defect
            if shape.label == label and shape.kind == "points" and label != NEGATIVE_LABEL:
                verdict.missed.append(MissedDefect(image.name, label, index, shape.source, 0))
    # A relabel: a rejected proposal whose region a final shape of another label took over
    # (cvat-core keeps source "auto" on a label change, so the source cannot tell).
    rejected = [d for d in verdict.decisions if d.decision == "rejected"]
    iou = _iou_matrix([pixels[(d.request_id, d.index)] for d in rejected],
                      [px for _, px in left])
    for i, d in enumerate(rejected):
        iou[i, [image.shapes[index].label == d.label for index, _ in left]] = 0.0
    relabels = _greedy_pairs(iou, modify_iou)
    for i, j in relabels.items():
        d, (index, final) = rejected[i], left[j]
        d.decision, d.iou, d.new_label = "relabelled", float(iou[i, j]), image.shapes[index].label
        _paired(d, index, image.shapes[index], pixels[(d.request_id, d.index)], final)
    relabelled = set(relabels.values())
    for j, (index, final) in enumerate(left):
        shape = image.shapes[index]
        if j in relabelled:
            continue
        if shape.source == "auto":
            verdict.unlogged_auto += 1
        else:
            verdict.missed.append(MissedDefect(image.name, shape.label, index, shape.source,
                                               int(final.sum())))
    verdict.decisions.sort(key=lambda d: (d.request_id, d.index))


def match_feedback(
    annotations: CvatAnnotations,
    requests: Sequence[LoggedRequest],
    images: ImageRoots | str | Path | Sequence[str | Path] | None = None,
    defects: Sequence[str] = (),
    accept_iou: float = ACCEPT_IOU,
    modify_iou: float = MODIFY_IOU,
) -> FeedbackMatch:
    """Judge every logged proposal on the export's images (see the module rules)."""
    if not 0 < modify_iou <= accept_iou <= 1:
        raise ValueError(f"need 0 < modify_iou <= accept_iou <= 1, got {modify_iou}, "
                         f"{accept_iou}")
    verdicts, unmatched, superseded = pair_requests(annotations, requests, images)
    for verdict in verdicts:
        judge_image(verdict, defects, accept_iou, modify_iou)
    return FeedbackMatch(verdicts, unmatched, superseded, accept_iou, modify_iou)


# --------------------------------------------------------------------------- clicks


def kept_by_label(verdict: ImageVerdict,
                  negative_label: str = NEGATIVE_LABEL) -> dict[str, np.ndarray]:
    """Every defect the image keeps after review, per label: region shapes and clicks of
    every label except the negative one."""
    h, w = verdict.image.height, verdict.image.width
    out: dict[str, np.ndarray] = {}
    for shape in verdict.image.shapes:
        if shape.label == negative_label:
            continue
        mask = out.setdefault(shape.label, np.zeros((h, w), dtype=bool))
        region = shape_region(shape, h, w)
        if region is not None:
            mask |= region
        elif shape.kind in ("points", "polyline"):
            for x, y in np.asarray(shape.points, dtype=float).reshape(-1, 2):
                mask[int(np.clip(y, 0, h - 1)), int(np.clip(x, 0, w - 1))] = True
    return out


def kept_region(verdict: ImageVerdict, negative_label: str = NEGATIVE_LABEL) -> np.ndarray:
    """Every defect the image keeps after review, whatever its label (see
    :func:`kept_by_label`)."""
    out = np.zeros((verdict.image.height, verdict.image.width), dtype=bool)
    for mask in kept_by_label(verdict, negative_label).values():
        out |= mask
    return out
