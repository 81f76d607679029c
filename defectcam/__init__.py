"""defectcam: click-trained defect classifiers turned into CVAT proposals via Grad-CAM + AdvCAM.

The public API: the library (``defectcam.core``) and the service every face calls.

    from defectcam import DefectProposer, ProposeOptions
    proposer = DefectProposer.from_weights("weights/")
    proposals = proposer.propose(rgb_uint8_image, iterations=2)

    from defectcam import ProposalService, Settings
    service = ProposalService.from_settings(Settings.from_env())
    answer = service.propose(rgb_uint8_image, ProposeOptions(min_confidence=0.5))
    answer.shapes()          # what the CVAT function answers

Names load on first use, so ``import defectcam`` (and ``defectcam --help``) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_API = {
    # the library
    "DefectProposer": "defectcam.core.proposer",
    "ProposalResult": "defectcam.core.proposer",
    "DefectMapPredictor": "defectcam.core.predictor",
    "DefectMap": "defectcam.core.predictor",
    "Proposal": "defectcam.core.postprocess",
    "ProposeOptions": "defectcam.core.options",
    "OptionError": "defectcam.core.options",
    "Limits": "defectcam.core.options",
    "DefectClassifier": "defectcam.core.model",
    "build_classifier": "defectcam.core.model",
    "AdvCAMSettings": "defectcam.core.advcam",
    "advcam_climb": "defectcam.core.advcam",
    "WeightsMetadata": "defectcam.core.weights",
    "WeightsError": "defectcam.core.weights",
    "load_weights": "defectcam.core.weights",
    "save_weights": "defectcam.core.weights",
    "find_weights": "defectcam.core.weights",
    "decode_image": "defectcam.core.image_io",
    "ImageInputError": "defectcam.core.image_io",
    "proposal_to_cvat_shape": "defectcam.core.cvat",
    "proposals_to_cvat_shapes": "defectcam.core.cvat",
    "LABEL_NAMES": "defectcam.core.labels",
    # the service and its settings
    "ProposalService": "defectcam.serving.service",
    "Answer": "defectcam.serving.service",
    "Settings": "defectcam.config",
    "ConfigError": "defectcam.config",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'defectcam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
