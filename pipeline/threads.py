"""Threads for the pipeline's array work: NumPy, scipy.ndimage and scipy.fft release the GIL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from scipy import fft as sp_fft

T = TypeVar("T")
R = TypeVar("R")


def worker_count() -> int:
    """Threads the pipeline may use: scipy.fft's worker setting (``scipy.fft.set_workers``), default 1."""
    return max(1, int(sp_fft.get_workers()))


def using(threads: int) -> contextlib.AbstractContextManager:
    """Context in which the calling thread's pipeline work uses ``threads`` threads (``scipy.fft.set_workers``)."""
    return sp_fft.set_workers(max(1, int(threads)))


def thread_map(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[function(item) for item in items]`` on ``worker_count()`` threads, in order.

    Inside the threads scipy.fft's default is one worker, so transforms run side by side instead of
    over-subscribing the cores. With one worker (the default) everything runs in the calling thread.
    """
    items = list(items)
    workers = min(worker_count(), len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


__all__ = ["worker_count", "using", "thread_map"]
