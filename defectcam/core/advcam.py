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


def _full(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least float32: autocast's bf16 / fp16 outputs are summed and compared in
    float32, float64 (tests) stays float64."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


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
    ``climbed_logit``: (B,) logit after the last step (equals ``logit`` where no climb ran);
    ``climbed``: (B,) bool, the tiles that were climbed (all for T > 0 without screening)."""

    cam: torch.Tensor
    logit: torch.Tensor
    climbed_logit: torch.Tensor
    climbed: torch.Tensor


def advcam_climb(
    model: DefectClassifier,
    x0: torch.Tensor,
    settings: AdvCAMSettings = AdvCAMSettings(),
    screen_threshold: float | None = None,
) -> ClimbResult:
    """Run T climbing steps on a batch of normalised tiles ``x0`` (B, 3, H, W).

    Cost: T forward+backward passes plus one forward (for T = 0: one forward, no gradients).
    ``screen_threshold``: tiles whose probability (sigmoid of the first logit) is below it
    are not climbed and keep their first CAM times T+1 (the scale of a climbed sum). The
    first step's forward pass is the screening pass: when every tile of the batch passes,
    nothing is computed twice; otherwise the passing tiles are climbed on their own (their
    first forward again: a backward through the whole batch's graph would cost more).
    """
    if settings.iterations == 0:
        with torch.no_grad():
            out = model(x0)
        none = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
        return ClimbResult(cam=_full(out.cam), logit=_full(out.logit),
                           climbed_logit=_full(out.logit), climbed=none)

    # Clamp to the original input's range, per tile (not an epsilon ball): the climb may
    # change any pixel, but never leave the range of values the tile really has.
    low = x0.detach().amin(dim=(1, 2, 3), keepdim=True)
    high = x0.detach().amax(dim=(1, 2, 3), keepdim=True)
    x = x0.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
    # The first forward is on x0: its CAM is the reference and the first term.
    cam0, logit0 = _full(out.cam.detach()), _full(out.logit.detach())
    if screen_threshold is not None:
        climb = torch.sigmoid(logit0) >= screen_threshold
        if not bool(climb.all()):
            del out  # frees the batch's graph before the passing tiles' climb
            return _climb_passing(model, x0, settings, climb, cam0, logit0)
    acc = cam0.clone()
    for step in range(settings.iterations):
        if step > 0:
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                out = model(x)
            acc += _full(out.cam.detach())
        with torch.enable_grad():
            cam = _full(out.cam)
            peak = cam.detach().amax(dim=(1, 2), keepdim=True).clamp_min(_EPS)
            salient = (cam.detach() / peak > settings.tau).to(cam.dtype)  # fresh each step
            regulariser = (salient * (cam - cam0).abs()).mean(dim=(1, 2))
            objective = (_full(out.logit) - settings.lam * regulariser).sum()
            (grad,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            scale = grad.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(_EPS)
            x = torch.minimum(torch.maximum(x + settings.xi * grad / scale, low), high)
    with torch.no_grad():
        out = model(x)
        acc += _full(out.cam)
    climbed = torch.ones(len(x0), dtype=torch.bool, device=x0.device)
    return ClimbResult(cam=acc, logit=logit0, climbed_logit=_full(out.logit), climbed=climbed)


def _climb_passing(model: DefectClassifier, x0: torch.Tensor, settings: AdvCAMSettings,
                   climb: torch.Tensor, cam0: torch.Tensor, logit0: torch.Tensor) -> ClimbResult:
    """A screened batch with tiles below the threshold: climb the others on their own."""
    cam = cam0 * (settings.iterations + 1)
    climbed_logit = logit0.clone()
    if bool(climb.any()):
        passing = advcam_climb(model, x0[climb], settings)
        cam[climb] = passing.cam
        climbed_logit[climb] = passing.climbed_logit
    return ClimbResult(cam=cam, logit=logit0, climbed_logit=climbed_logit, climbed=climb)
