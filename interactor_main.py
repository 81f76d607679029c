"""Nuclio entry points of the defectcam interactors (interactors/*.yaml:
``handler: interactor_main:handler``); the face is ``defectcam/faces/interactor_nuclio.py``."""

from defectcam.faces.interactor_nuclio import handler, init_context

__all__ = ["handler", "init_context"]
