"""benchmarks/quality_price.py: which setting each change builds on, and a tiny real run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def qp():
    return load_benchmark("quality_price")


def test_changes_build_on_the_last_adopted_setting(qp) -> None:
    assert qp.merge(["--precision", "fp32", "--screen"], ("--precision", "bf16")) == [
        "--screen", "--precision", "bf16"]
    rows = {s.name: (switches, against) for s, switches, against in qp.plan("rust", {})}
    assert list(rows) == ["today", "bf16", "balanced", "scale", "screen"]
    assert rows["screen"] == (["--precision", "bf16", "--tiling", "balanced",
                               "--working-scale", "0.5", "--screen"], "scale")
    crack = {s.name: against for s, _, against in qp.plan("crack", {})}
    assert "scale" not in crack and crack["screen"] == "balanced"  # cracks stay at scale 1
    # bf16 failed its verdict: balanced tiles build on today's fp32 engine instead.
    rows = {s.name: (switches, against)
            for s, switches, against in qp.plan("spalling", {"bf16": False})}
    assert rows["balanced"][1] == "today"
    assert "bf16" not in rows["balanced"][0] and "fp32" in rows["balanced"][0]
    base = {"iou": 50.0, "saving": 40.0}
    assert qp.loss({"iou": 49.5, "saving": 38.5}, base) == pytest.approx(1.5)


def test_a_tiny_run_writes_the_table(qp, shared_data: Path, tmp_path: Path) -> None:
    from defectcam.core.model import build_classifier
    from defectcam.core.weights import WeightsMetadata, save_weights

    weights = tmp_path / "weights"
    # One tile per 544 x 384 image: one forward and two climbing steps per image and setting.
    save_weights(build_classifier(0), WeightsMetadata(label="crack", tile_size=544,
                                                      tile_overlap=16),
                 weights / "crack.safetensors")
    section = tmp_path / "B.md"
    run = ["--weights", str(weights), "--defect", "crack", "--limit", "1", "--max-side", "256",
           "--out", str(tmp_path / "qp"), "--append", str(section)]
    qp.main(run)
    text = section.read_text()
    # The markers BENCHMARKS.md holds: a rerun replaces its section.
    assert "<!-- quality_price.py: generated section, begin -->" in text
    assert text.rstrip().endswith("<!-- quality_price.py: generated section, end -->")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| " + s.change for s in qp.SETTINGS if "crack" in s.defects]
    assert all(r.rstrip(" |").endswith(("ok", ")")) for r in rows[2:])  # a verdict each
    for name in ("today", "bf16-on-today", "balanced-on-bf16-on-today",
                 "screen-on-balanced-on-bf16-on-today"):
        assert (tmp_path / "qp" / "crack-n1" / name / "report.json").is_file()
    qp.main(run)  # the evaluations are reused; the section is replaced, not added again
    again = section.read_text()
    assert again.count("<!-- quality_price.py: generated section, begin -->") == 1
    assert [line for line in again.splitlines() if line.startswith("| ")] == rows
