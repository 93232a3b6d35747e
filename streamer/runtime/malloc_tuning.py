"""glibc malloc tuning for a worker: freed memory is kept for reuse instead of being page-faulted back in.

Two costs come from glibc's defaults:

* Alerts. A worker serializes alerts of about 66 kB and librdkafka copies each into its own buffer; both are
  freed after the acknowledgement. The heap's free top is handed back to the kernel (above 128 kB) and the
  next batch page-faults the same memory in again: 16 page faults an alert for each copy, which was about 40%
  of the CPU time of serializing and publishing (``bench/bench_alerts.py``).
* CCD-sized arrays. A full DECam CCD is 33.5 MB as float32, above the largest mmap threshold glibc allows
  (32 MB), so every such array got its own mapping, returned to the kernel when freed and zero-filled page
  by page when the next one was made: about a million page faults and a third of the CPU time of
  ``process_ccd`` went to the kernel (``bench/bench_ccd.py``).

Raising the trim threshold keeps freed memory at the top of the heap, and turning off mmap (``M_MMAP_MAX``
0) puts large arrays in the heap too, where freed ones are reused. The process's peak memory is about the
same (the heap holds what the mappings held); its resident size no longer falls between CCDs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["DEFAULT_TRIM_THRESHOLD_MB", "keep_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

DEFAULT_TRIM_THRESHOLD_MB = 1024
"""Freed memory kept at the top of the heap: a CCD's working set (``bench/bench_ccd.py``: about 1.5 GB peak)."""


def keep_freed_memory(trim_threshold_mb: int = DEFAULT_TRIM_THRESHOLD_MB, mmap_threshold_mb: int = 32, *,
                      map_large: bool = False) -> bool:
    """Set glibc's ``M_TRIM_THRESHOLD``, ``M_MMAP_THRESHOLD`` and ``M_MMAP_MAX`` for this process (``mallopt``).

    Parameters
    ----------
    trim_threshold_mb : int
        Free memory at the top of a heap kept for reuse before it is returned to the kernel, MB. The default
        holds a CCD's working set, so the next CCD reuses it.
    mmap_threshold_mb : int
        With ``map_large``: allocations at least this large get their own mapping, MB (glibc's sliding
        threshold stops at 32 MB on 64-bit machines).
    map_large : bool
        Keep glibc's own mappings for large allocations (returned to the kernel when freed, zero-filled
        again when made). Off by default: large arrays come from the heap and are reused. glibc still maps
        an allocation that no heap of a thread's arena can hold (64 MB).

    Returns
    -------
    bool
        True when all were set (False on a C library without ``mallopt``, e.g. musl or macOS).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.debug("mallopt not available; malloc left as it is")
        return False
    ok = bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold_mb) << 20)) \
        and bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold_mb) << 20)) \
        and (map_large or bool(mallopt(_M_MMAP_MAX, 0)))
    log.debug("malloc: trim threshold %d MB, large allocations %s (%s)", trim_threshold_mb,
              f"mapped from {mmap_threshold_mb} MB" if map_large else "from the heap", "set" if ok else "refused")
    return ok
