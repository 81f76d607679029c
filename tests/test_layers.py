"""The layers point down only: the core library imports nothing of the package above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "defectcam" / "core"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_only_the_core(path: Path) -> None:
    """Settings reach the core as arguments (``defectcam.config`` reads the environment);
    faces, serving and applications sit above it."""
    above = sorted(name for name in _imported_modules(path)
                   if name.split(".")[0] == "defectcam" and not name.startswith("defectcam.core"))
    assert not above, f"{path.name} imports {above}"


def test_the_request_contract_knows_no_face() -> None:
    """core/options.py knows the options' internal names only; each face maps its own
    spelling (a body key, a cvat-sdk parameter, a flag) onto them."""
    text = (CORE / "options.py").read_text()
    for face_spelling in ("conf_threshold", "\"threshold\"", "argparse", "--min-confidence"):
        assert face_spelling not in text, face_spelling
