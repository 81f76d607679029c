"""The front door and the docs behind it: the README stays one screen, runs what CI runs,
and every link and documented variable is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from defectcam import config

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_is_one_screen_and_runs_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd ", "rm "))]
    assert ci == ["python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'",
                  ".venv/bin/ruff check . && .venv/bin/pytest -q"]
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    commands = [line for block in blocks for line in block.splitlines()]
    assert all(line in commands for line in ci)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if "://" in target:
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_every_variable_is_documented_for_operators() -> None:
    deploy = (REPO / "docs" / "deploy.md").read_text()
    table = deploy.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    variables = {value for name, value in vars(config).items()
                 if name.endswith("_ENV") and isinstance(value, str)}
    assert variables and all(v.startswith("DEFECTCAM_") for v in variables)
    missing = sorted(v for v in variables if f"| `{v}` |" not in table)
    assert not missing, f"docs/deploy.md's table lacks {missing}"
