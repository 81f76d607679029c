"""The README's picture: shipped weights' proposals on the bundled validation photos.

    python scripts/readme_figure.py        # writes docs/img/proposals.png
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from defectcam.core.image_io import decode_image
from defectcam.core.overlay import draw_proposals, write_rgb
from defectcam.core.proposer import DefectProposer

REPO = Path(__file__).resolve().parents[1]
HEIGHT = 360


def main() -> None:
    proposer = DefectProposer.from_weights(REPO / "weights")
    panels = []
    for path in sorted((REPO / "samples").glob("*.jpg")):
        image = decode_image(path.read_bytes()).rgb
        label = path.name.split("_")[0]  # each sample shows one defect type
        proposals = proposer.propose(image, labels=[label])
        panel = draw_proposals(image, proposals)
        width = round(panel.shape[1] * HEIGHT / panel.shape[0])
        panels.append(cv2.resize(panel, (width, HEIGHT), interpolation=cv2.INTER_AREA))
        print(f"{path.name}: {len(proposals)} {label} proposals")
    gap = np.full((HEIGHT, 8, 3), 255, np.uint8)
    row = [p for panel in panels for p in (panel, gap)][:-1]
    out = REPO / "docs" / "img" / "proposals.png"
    write_rgb(out, np.concatenate(row, axis=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
