"""Garbage collection for a latency-bound server: no automatic full collections.

CPython's automatic full (generation 2) collection scans every tracked object
in one pause. With a thousand clients that is over a hundred thousand objects
(tasks, coroutines, cancel scopes) and the pause measured 50-170 ms on the
reference machine (docs/bench.md): two or three lost ticks for every room at
once, which is what pushed latency p99 past 100 ms. Almost nothing a relay
allocates forms cycles (state dicts, frames and bytes are freed by reference
counting as soon as they drop), so the full collections found nothing.

So ``relay serve`` leaves the young generations to Python, turns the automatic
full collection off, and runs one itself every ``gc_interval`` seconds
(default 300 s), collecting the few cycles that do form (exception
tracebacks of closed connections) at a known, rare moment. ``gc_interval 0``
keeps Python's defaults.
"""

from __future__ import annotations

import gc
import logging
import time

import trio

__all__ = ["collect_periodically", "tune_gc"]

log = logging.getLogger("relay.server")

#: gen2 is never considered automatically: more gen1 runs than a process sees
_NO_AUTOMATIC_FULL = 1_000_000_000
_YOUNG_THRESHOLD = 10_000


def tune_gc() -> tuple[int, int, int]:
    """Turn off automatic full collections; returns the thresholds to restore."""
    previous = gc.get_threshold()
    gc.freeze()  # what the imports made lives as long as the process: never scan it
    # A tick allocates a few thousand short-lived objects; at Python's default of
    # 700 a young collection runs in the middle of nearly every tick and promotes
    # objects that die a moment later.
    gc.set_threshold(_YOUNG_THRESHOLD, previous[1], _NO_AUTOMATIC_FULL)
    return previous


async def collect_periodically(interval: float) -> None:
    """Run a full collection every ``interval`` seconds, until cancelled."""
    while True:
        await trio.sleep(interval)
        start = time.perf_counter()
        found = gc.collect()
        pause = time.perf_counter() - start
        log.info("full garbage collection: %d objects, %.1f ms", found, pause * 1000)
