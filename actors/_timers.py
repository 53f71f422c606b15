"""A room's named one-shot timers, with absolute wall-clock deadlines.

Timers are plain data the room's tick consults: no task, no trio deadline per
timer. A room has a handful of timers at most (a phase timeout, a round
timer), so a dict beats a heap; the earliest deadline is cached so a tick with
nothing due costs one comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["Timers"]


class Timers:
    """Named timers: ``start`` (re)arms, ``cancel`` disarms, ``pop_due`` fires.

    Deadlines are absolute seconds on the room's clock (epoch seconds), so the
    set can be snapshotted as is and restored elsewhere with the remaining
    time intact. A timer fires at the first tick at or after its deadline.
    Firing order is by deadline, then by arming order.
    """

    __slots__ = ("_earliest", "_serial", "_timers")

    def __init__(self, deadlines: Mapping[str, float] | None = None) -> None:
        self._timers: dict[str, tuple[float, int]] = {}
        self._serial = 0
        self._earliest = math.inf
        if deadlines:
            for name, deadline in sorted(deadlines.items(), key=lambda kv: (kv[1], kv[0])):
                self.start(name, deadline)

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, name: object) -> bool:
        return name in self._timers

    def get(self, name: str) -> float | None:
        """The deadline of timer ``name``, or None if it is not armed."""
        entry = self._timers.get(name)
        return None if entry is None else entry[0]

    def start(self, name: str, deadline: float) -> None:
        """Arm timer ``name`` for ``deadline``, replacing an earlier arming of it.

        Raises ``TypeError``/``ValueError`` for a name that is not a string or a
        deadline that is not a finite number: that is a rule set's bug.
        """
        if type(name) is not str:
            raise TypeError(f"a timer name is a string, not {type(name).__name__}")
        if type(deadline) not in (int, float) or not math.isfinite(deadline):
            raise ValueError(f"timer {name!r}: the deadline must be a finite number")
        self._serial += 1
        self._timers[name] = (float(deadline), self._serial)
        if deadline < self._earliest:
            self._earliest = float(deadline)

    def cancel(self, name: str) -> bool:
        """Disarm timer ``name``; True if it was armed."""
        entry = self._timers.pop(name, None)
        if entry is None:
            return False
        if entry[0] <= self._earliest:
            self._recompute()
        return True

    def cancel_all(self, keep: Iterable[str] = ()) -> list[str]:
        """Disarm every timer except those named in ``keep``; returns the names disarmed."""
        keep = set(keep)
        gone = [name for name in self._timers if name not in keep]
        for name in gone:
            del self._timers[name]
        if gone:
            self._recompute()
        return gone

    def next_deadline(self) -> float | None:
        """The earliest deadline, or None when no timer is armed."""
        return None if not self._timers else self._earliest

    def pop_due(self, now: float) -> list[str]:
        """Disarm and return the timers whose deadline is ``<= now``, in firing order."""
        if now < self._earliest:
            return []
        due = sorted((entry, name) for name, entry in self._timers.items() if entry[0] <= now)
        for _, name in due:
            del self._timers[name]
        self._recompute()
        return [name for _, name in due]

    def copy(self) -> Timers:
        other = Timers.__new__(Timers)
        other._timers = dict(self._timers)
        other._serial = self._serial
        other._earliest = self._earliest
        return other

    def as_dict(self) -> dict[str, float]:
        """``{name: deadline}`` in firing order (plain data, for snapshots)."""
        ordered = sorted(self._timers.items(), key=lambda kv: kv[1])
        return {name: entry[0] for name, entry in ordered}

    def _recompute(self) -> None:
        self._earliest = min((e[0] for e in self._timers.values()), default=math.inf)

    def __repr__(self) -> str:
        return f"Timers({self.as_dict()!r})"
