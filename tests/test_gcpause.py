"""The load runs with the heap frozen, and the collector's pauses are counted."""

from __future__ import annotations

import gc

from harness.gcpause import GcWatch


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_heap_is_frozen_during_the_load_and_collections_are_timed() -> None:
    kept = [_Cycle() for _ in range(1000)]  # alive before the load: frozen, never walked again
    watch = GcWatch()
    with watch:
        assert gc.get_freeze_count() >= len(kept)
        for _ in range(20_000):
            _Cycle()  # cyclic garbage: only the collector frees it
        gc.collect()
    assert gc.get_freeze_count() == 0 and watch._callback not in gc.callbacks
    summary = watch.summary()
    assert summary["collections"][2] >= 1 and sum(summary["collections"]) > 1
    assert summary["max_pause_ms"][2] > 0 and summary["total_ms"] >= summary["max_pause_ms"][2]
    assert summary["objects_frozen"] >= len(kept)


def test_the_watch_lets_go_even_when_the_load_fails() -> None:
    watch = GcWatch()
    try:
        with watch:
            raise RuntimeError("the load broke")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0 and watch._callback not in gc.callbacks
