"""AdvCAM: anti-adversarial climbing (Lee, Kim, Yoon, CVPR 2021), for one binary logit.

Each step moves the input *towards* a higher defect logit, normalised per tile
(``g / max|g|``), clamped to the original input's range; the CAMs of all steps are summed,
so the map grows over the whole defect instead of its most discriminative pixels. A
regulariser keeps pixels that are already salient from growing further (which would only
sharpen the peak). Only the climb needs gradients; T = 0 is plain (free) Grad-CAM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from defectcam.core.model import DefectClassifier

_EPS = 1e-12


@dataclass(frozen=True)
class AdvCAMSettings:
    """Climbing parameters.

    iterations: T, the number of climbing steps (official AdvCAM: 27; here 2 by default,
        which keeps a 5K image inside CVAT's timeout). 0 means plain Grad-CAM.
    xi: step size after per-tile gradient normalisation (official: 0.08).
    tau: a pixel is "salient" when its CAM exceeds tau times the tile's peak (official: 0.5).
    lam: weight of the regulariser ``mean(M * |cam - cam0|)`` (a mean over pixels, so its
        scale does not depend on the tile size; the official 7 weighs a stride-16 sum).
    """

    iterations: int = 2
    xi: float = 0.08
    tau: float = 0.5
    lam: float = 7.0

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.xi < 0 or self.lam < 0 or not 0 <= self.tau <= 1:
            raise ValueError(f"invalid AdvCAM settings {self}")


@dataclass
class ClimbResult:
    """``cam``: (B, H, W) sum of the T+1 CAMs; ``logit``: (B,) logit of the original input;
    ``climbed_logit``: (B,) logit after the last step (equals ``logit`` for T = 0)."""

    cam: torch.Tensor
    logit: torch.Tensor
    climbed_logit: torch.Tensor


def advcam_climb(
    model: DefectClassifier, x0: torch.Tensor, settings: AdvCAMSettings = AdvCAMSettings()
) -> ClimbResult:
    """Run T climbing steps on a batch of normalised tiles ``x0`` (B, 3, H, W).

    Cost: T forward+backward passes plus one forward (for T = 0: one forward, no gradients).
    """
    if settings.iterations == 0:
        with torch.no_grad():
            out = model(x0)
        return ClimbResult(cam=out.cam, logit=out.logit, climbed_logit=out.logit)

    # Clamp to the original input's range, per tile (not an epsilon ball): the climb may
    # change any pixel, but never leave the range of values the tile really has.
    low = x0.detach().amin(dim=(1, 2, 3), keepdim=True)
    high = x0.detach().amax(dim=(1, 2, 3), keepdim=True)
    x = x0.detach()
    cam0 = acc = logit0 = None
    for _ in range(settings.iterations):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = model(x)
            cam = out.cam.float()
            if cam0 is None:
                # The first forward is on x0: its CAM is the reference and the first term.
                cam0, logit0 = cam.detach(), out.logit.detach().float()
                acc = cam0.clone()
            else:
                acc += cam.detach()
            peak = cam.detach().amax(dim=(1, 2), keepdim=True).clamp_min(_EPS)
            salient = (cam.detach() / peak > settings.tau).to(cam.dtype)  # fresh each step
            regulariser = (salient * (cam - cam0).abs()).mean(dim=(1, 2))
            objective = (out.logit.float() - settings.lam * regulariser).sum()
            (grad,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            scale = grad.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(_EPS)
            x = torch.minimum(torch.maximum(x + settings.xi * grad / scale, low), high)
    with torch.no_grad():
        out = model(x)
        acc += out.cam.float()
    return ClimbResult(cam=acc, logit=logit0, climbed_logit=out.logit.float())
