"""benchmarks/report.py: the section every benchmark script writes into a Markdown file."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import load_benchmark

report = load_benchmark("report")


def test_a_section_is_added_then_replaced_in_place(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nHand-written intro.\n")
    report.write_section(path, "bench_x.py", "## X\n\nfirst run\n")
    report.write_section(path, "bench_y.py", "## Y\n\nother script\n")
    report.write_section(path, "bench_x.py", "## X\n\nsecond run\n")
    text = path.read_text()
    assert text == ("# Benchmarks\n\nHand-written intro.\n\n"
                    "<!-- bench_x.py: generated section, begin -->\n## X\n\nsecond run\n"
                    "<!-- bench_x.py: generated section, end -->\n\n"
                    "<!-- bench_y.py: generated section, begin -->\n## Y\n\nother script\n"
                    "<!-- bench_y.py: generated section, end -->\n")


def test_the_markers_the_repository_files_hold_are_found() -> None:
    """BENCHMARKS.md and docs/deploy.md hold these marker lines: a rerun of the script must find
    them (and replace its old section) rather than append a second one."""
    repo = Path(__file__).resolve().parents[1]
    benchmarks = (repo / "BENCHMARKS.md").read_text()
    for script in ("bench_request.py", "quality_price.py", "bench_engine.py", "bench_log.py",
                   "bench_large_frames.py", "bench_interactor.py"):
        begin, end = report.section_marks(script)
        assert begin in benchmarks and end in benchmarks, script
    begin, end = report.section_marks("bench_request.py", "speed table")
    deploy_doc = (repo / "docs" / "deploy.md").read_text()
    assert begin in deploy_doc and end in deploy_doc


def test_a_named_section_of_a_readme(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text("# Tool\n\n<!-- s.py: speed table, begin -->\nold\n"
                    "<!-- s.py: speed table, end -->\n\nmore text\n")
    report.write_section(path, "s.py", "new table", "speed table")
    assert path.read_text() == ("# Tool\n\n<!-- s.py: speed table, begin -->\nnew table\n"
                                "<!-- s.py: speed table, end -->\n\nmore text\n")


def test_the_machine_line_names_cpu_cores_threads_and_load() -> None:
    line = report.machine(3)
    assert line.startswith(f"CPU: {report.cpu_name()}, ")
    assert ", 3 threads; load average " in line
