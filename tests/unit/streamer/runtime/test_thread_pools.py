"""A worker's BLAS/OpenMP pools are sized to its pipeline threads while it runs, and restored after."""

from __future__ import annotations

from threadpoolctl import threadpool_info

from streamer.runtime.thread_pools import native_pools_limited


def _sizes() -> list[int]:
    return [p["num_threads"] for p in threadpool_info()]


def test_pools_limited_inside_and_restored_after():
    before = _sizes()
    assert before, "numpy's BLAS pool is visible to threadpoolctl"
    with native_pools_limited(1) as pools:
        assert _sizes() == [1] * len(before)
        assert "=1" in pools
    assert _sizes() == before
