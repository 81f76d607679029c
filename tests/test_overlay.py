"""core/overlay.py: every proposal stays visible (per-defect fills, outlines over every fill)
and the legend sits beside the photo, never on it."""

from __future__ import annotations

import numpy as np
import pytest

from defectcam.core.overlay import DEFECT_COLORS, draw_proposals, legend_band
from defectcam.core.postprocess import Proposal, mask_to_proposals
from tests.helpers import concrete_texture

SIDE = 224  # a small photo: the legend must fit beside it, not on it


def _photo() -> np.ndarray:
    return concrete_texture(SIDE, SIDE, np.random.default_rng(3))


def _square(label: str, x1: int, y1: int, x2: int, y2: int) -> Proposal:
    binary = np.zeros((SIDE, SIDE), bool)
    binary[y1:y2, x1:x2] = True
    (proposal,) = mask_to_proposals(binary, label, min_area=1)
    return proposal


def test_the_legend_is_beside_the_photo_on_a_224_px_photo() -> None:
    """Proposals in the top-left corner, where the legend used to be drawn: the photo comes
    back whole below the legend band, and the band names every defect drawn."""
    photo = _photo()
    proposals = [_square("crack", 2, 2, 40, 20), _square("spalling", 2, 24, 60, 50),
                 _square("rust", 150, 150, 200, 200)]
    out = draw_proposals(photo, proposals)
    band = out.shape[0] - SIDE
    assert out.shape[1:] == photo.shape[1:] and band > 0
    drawn = out[band:]
    untouched = np.ones((SIDE, SIDE), bool)
    for p in proposals:  # the proposals and their outlines (1 px wide here) are drawn on
        x1, y1, x2, y2 = p.box
        untouched[max(y1 - 1, 0):y2 + 2, max(x1 - 1, 0):x2 + 2] = False
    assert np.array_equal(drawn[untouched], photo[untouched])
    legend = out[:band].reshape(-1, 3)
    for label in ("crack", "spalling", "rust"):  # each defect's swatch is in the band
        assert (legend == DEFECT_COLORS[label]).all(axis=1).any(), label


def test_no_proposals_no_band() -> None:
    photo = _photo()
    assert np.array_equal(draw_proposals(photo, []), photo)
    assert draw_proposals(photo, [_square("crack", 5, 5, 30, 30)], legend=False).shape == \
        photo.shape


@pytest.mark.parametrize("width", [SIDE, 64])
def test_the_legend_wraps_within_the_photo_width(width: int) -> None:
    band = legend_band(["crack", "spalling", "rust"], width)
    assert band.shape[1] == width
    one_row = legend_band(["crack"], width).shape[0]
    if width == 64:  # three names do not fit on one row of 64 px
        assert band.shape[0] > one_row


def test_overlapping_defects_both_show_and_outlines_are_over_fills() -> None:
    """A rust proposal under a spalling one (the date stamp of the README's figure): the
    overlap mixes both hues instead of showing spalling's alone, and rust's outline inside
    spalling's fill keeps rust's colour."""
    photo = np.full((SIDE, SIDE, 3), 128, np.uint8)
    rust = _square("rust", 60, 60, 120, 120)
    spalling = _square("spalling", 40, 40, 160, 160)
    out = draw_proposals(photo, [rust, spalling], legend=False)
    spalling_only = draw_proposals(photo, [spalling], legend=False)
    inside_both = (90, 90)
    assert not np.array_equal(out[inside_both], spalling_only[inside_both])
    assert np.array_equal(out[60, 90], DEFECT_COLORS["rust"])  # rust's top edge
    for order in ([rust, spalling], [spalling, rust]):  # the list's order does not matter
        assert np.array_equal(draw_proposals(photo, order, legend=False), out)
