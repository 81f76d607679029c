"""CVAT's "CVAT for images 1.1" XML export: reader, writer, and the clicks it holds.

The layout is what CVAT's exporter (``cvat/apps/dataset_manager/formats/cvat.py``) writes
(:func:`write_cvat_xml`). Click convention: a click ``(x, y)`` marks the pixel at column
``floor(x)``, row ``floor(y)``.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import XMLGenerator

import cv2
import numpy as np

from defectcam.core.cvat import cvat_rle_to_mask, mask_to_cvat_rle
from defectcam.core.postprocess import polygon_to_mask
from defectcam.data import DEFECTS, NEGATIVE_LABEL

#: The attribute of a negative-label click that is a negative for one defect only
#: (``<attribute name="for">crack</attribute>``: "no crack here", near another defect).
NEGATIVE_FOR = "for"
SHAPE_KINDS = ("points", "polygon", "polyline", "box", "mask", "tag")
SHAPE_SOURCES = ("manual", "auto", "semi-auto", "file", "consensus")
_MIN_POINTS = {"points": 1, "polyline": 2, "polygon": 3}


@dataclass
class CvatLabel:
    name: str
    type: str = "any"
    color: str = ""


@dataclass
class CvatShape:
    """One shape. ``points`` is ``(N, 2)`` float x,y (a box: its two corners; a mask or a
    tag: empty). A mask has ``mask`` (bool crop) and ``box`` (x1, y1, x2, y2 inclusive)."""

    kind: str
    label: str
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0
    group_id: int | None = None
    mask: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class CvatImage:
    """One frame. ``sha256``: the image file's content hash where the writer knew it (an
    extra ``sha256`` attribute of ``<image>``, which CVAT's importer ignores); it lets a
    training round find the file among several image folders."""

    id: int
    name: str
    width: int
    height: int
    shapes: list[CvatShape] = field(default_factory=list)
    sha256: str | None = None


@dataclass
class CvatAnnotations:
    """A whole export. ``meta`` keeps the task's scalar fields (id, name, created, ...);
    ``ignored`` counts shapes the reader left out, by reason."""

    labels: list[CvatLabel]
    images: list[CvatImage]
    meta: dict[str, str] = field(default_factory=dict)
    ignored: Counter = field(default_factory=Counter)

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


@dataclass
class ImageClicks:
    """Clicks of one image for one defect: positives and negatives as ``(N, 2)`` x,y.
    ``other_label_negatives``: how many of the negatives are other defects' clicks."""

    name: str
    width: int
    height: int
    positives: np.ndarray
    negatives: np.ndarray
    image_id: int = -1
    sha256: str | None = None
    other_label_negatives: int = 0


# --------------------------------------------------------------------------- reader


def _parse_points(text: str | None, kind: str) -> np.ndarray:
    if text is None or not text.strip():
        raise ValueError("no points")
    pairs = []
    for chunk in text.strip().split(";"):
        xy = chunk.split(",")
        if len(xy) != 2:
            raise ValueError(f"malformed point {chunk!r} in {text!r}")
        try:
            x, y = float(xy[0]), float(xy[1])
        except ValueError:
            raise ValueError(f"malformed point {chunk!r} in {text!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"non-finite point {chunk!r}")
        pairs.append((x, y))
    need = _MIN_POINTS.get(kind, 1)
    if len(pairs) < need:
        raise ValueError(f"a {kind} needs {need}+ points, got {len(pairs)}")
    return np.asarray(pairs, dtype=np.float64)


def _required(elem: ET.Element, name: str) -> str:
    value = elem.get(name)
    if value is None:
        raise ValueError(f"missing attribute {name!r}")
    return value


def _parse_shape(elem: ET.Element) -> CvatShape:
    kind = elem.tag
    shape = CvatShape(
        kind=kind,
        label=_required(elem, "label"),
        source=elem.get("source", "manual"),
        occluded=elem.get("occluded", "0") in ("1", "true", "True"),
        z_order=int(elem.get("z_order", "0")),
        group_id=int(elem.get("group_id")) if elem.get("group_id") else None,
        attributes={a.get("name", ""): a.text or "" for a in elem.findall("attribute")},
    )
    if kind in _MIN_POINTS:
        shape.points = _parse_points(elem.get("points"), kind)
    elif kind == "box":
        corners = [float(_required(elem, k)) for k in ("xtl", "ytl", "xbr", "ybr")]
        shape.points = np.asarray(corners, dtype=np.float64).reshape(2, 2)
    elif kind == "mask":
        left, top, width, height = (int(float(_required(elem, k)))
                                    for k in ("left", "top", "width", "height"))
        if width <= 0 or height <= 0:
            raise ValueError(f"mask box {width}x{height} is empty")
        try:
            counts = [int(float(v)) for v in _required(elem, "rle").split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"malformed rle {elem.get('rle')!r}") from None
        shape.mask = cvat_rle_to_mask(counts, width, height)
        shape.box = (left, top, left + width - 1, top + height - 1)
    return shape


def _meta_task(meta: ET.Element | None) -> dict[str, str]:
    if meta is None:
        return {}
    scalars: dict[str, str] = {}
    owner = next((meta.find(k) for k in ("task", "project", "job") if meta.find(k) is not None),
                 None)
    if owner is not None:
        scalars = {c.tag: (c.text or "") for c in owner if len(c) == 0}
    dumped = meta.find("dumped")
    if dumped is not None:
        scalars["dumped"] = dumped.text or ""
    return scalars


def _meta_labels(meta: ET.Element | None) -> list[CvatLabel]:
    labels: dict[str, CvatLabel] = {}
    if meta is None:
        return []
    for elem in meta.iter("label"):
        name = elem.findtext("name")
        if name and name not in labels:
            labels[name] = CvatLabel(name, elem.findtext("type") or "any",
                                     elem.findtext("color") or "")
    return list(labels.values())


def read_cvat_xml(path: str | Path) -> CvatAnnotations:
    """Read a "CVAT for images 1.1" ``annotations.xml``.

    Shapes with a label the meta block does not declare, and shape kinds this project has
    no use for (ellipse, cuboid, skeleton, tracks), are left out with one counted warning.
    Malformed geometry raises ``ValueError`` naming the image and the shape.
    """
    root = ET.parse(path).getroot()
    if root.tag != "annotations":
        raise ValueError(f"{path}: root element is <{root.tag}>, expected <annotations>")
    meta = root.find("meta")
    labels = _meta_labels(meta)
    known = {label.name for label in labels}
    ignored: Counter = Counter()
    images = []
    for elem in root.findall("image"):
        name = elem.get("name", "?")
        try:
            image = CvatImage(int(_required(elem, "id")), _required(elem, "name"),
                              int(_required(elem, "width")), int(_required(elem, "height")),
                              sha256=elem.get("sha256") or None)
        except ValueError as err:
            raise ValueError(f"{path}: image {name!r}: {err}") from None
        for index, child in enumerate(elem):
            if child.tag not in SHAPE_KINDS:
                ignored[f"unsupported shape <{child.tag}>"] += 1
                continue
            try:
                shape = _parse_shape(child)
            except ValueError as err:
                raise ValueError(
                    f"{path}: image {image.name!r} (id {image.id}), shape #{index} "
                    f"<{child.tag} label={child.get('label')!r}>: {err}"
                ) from None
            if known and shape.label not in known:
                ignored[f"unknown label {shape.label!r}"] += 1
                continue
            image.shapes.append(shape)
        images.append(image)
    tracks = len(root.findall("track"))
    if tracks:
        ignored["<track> (video export)"] += tracks
    if ignored:
        details = ", ".join(f"{n} x {why}" for why, n in sorted(ignored.items()))
        warnings.warn(f"{path}: ignored {sum(ignored.values())} shapes: {details}",
                      stacklevel=2)
    return CvatAnnotations(labels, images, _meta_task(meta), ignored)


# --------------------------------------------------------------------------- writer


class _Writer:
    """Indents exactly like CVAT's XmlAnnotationWriter (two spaces, open/close pairs)."""

    def __init__(self, stream) -> None:
        self.xml = XMLGenerator(stream, "utf-8")
        self.level = 0

    def indent(self) -> None:
        self.xml.ignorableWhitespace("\n" + "  " * self.level)

    def open(self, tag: str, attrs: dict[str, str] | None = None) -> None:
        self.indent()
        self.xml.startElement(tag, attrs or {})
        self.level += 1

    def close(self, tag: str) -> None:
        self.level -= 1
        self.indent()
        self.xml.endElement(tag)

    def text(self, tag: str, value: str, attrs: dict[str, str] | None = None) -> None:
        self.indent()
        self.xml.startElement(tag, attrs or {})
        self.xml.characters(value)
        self.xml.endElement(tag)

    def tree(self, items) -> None:
        """A meta block: (tag, str) leaves, (tag, list-of-pairs) nodes."""
        for tag, value in items:
            if isinstance(value, str):
                self.text(tag, value)
            else:
                self.open(tag)
                self.tree(value)
                self.close(tag)


def _fmt(v: float) -> str:
    return f"{float(v):.2f}"


def _shape_attrs(shape: CvatShape) -> OrderedDict:
    attrs = OrderedDict([("label", shape.label), ("source", shape.source)])
    if shape.kind != "tag":
        attrs["occluded"] = str(int(shape.occluded))
    if shape.kind == "box":
        (x1, y1), (x2, y2) = np.asarray(shape.points, dtype=float).reshape(2, 2)
        attrs.update(xtl=_fmt(x1), ytl=_fmt(y1), xbr=_fmt(x2), ybr=_fmt(y2))
    elif shape.kind == "mask":
        if shape.mask is None or shape.box is None:
            raise ValueError(f"mask shape {shape.label!r} needs mask and box")
        height, width = shape.mask.shape
        attrs["rle"] = ", ".join(str(v) for v in mask_to_cvat_rle(shape.mask))
        attrs.update(left=str(int(shape.box[0])), top=str(int(shape.box[1])),
                     width=str(width), height=str(height))
    elif shape.kind in _MIN_POINTS:
        pts = np.asarray(shape.points, dtype=float).reshape(-1, 2)
        attrs["points"] = ";".join(f"{_fmt(x)},{_fmt(y)}" for x, y in pts)
    if shape.kind != "tag":
        attrs["z_order"] = str(int(shape.z_order))
    if shape.group_id:
        attrs["group_id"] = str(int(shape.group_id))
    return attrs


def _meta_items(annotations: CvatAnnotations) -> list:
    now = str(datetime.now(UTC))
    meta = annotations.meta
    size = len(annotations.images)
    stop = str(max(size - 1, 0))

    def get(key: str, default: str) -> str:
        return meta.get(key, default)

    labels = [
        ("label", [("name", lab.name), ("color", lab.color), ("type", lab.type),
                   ("attributes", [])])
        for lab in annotations.labels
    ]
    task = [
        ("id", get("id", "0")), ("name", get("name", "defectcam")), ("size", str(size)),
        ("mode", "annotation"), ("overlap", get("overlap", "0")),
        ("bugtracker", get("bugtracker", "")), ("created", get("created", now)),
        ("updated", get("updated", now)), ("subset", get("subset", "default")),
        ("start_frame", "0"), ("stop_frame", stop), ("frame_filter", get("frame_filter", "")),
        ("segments", [("segment", [("id", "0"), ("start", "0"), ("stop", stop),
                                   ("url", "")])]),
        ("owner", get("owner", "")), ("assignee", get("assignee", "")), ("labels", labels),
    ]
    return [("task", task), ("dumped", now)]


def write_cvat_xml(annotations: CvatAnnotations, path: str | Path) -> Path:
    """Write ``annotations`` the way CVAT exports "CVAT for images 1.1".

    ``<annotations>``, ``<version>1.1</version>``, a ``<meta>`` block with the task and its
    labels, then one ``<image id name width height>`` per frame holding shapes. Shape
    attributes come in CVAT's order: ``label, source, occluded``, the geometry (``points`` |
    ``xtl ytl xbr ybr`` | ``rle left top width height``), ``z_order``, optional
    ``group_id``; ``<attribute name=..>value</attribute>`` children follow. A mask's ``rle``
    holds run lengths over its box (``defectcam.core.cvat``).

    Args:
        annotations: what to write.
        path: the XML file (its folder is created).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as stream:
        w = _Writer(stream)
        w.xml.startDocument()
        w.xml.startElement("annotations", {})
        w.level = 1
        w.text("version", "1.1")
        w.open("meta")
        w.tree(_meta_items(annotations))
        w.close("meta")
        for image in annotations.images:
            attrs = OrderedDict([("id", str(image.id)), ("name", image.name),
                                 ("width", str(image.width)), ("height", str(image.height))])
            if image.sha256:
                attrs["sha256"] = image.sha256
            w.open("image", attrs)
            for shape in image.shapes:
                w.open(shape.kind, _shape_attrs(shape))
                for name, value in shape.attributes.items():
                    w.text("attribute", value, {"name": name})
                w.close(shape.kind)
            w.close("image")
        w.close("annotations")
        w.xml.ignorableWhitespace("\n")
        w.xml.endDocument()
    return path


# --------------------------------------------------------------------------- clicks


def _inner_point(mask: np.ndarray, left: float, top: float) -> np.ndarray:
    """The pixel deepest inside ``mask`` (where an annotator would click), as x,y."""
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([[left + col - 1, top + row - 1]], dtype=np.float64)


def shape_clicks(shape: CvatShape) -> np.ndarray:
    """Clicks a shape stands for: every point of a ``points`` shape, one inner point of
    a polygon, mask or box (accepted or drawn defects count as clicks, method.md s.7)."""
    if shape.kind == "points":
        return np.asarray(shape.points, dtype=np.float64).reshape(-1, 2)
    if shape.kind == "box":
        return np.asarray(shape.points, dtype=np.float64).reshape(2, 2).mean(0, keepdims=True)
    if shape.kind == "mask" and shape.mask is not None and shape.box is not None:
        if not shape.mask.any():
            return np.zeros((0, 2))
        return _inner_point(shape.mask, shape.box[0], shape.box[1])
    if shape.kind == "polygon":
        pts = np.asarray(shape.points, dtype=np.float64)
        x0, y0 = np.floor(pts.min(0))
        x1, y1 = np.ceil(pts.max(0))
        canvas = np.zeros((int(y1 - y0) + 1, int(x1 - x0) + 1), np.uint8)
        cv2.fillPoly(canvas, [np.round(pts - (x0, y0)).astype(np.int32)], 1)
        return _inner_point(canvas.astype(bool), x0, y0)
    return np.zeros((0, 2))


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


def _inside_image(pts: np.ndarray, image: CvatImage) -> tuple[np.ndarray, int]:
    """Clicks inside the image (a click on the far edge still belongs to the last pixel) and
    how many were outside."""
    inside = ((pts[:, 0] >= 0) & (pts[:, 0] <= image.width)
              & (pts[:, 1] >= 0) & (pts[:, 1] <= image.height))
    pts = pts[inside]
    pts[:, 0] = np.minimum(pts[:, 0], image.width - 1e-3)
    pts[:, 1] = np.minimum(pts[:, 1], image.height - 1e-3)
    return pts, int((~inside).sum())


def _clear_of(points: np.ndarray, image: CvatImage, defect: str, positives: np.ndarray,
              reach: float) -> np.ndarray:
    """Which ``points`` have no ``defect`` click and no ``defect`` region within ``reach`` px
    (a square window: training crops are square)."""
    keep = np.ones(len(points), dtype=bool)
    if not len(points):
        return keep
    if len(positives):
        gap = np.abs(points[:, None, :] - positives[None, :, :]).max(axis=2)
        keep &= (gap > reach).all(axis=1)
    regions = [shape_region(s, image.height, image.width) for s in image.shapes
               if s.label == defect]
    regions = [r for r in regions if r is not None]
    if regions:
        union = np.any(regions, axis=0)
        r = int(np.ceil(reach))
        for k, (x, y) in enumerate(points):
            if keep[k]:
                xi, yi = int(x), int(y)
                keep[k] = not union[max(0, yi - r) : yi + r + 1, max(0, xi - r) : xi + r + 1].any()
    return keep


def clicks_from_annotations(
    annotations: CvatAnnotations,
    defect: str,
    negative_label: str = NEGATIVE_LABEL,
    *,
    include_shapes: bool = True,
    sources: tuple[str, ...] | None = None,
    other_labels: Sequence[str] = (),
    clearance: float | Callable[[int, int], float] = 0.0,
) -> list[ImageClicks]:
    """Positive (``defect``) and negative (``negative_label``) clicks per image.

    ``include_shapes``: polygons, masks and boxes also give one click each (not only
    ``points``). ``sources``: keep only shapes whose ``source`` is listed. A
    ``negative_label`` click with a ``for`` attribute (:data:`NEGATIVE_FOR`) is a negative
    for that defect only. ``other_labels``:
    the clicks of these labels (other defects) are negatives too where they apply: unless a
    ``defect`` click or ``defect`` region lies within ``clearance`` px of them (a number, or
    a function of the image's width and height: the reach of a negative training crop),
    since "this is rust" says "this is not spalling" only where no spalling is near. Images
    holding no click of either kind are left out. Clicks outside the image are dropped with
    a warning; clicks on the border are clamped inside.
    """
    if defect == negative_label or defect in other_labels:
        raise ValueError(f"defect {defect!r} is also a negative label")
    names = set(annotations.label_names)
    if names and defect not in names:
        warnings.warn(f"label {defect!r} is not declared in this export ({sorted(names)})",
                      stacklevel=2)
    outside = 0
    result = []
    for image in annotations.images:
        found: dict[str, list[np.ndarray]] = {defect: [], negative_label: [], "": []}
        for shape in image.shapes:
            group = "" if shape.label in other_labels else shape.label
            if group not in found or (sources and shape.source not in sources):
                continue
            if group == negative_label and shape.attributes.get(NEGATIVE_FOR, defect) != defect:
                continue  # another defect's negative only
            if shape.kind != "points" and not include_shapes:
                continue
            found[group].append(shape_clicks(shape))
        arrays = {}
        for group, pts in found.items():
            arrays[group], lost = _inside_image(
                np.concatenate(pts) if pts else np.zeros((0, 2)), image)
            outside += lost
        reach = clearance(image.width, image.height) if callable(clearance) else clearance
        cross = arrays[""][_clear_of(arrays[""], image, defect, arrays[defect], reach)]
        negatives = np.concatenate([arrays[negative_label], cross])
        if not len(arrays[defect]) and not len(negatives):
            continue
        result.append(ImageClicks(image.name, image.width, image.height, arrays[defect],
                                  negatives, image.id, image.sha256, len(cross)))
    if outside:
        warnings.warn(f"dropped {outside} clicks outside their image", stacklevel=2)
    return result


LABEL_COLORS = {"crack": "#fa3253", "spalling": "#33ddff", "rust": "#ff6a4d"}


def defect_labels(negative_label: str = NEGATIVE_LABEL) -> list[CvatLabel]:
    """The label set of a defectcam task: the defects and the negative label, as points."""
    return [CvatLabel(name, "points", LABEL_COLORS.get(name, "#83e070"))
            for name in (*DEFECTS, negative_label)]
