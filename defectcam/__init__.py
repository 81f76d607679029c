"""defectcam: click-trained defect classifiers turned into CVAT proposals via Grad-CAM + AdvCAM."""

__version__ = "0.1.0"
