"""The garbage collector's tuning while servers run: applied by the first, undone by the last."""

from __future__ import annotations

import gc

from assistant.collector import YOUNG_COLLECTION_THRESHOLD, tune_collector, untune_collector


def test_the_first_server_tunes_the_collector_and_the_last_one_puts_it_back():
    before = gc.get_threshold()
    tune_collector()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 1000 and gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
        tune_collector()  # a second server in the same process changes nothing
        assert gc.get_freeze_count() == frozen
        untune_collector()  # ... and its stop undoes nothing while the first still runs
        assert gc.get_freeze_count() == frozen and gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
    finally:
        untune_collector()
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
