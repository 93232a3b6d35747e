"""glibc malloc tuning for a process that publishes large alerts.

A worker serializes alerts of about 66 kB and librdkafka copies each into its own buffer; both are freed after
the acknowledgement. With glibc's defaults the heap's free top is handed back to the kernel (above 128 kB) and
the next batch page-faults the same memory in again: 16 page faults an alert for each copy, which was about 40%
of the CPU time of serializing and publishing (``bench/bench_alerts.py``). Raising the trim threshold keeps
freed memory in the heap for reuse. Setting it turns off glibc's sliding mmap threshold, so that is fixed at
32 MB, where the sliding one ends up: full-CCD images (33.5 MB as float32) keep their own mappings, returned
to the kernel as soon as they are freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(trim_threshold_mb: int = 256, mmap_threshold_mb: int = 32) -> bool:
    """Set glibc's ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD`` for this process (``mallopt``).

    Parameters
    ----------
    trim_threshold_mb : int
        Free memory at the top of a heap kept for reuse before it is returned to the kernel, MB.
    mmap_threshold_mb : int
        Allocations at least this large get their own mapping (returned to the kernel when freed), MB.
        glibc's sliding threshold stops at 32 MB on 64-bit machines.

    Returns
    -------
    bool
        True when both were set (False on a C library without ``mallopt``, e.g. musl or macOS).
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
        and bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold_mb) << 20))
    log.debug("malloc: trim threshold %d MB, mmap threshold %d MB (%s)", trim_threshold_mb, mmap_threshold_mb,
              "set" if ok else "refused")
    return ok
