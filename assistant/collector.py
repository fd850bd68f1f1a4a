"""The process's cyclic garbage collector, set up for serving while a server runs.

A server process holds about half a million objects once it is up (modules, models, the app), and
every full collection walked them all: under load (bench/ws_overhead.py, 64 connections) each took
200-300 ms, about one every 1.5 s, a fifth of the server's time. A turn allocates a few hundred
objects, nearly all freed by reference counting, so most collections of the youngest generation
found nothing to free either.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 50_000
"""Allocations between two collections of the youngest generation while the server runs (Python's default: 700)."""


class _CollectorTuning:
    """The process's garbage collector tuning: applied while at least one server runs."""

    servers = 0  # servers running in this process (tests run several)
    replaced: tuple[int, int, int] = (700, 10, 10)  # the thresholds before the first server started
    collected = False  # start-up's garbage collected once


def tune_collector() -> None:
    """Set the cyclic garbage collector up for serving, when the first server of the process starts listening.

    The objects alive once the server is up are frozen (`gc.freeze`): full collections no longer walk
    them (measured: 10-35 ms each instead of 200-300). The youngest generation is collected every
    YOUNG_COLLECTION_THRESHOLD allocations instead of every 700. With both, the event loop's CPU time
    per turn fell by about a third. Start-up's garbage is collected first, the first time in the process."""
    _CollectorTuning.servers += 1
    if _CollectorTuning.servers > 1:
        return
    if not _CollectorTuning.collected:
        gc.collect()
        _CollectorTuning.collected = True
    gc.freeze()
    _CollectorTuning.replaced = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *_CollectorTuning.replaced[1:])


def untune_collector() -> None:
    """Undo `tune_collector` when the last server of the process stops: what it froze is collectable again,
    and the thresholds are those from before."""
    _CollectorTuning.servers -= 1
    if _CollectorTuning.servers == 0:
        gc.unfreeze()
        gc.set_threshold(*_CollectorTuning.replaced)
