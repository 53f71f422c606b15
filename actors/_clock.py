"""The room clock: wall-clock (epoch) seconds that move with trio's clock.

Rules receive ``now`` from here, and every deadline they hand back is on this
clock, so deadlines can go into snapshots and mean something to clients and to
another process that restores the room.
"""

from __future__ import annotations

import math
import time

import trio

__all__ = ["Clock"]


class Clock:
    """Epoch seconds derived from ``trio.current_time()`` with a fixed offset.

    The offset (``time.time() - trio.current_time()``) is taken once, when the
    clock is made, so ``now()`` advances exactly as trio's clock does: under
    ``trio.testing.MockClock`` (``autojump_clock``) virtual time moves ``now``
    too, and trio deadlines convert both ways without drift. Make it inside
    ``trio.run`` (trio's clock only exists there); share one per process so all
    rooms agree. ``offset`` may be given to pin the epoch (tests, replays).
    """

    __slots__ = ("offset",)

    def __init__(self, offset: float | None = None) -> None:
        if offset is None:
            offset = time.time() - trio.current_time()
        if not math.isfinite(offset):
            raise ValueError("the clock offset must be a finite number of seconds")
        self.offset = offset

    def now(self) -> float:
        """Wall-clock seconds since the epoch, on trio's (possibly virtual) clock."""
        return self.offset + trio.current_time()

    def to_trio(self, wall: float) -> float:
        """The trio time at which ``now()`` reaches the wall-clock time ``wall``."""
        return wall - self.offset

    def __repr__(self) -> str:
        return f"Clock(offset={self.offset:.3f})"
