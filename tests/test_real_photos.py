"""Real inspection photos from ../shared/data through tiling, end to end (validity only:
the classifiers here are untrained, so what they find is not asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from defectcam.core.cvat import decode_cvat_mask, proposals_to_cvat_shapes
from defectcam.core.image_io import decode_image
from defectcam.core.proposer import DefectProposer
from tests.helpers import save_untrained

PHOTOS = {
    "crack": "crack/deepcrack/images/11116-3.jpg",  # 544x384
    "spalling": "concrete/phinet/images/2022_1102.jpg",  # 224x224
    "rust": "rust/corrosion/images/148.jpg",  # 1600x1200, 1.9 MP
}


@pytest.fixture(scope="module")
def proposer(tmp_path_factory):
    weights = save_untrained(tmp_path_factory.mktemp("weights"), tile_size=512, min_area=16)
    return DefectProposer.from_weights(weights, device="cpu")


@pytest.mark.parametrize("defect", list(PHOTOS))
def test_real_photo_through_tiles(shared_data, proposer, defect):
    image = decode_image((shared_data / PHOTOS[defect]).read_bytes()).rgb
    height, width = image.shape[:2]
    iterations = 0 if defect == "rust" else 1
    seen = []
    result = proposer.propose_detailed(image, iterations=iterations, labels=[defect],
                                       cam_threshold=0.3, progress=seen.append)
    defect_map = result.maps[defect]
    assert sum(seen) == len(defect_map.grid)  # progress reports every tile once
    if defect == "rust":
        assert len(defect_map.grid) == 4 * 3  # 1600x1200 in 512-px tiles, 128 overlap
    assert defect_map.cam_map.shape == (height, width)
    assert defect_map.cam_map.dtype == np.float32
    assert 0.0 <= defect_map.cam_map.min() and defect_map.cam_map.max() <= 1.0 + 1e-6
    assert np.isfinite(defect_map.cam_map).all()
    assert ((defect_map.tile_probability >= 0) & (defect_map.tile_probability <= 1)).all()
    union = np.zeros((height, width), bool)
    for shape, p in zip(proposals_to_cvat_shapes(result.proposals, "mask"), result.proposals,
                        strict=True):
        assert p.label == defect and p.area >= 16
        pts = np.asarray(shape["points"]).reshape(-1, 2)
        assert len(pts) >= 3
        assert (pts[:, 0] >= 0).all() and (pts[:, 0] <= width - 1).all()
        assert (pts[:, 1] >= 0).all() and (pts[:, 1] <= height - 1).all()
        decoded = decode_cvat_mask(shape["mask"], height, width)
        assert np.array_equal(decoded, p.full_mask(height, width))
        assert not (union & decoded).any(), "components must not overlap"
        union |= decoded
    # Every proposal pixel is above the CAM threshold or was joined by closing next to one.
    if result.proposals:
        assert (defect_map.cam_map[union] > 0.3).mean() > 0.5
