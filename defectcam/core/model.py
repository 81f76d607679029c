"""The defect classifier: smp U-Net on two ResNet34 blocks + GAP/linear head on the decoder.

Because the head is global average pooling followed by one linear layer on the decoder output
A (C x H x W), Grad-CAM's channel weights are the head's weights divided by H*W. The CAM is
therefore a 1x1 convolution of A with those weights, computed in the same forward pass with
no backward (method.md section 3).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

ENCODER_NAME = "resnet34"
ENCODER_DEPTH = 3
DECODER_CHANNELS = (64, 32, 16)
#: Input height and width must be multiples of this (smp checks 2**encoder_depth).
INPUT_MULTIPLE = 2**ENCODER_DEPTH


@dataclass
class ClassifierOutput:
    """``logit``: (B,) one defect logit per image/tile.

    ``cam``: (B, H, W) the map the classifier serves, at input resolution: the Grad-CAM map
    ``ReLU(sum_k w_k A_k)`` (Grad-CAM times H*W, so that maps of tiles of different sizes stay
    comparable), or, for a classifier with a pixel head, that head's probability per pixel.

    ``pixel_logit``: (B, H, W) the pixel head's logits (``None`` without a pixel head).
    """

    logit: torch.Tensor
    cam: torch.Tensor
    pixel_logit: torch.Tensor | None = None


#: The maps a classifier can serve (``WeightsMetadata.serves``).
SERVED_MAPS = ("cam", "pixel")


class DefectClassifier(nn.Module):
    """Binary classifier for one defect type whose forward pass also yields its map.

    With ``pixel_head`` a 3x3 convolution on the same decoder output learns the defect per
    pixel (from pseudo-masks and annotated masks, the second stage of weak supervision) and
    its probability becomes the served map; the GAP/linear head keeps learning from clicks.
    """

    def __init__(self, pixel_head: bool = False) -> None:
        super().__init__()
        unet = smp.Unet(
            ENCODER_NAME,
            encoder_depth=ENCODER_DEPTH,
            decoder_channels=DECODER_CHANNELS,
            encoder_weights=None,  # nothing may be downloaded; ImageNet stats are hard-coded
            classes=1,
        )
        # Stride 1 in the first convolution: the decoder output has the input's resolution,
        # and fewer downsamplings give sharper, sparser CAMs (paper, Fig. 4).
        unet.encoder.conv1.stride = (1, 1)
        # encoder_depth=3 never runs layer3/layer4; dropping them keeps them out of the weights.
        del unet.encoder.layer3, unet.encoder.layer4
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        self.head = nn.Linear(DECODER_CHANNELS[-1], 1)
        self.pixel_head = (nn.Conv2d(DECODER_CHANNELS[-1], 1, kernel_size=3, padding=1)
                           if pixel_head else None)

    @property
    def serves(self) -> str:
        """Which map ``cam`` holds: ``"pixel"`` with a pixel head, else ``"cam"``."""
        return "cam" if self.pixel_head is None else "pixel"

    def decoder_features(self, x: torch.Tensor) -> torch.Tensor:
        """A: the decoder output (B, 16, H, W), on which both the logit and the CAM sit."""
        return self.decoder(self.encoder(x))

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        height, width = x.shape[-2:]
        if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
            raise ValueError(
                f"input {height}x{width} must have sides divisible by {INPUT_MULTIPLE}"
            )
        features = self.decoder_features(x)
        return self.head_outputs(features)

    def head_outputs(self, features: torch.Tensor) -> ClassifierOutput:
        logit = self.head(features.mean(dim=(2, 3))).squeeze(1)
        if self.pixel_head is not None:
            pixel_logit = self.pixel_head(features).squeeze(1)
            return ClassifierOutput(logit=logit, cam=torch.sigmoid(pixel_logit),
                                    pixel_logit=pixel_logit)
        weight = self.head.weight[:, :, None, None]  # (1, C, 1, 1)
        cam = F.relu(F.conv2d(features, weight)).squeeze(1)
        return ClassifierOutput(logit=logit, cam=cam)


def build_classifier(seed: int | None = None, pixel_head: bool = False) -> DefectClassifier:
    """A fresh (untrained) classifier.

    Args:
        seed: makes its initial weights reproducible (None: the global RNG).
        pixel_head: add the pixel head (the classifier then serves its probability map).

    Returns:
        The classifier in training mode.
    """
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return DefectClassifier(pixel_head)
    return DefectClassifier(pixel_head)


def fold_batchnorm(model: DefectClassifier) -> DefectClassifier:
    """An inference copy of ``model`` with every eval-mode BatchNorm folded into its conv.

    In eval mode BatchNorm is an affine map per channel, so ``bn(conv(x))`` is one conv with
    rescaled weights and a bias: same maps (to float rounding, ~1e-6 relative), no
    full-resolution normalisation pass forward or backward (8-13 % faster on CPU,
    BENCHMARKS.md). The copy is for inference and the climb only: it cannot be trained.
    """
    folded = copy.deepcopy(model).eval()
    _fold_children(folded)
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:  # a BatchNorm not directly after its conv: the pairing rule does not hold
        raise RuntimeError(f"BatchNorm layers left unfolded: {left}")
    return folded


def _fold_children(module: nn.Module) -> None:
    # smp and torchvision register each BatchNorm right after the conv it normalises
    # (conv1/bn1, conv2/bn2, Conv2dReLU's 0/1), which is also the order they run in.
    names = list(module._modules)
    for conv_name, bn_name in zip(names, names[1:], strict=False):
        conv, bn = module._modules[conv_name], module._modules[bn_name]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            module._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
            module._modules[bn_name] = nn.Identity()
    for child in module.children():
        _fold_children(child)
