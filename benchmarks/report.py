"""What every benchmark writes alike: the machine line and its BENCHMARKS.md section."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's name where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(threads: int | None = None) -> str:
    """One line naming the CPU, its cores, torch, the threads used and the load at the start
    (a figure taken on a busy machine says so)."""
    import torch

    threads = threads or torch.get_num_threads()
    return (f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{threads} threads; load average {os.getloadavg()[0]:.1f} at the start")


def section_marks(script: str, what: str = "generated section") -> tuple[str, str]:
    """The HTML comments around ``script``'s section ``what`` of a Markdown file (the files
    hold them: a rerun finds them and replaces what lies between)."""
    return f"<!-- {script}: {what}, begin -->", f"<!-- {script}: {what}, end -->"


def write_section(path: Path, script: str, body: str, what: str = "generated section") -> None:
    """Replace ``script``'s section ``what`` of ``path`` with ``body`` (or append it), keeping
    everything else of the file."""
    begin, end = section_marks(script, what)
    section = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
