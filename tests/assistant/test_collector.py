"""The garbage collector's tuning while servers run: applied by the first, undone by the last."""

from __future__ import annotations

import gc

from assistant.collector import YOUNG_COLLECTION_THRESHOLD, tune_collector, untune_collector


def is_frozen(obj: object) -> bool:
    """Whether a tracked object sits in the permanent generation (gc.get_objects lists the three others only)."""
    return not any(tracked is obj for tracked in gc.get_objects())


def test_the_first_server_tunes_the_collector_and_the_last_one_puts_it_back():
    before = gc.get_threshold()
    alive_before = []  # tracked, alive when the first server starts: frozen by it
    tune_collector()
    try:
        assert gc.get_freeze_count() > 1000 and is_frozen(alive_before)
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
        made_since = []  # other threads may free frozen objects meanwhile, so the check is on this one, not on counts
        tune_collector()  # a second server in the same process changes nothing: nothing more is frozen
        try:
            assert not is_frozen(made_since) and gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
        finally:
            untune_collector()  # ... and its stop undoes nothing while the first still runs
        assert is_frozen(alive_before) and gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
    finally:
        untune_collector()
    assert gc.get_freeze_count() == 0 and not is_frozen(alive_before) and gc.get_threshold() == before
