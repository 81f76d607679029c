"""Keep large CPU tensors in the malloc heap instead of fresh mmap'd pages.

glibc serves every allocation above its mmap threshold with a new mapping and unmaps it on
free, so each pass over a tile batch faults its activations in page by page again. Raising
the mmap and trim thresholds lets freed blocks be reused (faster climbs on CPU for more
resident memory; BENCHMARKS.md). Process-wide, so it is applied once and only on glibc; the
caller decides whether to (``DEFECTCAM_MALLOC_TUNING`` in ``defectcam.config``).
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap and are reused after free.
MMAP_THRESHOLD_BYTES = 1 << 30
#: Free memory at the top of the heap kept for reuse rather than given back to the system
#: (default 128 KiB: a freed batch of activations would otherwise be returned at once).
TRIM_THRESHOLD_BYTES = 1 << 30

_applied: bool | None = None


def keep_large_allocations_in_heap(enabled: bool = True) -> bool:
    """Raise glibc's mmap and trim thresholds once per process.

    Args:
        enabled: False leaves malloc as it is (the operator switched the tuning off).

    Returns:
        True when the tuning is in effect in this process.
    """
    global _applied
    if not enabled or _applied is not None:
        return bool(_applied)
    _applied = False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    mallopt = getattr(libc, "mallopt", None)  # absent on musl, macOS and Windows
    if mallopt is not None:
        _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied
