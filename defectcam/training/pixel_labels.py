"""Pixel labels of the second stage and how pseudo-masks are made: light (no torch), so that
command-line help can show their defaults."""

from __future__ import annotations

from dataclasses import dataclass

BACKGROUND, DEFECT, UNSURE = 0, 1, 255


@dataclass(frozen=True)
class PseudoMaskSettings:
    """How a map becomes pixel labels.

    iterations: AdvCAM steps T (offline, where time is cheap; the request path keeps its own).
    flips: also run the horizontally flipped image and average the two maps.
    background_below: map values below this, farther than ``margin`` px from a defect, are
        background.
    margin: px around a defect region left unsure (its outline is the least certain part).
    click_radius: px around a positive click that a defect component must reach to count
        (others stay unsure), and the radius of the background disc of a negative click.
    """

    iterations: int = 4
    flips: bool = True
    background_below: float = 0.05
    margin: int = 6
    click_radius: int = 24
