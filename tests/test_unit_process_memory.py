"""The heap settled once a party process has started (`settle_heap`)."""

from __future__ import annotations

import gc

from middleware.process_memory import GC_THRESHOLDS, settle_heap


def test_settle_heap_freezes_what_lives_and_sets_the_thresholds() -> None:
    """What is alive is moved to the permanent generation (no later collection scans it)
    and the thresholds are set."""
    before = gc.get_threshold()
    kept = [[index] for index in range(100)]
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert gc.get_freeze_count() == 0
