"""One timer for every room: rooms park until their tick and a single task wakes them.

Each room is still its own task (supervised, owning its state); only the
waiting is shared. ``trio.sleep_until`` costs a cancel scope and a deadline
entry per call, and each room sleeping on its own phase means one scheduler
wake-up per room per tick. The ticker puts deadlines on a grid of ``slot``
seconds (a quarter of the tick period by default), so all rooms due in a slot
wake in one batch: the per-wake-up cost drops from about 21 µs to about 10 µs
of CPU (measured in docs/bench.md), and the run loop polls the OS 80 times a
second instead of once per room tick.

A deadline is rounded *up* to the grid, so a room never runs early; it may run
up to one slot late, which the room records as lateness like any other.
"""

from __future__ import annotations

import heapq
import math

import trio

__all__ = ["Ticker"]


class Ticker:
    """Wakes parked tasks at their (grid-rounded) deadlines.

    Start it with ``await nursery.start(ticker.run)``; then any task may
    ``await ticker.sleep_until(deadline)``. Cancellation of a parked task
    works as with ``trio.sleep_until``.
    """

    def __init__(self, slot: float = 0.0125) -> None:
        if not (math.isfinite(slot) and slot > 0):
            raise ValueError("slot must be a positive number of seconds")
        self.slot = slot
        self._due: dict[int, list[trio.lowlevel.Task]] = {}
        self._heap: list[int] = []  # slot numbers with parked tasks
        self._scope: trio.CancelScope | None = None
        self._running = False
        self.wakeups = 0  # batches woken
        self.woken = 0  # tasks woken

    @property
    def running(self) -> bool:
        return self._running

    async def run(self, *, task_status: trio.TaskStatus[Ticker] = trio.TASK_STATUS_IGNORED):
        self._running = True
        task_status.started(self)
        try:
            while True:
                heap = self._heap
                with trio.CancelScope() as scope:
                    self._scope = scope
                    if heap:
                        scope.deadline = heap[0] * self.slot
                    await trio.sleep_forever()
                self._scope = None
                now = trio.current_time()
                while heap and heap[0] * self.slot <= now:
                    tasks = self._due.pop(heapq.heappop(heap), None)
                    if tasks:
                        self.wakeups += 1
                        self.woken += len(tasks)
                        for task in tasks:
                            trio.lowlevel.reschedule(task)
        finally:
            self._running = False
            # whoever is still parked must not hang: wake them to find the ticker gone
            for tasks in self._due.values():
                for task in tasks:
                    trio.lowlevel.reschedule(task)
            self._due.clear()
            self._heap.clear()

    async def sleep_until(self, deadline: float) -> None:
        """Park until ``deadline`` (rounded up to the slot grid); a checkpoint."""
        if not self._running:
            await trio.sleep_until(deadline)
            return
        n = math.ceil(deadline / self.slot)
        if n * self.slot <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        tasks = self._due.get(n)
        if tasks is None:
            tasks = self._due[n] = []
            heapq.heappush(self._heap, n)
            if self._heap[0] == n and self._scope is not None:
                self._scope.deadline = n * self.slot
        task = trio.lowlevel.current_task()
        tasks.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            tasks.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if not self._running and trio.current_time() < deadline:
            await trio.sleep_until(deadline)  # woken because the ticker stopped
