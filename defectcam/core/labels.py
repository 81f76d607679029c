"""The defect labels: the single list the CVAT function spec, the handler and the tests share.

CVAT matches a function's labels to a task's labels by *name*; ``id`` only has to be unique
inside the spec. ``polygon`` is the declared type; CVAT treats ``polygon`` and ``mask`` as
compatible, so the same labels serve both ``output`` modes of the handler.
"""

from __future__ import annotations

import json
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


def cvat_spec() -> list[dict]:
    """The labels as CVAT's ``metadata.annotations.spec`` list of dicts."""
    return [{"id": label.id, "name": label.name, "type": label.type} for label in DEFECT_LABELS]


def cvat_spec_json() -> str:
    """``cvat_spec()`` as the JSON text that goes into ``function.yaml``."""
    return json.dumps(cvat_spec())
