"""The worker's collector tuning: start-up objects frozen, new cycles still collected, settings restored."""

from __future__ import annotations

import gc
import weakref

from streamer.runtime.gc_tuning import startup_objects_frozen


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_frozen_during_the_block_and_restored_after():
    before = gc.get_threshold()
    survivor = _Node()
    with startup_objects_frozen(5_000):
        assert gc.get_freeze_count() > 1_000
        assert gc.get_threshold() == (5_000, *before[1:])
        frozen_ref = weakref.ref(survivor)
        del survivor
        made_after = _Node()
        new_ref = weakref.ref(made_after)
        del made_after
        gc.collect()
        assert new_ref() is None  # a cycle made after the freeze is collected
        assert frozen_ref() is not None  # a frozen one is not, until unfrozen
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    gc.collect()
    assert frozen_ref() is None


def test_none_leaves_the_collector_alone():
    before = gc.get_threshold()
    with startup_objects_frozen(None):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before
