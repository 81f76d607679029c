"""The defect labels: the one list that the CVAT function spec (function.yaml,
function-gpu.yaml, the cvat-sdk function), the faces, training data and the tests share.

CVAT matches a function's labels to a task's labels by *name*; ``id`` only has to be unique
inside the spec. ``polygon`` is the declared type; CVAT treats ``polygon`` and ``mask`` as
compatible, so the same labels serve both ``output`` modes of the handler.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DefectLabel:
    id: int
    name: str
    type: str = "polygon"


DEFECT_LABELS: tuple[DefectLabel, ...] = (
    DefectLabel(1, "crack"),
    DefectLabel(2, "spalling"),
    DefectLabel(3, "rust"),
)

LABEL_NAMES: tuple[str, ...] = tuple(label.name for label in DEFECT_LABELS)
#: The label of "no defect here" clicks in training exports (never proposed).
NEGATIVE_LABEL = "no-defect"


def cvat_spec() -> list[dict]:
    """The labels as CVAT's ``metadata.annotations.spec`` list of dicts (the yaml files hold
    the same list as JSON text; tests/test_function_yaml.py keeps them equal)."""
    return [{"id": label.id, "name": label.name, "type": label.type} for label in DEFECT_LABELS]

