"""Maps -> proposals: components, area filter, closing, polygons and CVAT masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from defectcam.core.cvat import (
    decode_cvat_mask,
    encode_cvat_mask,
    proposal_to_cvat_shape,
    proposals_to_cvat_shapes,
)
from defectcam.core.postprocess import (
    binarize_map,
    close_mask,
    mask_to_polygon,
    mask_to_proposals,
    polygon_to_mask,
)


def synthetic_map() -> np.ndarray:
    cam = np.zeros((120, 160), np.float32)
    cv2.circle(cam, (30, 30), 12, 0.9, -1)  # blob 1
    cv2.rectangle(cam, (70, 20), (110, 45), 0.5, -1)  # blob 2
    cv2.ellipse(cam, (120, 90), (25, 10), 30, 0, 360, 0.3, -1)  # blob 3
    cam[100:103, 10:13] = 0.8  # 9-pixel speck: below min_area
    cam[60, 60] = 0.05  # below the threshold
    return cam


def test_components_area_filter_and_order():
    cam = synthetic_map()
    props = mask_to_proposals(binarize_map(cam, 0.1), "rust", min_area=20, score_map=cam)
    assert len(props) == 3
    assert [p.area for p in props] == sorted((p.area for p in props), reverse=True)
    assert {round(p.peak, 2) for p in props} == {0.9, 0.5, 0.3}
    with_specks = mask_to_proposals(binarize_map(cam, 0.1), "rust", min_area=1)
    assert len(with_specks) == 4


def test_closing_joins_a_broken_line():
    mask = np.zeros((40, 100), bool)
    mask[19:22, 10:45] = True  # a crack's CAM: a few pixels wide ...
    mask[19:22, 48:90] = True  # ... broken by a 3-pixel gap, as sparse CAMs leave
    assert len(mask_to_proposals(mask, "crack", min_area=1)) == 2
    closed = close_mask(mask, 5)
    props = mask_to_proposals(closed, "crack", min_area=1)
    assert len(props) == 1
    assert props[0].mask.sum() >= mask.sum()
    # Closing must not eat a component touching the border.
    edge = np.zeros((20, 20), bool)
    edge[:, :3] = True
    assert close_mask(edge, 5)[:, :3].all()


def test_mask_and_polygon_round_trip_to_the_same_pixels():
    rng = np.random.default_rng(1)
    for _ in range(10):
        mask = np.zeros((64, 80), np.uint8)
        pts = rng.integers(5, 60, (6, 2)).astype(np.int32)
        cv2.fillPoly(mask, [cv2.convexHull(pts)], 1)
        props = mask_to_proposals(mask.astype(bool), "spalling", min_area=1,
                                  polygon_tolerance=0)
        assert len(props) == 1
        p = props[0]
        shape = proposal_to_cvat_shape(p, "mask")
        # CVAT mask format: crop values then the inclusive box.
        assert np.array_equal(decode_cvat_mask(shape["mask"], 64, 80), mask.astype(bool))
        # Unsimplified polygon rasterises back to exactly the component.
        assert np.array_equal(polygon_to_mask(p.polygon, 64, 80), mask.astype(bool))


def test_masks_keep_holes_and_polygons_stay_valid():
    mask = np.zeros((50, 50), bool)
    mask[10:40, 10:40] = True
    mask[20:30, 20:30] = False  # a hole, e.g. sound concrete inside a spall ring
    (p,) = mask_to_proposals(mask, "spalling", min_area=1)
    assert p.area == 900 - 100
    decoded = decode_cvat_mask(encode_cvat_mask(p.mask, p.box), 50, 50)
    assert not decoded[25, 25] and decoded[15, 15]
    assert p.box == (10, 10, 39, 39)


def test_thin_crack_polygon_is_valid_and_close():
    mask = np.zeros((60, 200), np.uint8)
    cv2.line(mask, (5, 10), (190, 50), 1, 1)  # one pixel wide, diagonal
    (p,) = mask_to_proposals(mask.astype(bool), "crack", min_area=1)
    assert len(p.polygon) >= 3 and len(np.unique(p.polygon, axis=0)) >= 3
    raster = polygon_to_mask(p.polygon, 60, 200)
    iou = (raster & mask.astype(bool)).sum() / (raster | mask.astype(bool)).sum()
    assert iou > 0.8, "light simplification must keep a thin crack's shape"
    # A single pixel and a straight 1-px line still give 3+ distinct points inside the image.
    for pixels in ([(0, 0)], [(5, y) for y in range(3, 9)]):
        m = np.zeros((10, 10), bool)
        for x, y in pixels:
            m[y, x] = True
        (q,) = mask_to_proposals(m, "crack", min_area=1)
        assert len(np.unique(q.polygon, axis=0)) >= 3
        assert (q.polygon >= 0).all() and (q.polygon[:, 0] <= 9).all()


def test_cvat_shapes_follow_the_contract():
    cam = synthetic_map()
    props = mask_to_proposals(binarize_map(cam, 0.1), "rust", min_area=20, score_map=cam)
    for output in ("polygon", "mask"):
        for shape in proposals_to_cvat_shapes(props, output):
            assert shape["label"] == "rust" and shape["type"] == output
            pts = shape["points"]
            assert len(pts) % 2 == 0 and len(pts) >= 6
            assert all(isinstance(v, float) for v in pts)
            assert all(0 <= x <= 159 for x in pts[0::2]) and all(0 <= y <= 119 for y in pts[1::2])
            assert 0.0 <= float(shape["confidence"]) <= 1.0
            if output == "mask":
                x1, y1, x2, y2 = shape["mask"][-4:]
                assert len(shape["mask"]) - 4 == (x2 - x1 + 1) * (y2 - y1 + 1)
    with pytest.raises(ValueError, match="output must be one of"):
        proposal_to_cvat_shape(props[0], "box")


def test_mask_to_polygon_refuses_empty():
    with pytest.raises(ValueError, match="empty"):
        mask_to_polygon(np.zeros((5, 5), bool))
