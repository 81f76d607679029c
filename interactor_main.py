"""Nuclio entry points of the defectcam interactors (interactors/*.yaml:
``handler: interactor_main:handler``); the face is ``defectcam/interactor_nuclio.py``."""

from defectcam.interactor_nuclio import handler, init_context

__all__ = ["handler", "init_context"]
