"""The native thread pools of a worker (OpenBLAS, OpenMP) sized to its pipeline threads.

NumPy's OpenBLAS starts one thread per core at import. In a worker of one pipeline thread those extra
threads only spin: every matrix product of the kernel and PSF fits (``np.einsum(..., optimize=True)``,
``lstsq``) wakes them, and they busy-wait for the next call afterwards. ``bench/profile_exposure.py`` measured
0.28-0.31 core-seconds per CCD in them (2 workers x 1 thread on 2 cores, 8 CCDs: 6-7% of the workers'
CPU), time the other worker and the servers waited for. The pipeline's numbers do not depend on it: the
outputs of a CCD (DiaSources, DiaObjects, forced sources, cutouts, difference image) are byte-identical with
one OpenBLAS thread or two.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_info, threadpool_limits

__all__ = ["native_pools_limited"]

log = logging.getLogger(__name__)


@contextmanager
def native_pools_limited(threads: int) -> Iterator[str]:
    """Limit the process's BLAS and OpenMP pools to ``threads`` threads inside a ``with`` block (the previous
    sizes come back on exit, so a process that runs a worker more than once, as the tests do, keeps its own).

    Yields
    ------
    str
        The pools and their sizes, for the log (``"openblas=1"``).
    """
    with threadpool_limits(limits=max(1, int(threads))):
        pools = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()) or "none"
        log.debug("native thread pools: %s", pools)
        yield pools
