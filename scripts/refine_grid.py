"""Post-processing grid on cached maps: how the model card's refinement settings were chosen.

    python scripts/refine_grid.py crack --iterations 0 --limit 60 --cache runs/maps-crack

Computes each validation image's normalised map once (cached as .npz), then measures every
(CAM threshold, evidence, dilation, black-hat kernel, k) combination of the grid below with
the evaluation's own metrics (``match_instances``, ``summarize``: pixel IoU, tolerant pixel
IoU, instance recall, false positives per image, Eq. 3 and edit-cost savings), next to the
learning-free baseline. Proposals get the confidence the weights ask for and are filtered at
CVAT's default threshold. The chosen row goes into the weights' JSON sidecar; the final
figures come from ``defectcam evaluate`` (a different command, the same code).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from defectcam.core.options import DEFAULT_MIN_CONFIDENCE
from defectcam.core.postprocess import binarize_map, close_mask, mask_to_proposals
from defectcam.core.proposer import DefectProposer
from defectcam.core.refine import Refinement
from defectcam.evaluation.baselines import baseline_proposals
from defectcam.evaluation.metrics import MatchRule, match_instances, summarize
from defectcam.evaluation.run import folder_items, load_item

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = {"crack": "dark-lines", "rust": "rust-colour", "spalling": "rough-dark"}
GRID = {  # (cam thresholds, dilations, kernels, k values) per evidence
    "dark-lines": ((0.2, 0.3, 0.4), (16,), (15, 21), (1.5, 1.75)),
    "rust-colour": ((0.1, 0.2, 0.3), (0, 16), (15,), (50, 70)),
    "rough-dark": ((0.1, 0.2, 0.3), (0, 16), (15,), (0.5, 1.0)),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("defect", choices=sorted(EVIDENCE))
    p.add_argument("--weights", type=Path, default=REPO / "weights")
    p.add_argument("--iterations", type=int, default=0)
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--max-side", type=int, default=None)
    p.add_argument("--cache", type=Path, required=True, help="folder for the cached maps")
    args = p.parse_args()
    proposer = DefectProposer.from_weights(args.weights)
    meta = proposer.predictors[args.defect].metadata
    args.cache.mkdir(parents=True, exist_ok=True)
    loaded = []
    for item in folder_items([args.defect], "val", limit=args.limit, seed=0):
        data = load_item(item, args.max_side)
        cached = args.cache / (Path(item.image_id).stem + ".npz")
        if not cached.is_file():
            result = proposer.propose_detailed(data.image, args.iterations, labels=[args.defect])
            np.savez_compressed(cached, cam=result.maps[args.defect].cam_map)
        loaded.append((item, data, np.load(cached)["cam"]))
    print(f"{len(loaded)} {args.defect} validation images, T = {args.iterations}")

    def measure(name: str, propose) -> None:
        matches = [match_instances(propose(data.image, cam), data.truth, MatchRule(),
                                   args.defect, item.image_id) for item, data, cam in loaded]
        s = summarize(matches).per_defect[args.defect]
        print(f"{name:34s} IoU {s.pixels.iou:.3f} tolerant {s.pixels.iou_tolerant:.3f} "
              f"recall {s.instance_recall:.2f} FP/image {s.n_false_positives / s.n_images:.2f} "
              f"Eq.3 {s.time.eq3.saving:.3f} edit-cost {s.time.edit_cost.saving:.3f}",
              flush=True)

    measure("baseline", lambda image, cam: baseline_proposals(
        image, args.defect, meta.closing_size, meta.min_area))
    evidence = EVIDENCE[args.defect]
    for t in (0.1, 0.2, 0.3, 0.4, 0.5):
        measure(f"t={t} map alone", lambda image, cam, t=t: [
            q for q in mask_to_proposals(close_mask(binarize_map(cam, t), meta.closing_size),
                                         args.defect, meta.min_area, score_map=cam)
            if q.confidence >= DEFAULT_MIN_CONFIDENCE])
    for t, dilation, kernel, k in itertools.product(*GRID[evidence]):
        refinement = Refinement(evidence, dilation, kernel, k)

        def propose(image, cam, t=t, refinement=refinement):
            binary = close_mask(refinement.apply(binarize_map(cam, t), image), meta.closing_size)
            return [q for q in mask_to_proposals(binary, args.defect, meta.min_area,
                                                 score_map=cam)
                    if q.confidence >= DEFAULT_MIN_CONFIDENCE]

        measure(f"t={t} {evidence} d={dilation} kernel={kernel} k={k}", propose)


if __name__ == "__main__":
    main()
