"""The README's picture: what the quick start's ``defectcam propose samples/`` answers.

    python scripts/readme_figure.py        # writes docs/img/proposals.png

Every classifier runs on every photo with the shipped defaults (each defect's recommended
AdvCAM steps, CVAT's default confidence threshold), as the CVAT function does on a frame:
a crack proposal on the rust photo is what an annotator would have to delete. One legend
band above the three photos names the defects drawn.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from defectcam.core.image_io import decode_image
from defectcam.core.options import DEFAULT_MIN_CONFIDENCE
from defectcam.core.overlay import draw_proposals, legend_band, write_rgb
from defectcam.core.proposer import DefectProposer

REPO = Path(__file__).resolve().parents[1]
HEIGHT = 360


def main() -> None:
    proposer = DefectProposer.from_weights(REPO / "weights")
    panels = []
    drawn: set[str] = set()
    for path in sorted((REPO / "samples").glob("*.jpg")):
        image = decode_image(path.read_bytes()).rgb
        proposals = proposer.propose(image, min_confidence=DEFAULT_MIN_CONFIDENCE)
        panel = draw_proposals(image, proposals, legend=False)
        drawn |= {p.label for p in proposals}
        width = round(panel.shape[1] * HEIGHT / panel.shape[0])
        panels.append(cv2.resize(panel, (width, HEIGHT), interpolation=cv2.INTER_AREA))
        counts = {lab: sum(p.label == lab for p in proposals) for lab in proposer.labels}
        print(f"{path.name}: " + ", ".join(f"{n} {lab}" for lab, n in counts.items()))
    gap = np.full((HEIGHT, 8, 3), 255, np.uint8)
    row = [p for panel in panels for p in (panel, gap)][:-1]
    out = REPO / "docs" / "img" / "proposals.png"
    figure = np.concatenate(row, axis=1)
    legend = legend_band([lab for lab in proposer.labels if lab in drawn], figure.shape[1])
    write_rgb(out, np.concatenate([legend, figure], axis=0))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
