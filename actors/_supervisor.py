"""A one_for_one supervisor (OTP style) that keeps room actors running.

Each child runs in its own wrapper task inside the supervisor's nursery. The
wrapper catches ``Exception`` (never ``BaseException``: cancellation and
KeyboardInterrupt pass straight through), so one child's crash never reaches
the nursery and never cancels its siblings: trio's strict exception groups
would otherwise take the whole nursery down with it.

Restart types (OTP): ``permanent`` children are restarted whatever the
reason they stopped, ``transient`` ones only when they crashed, ``temporary``
ones never. Restart intensity: a child that crashes more than ``intensity``
times within ``period`` seconds is given up on: ``terminate`` closes it and
tells its clients why. Unlike OTP, the intensity is counted per child, not
per supervisor: rooms are independent, and one crash-looping room must not
take the others down.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

__all__ = ["Restart", "Supervised", "Supervisor", "SupervisorStatistics"]

log = logging.getLogger("relay.room")


class Restart(enum.Enum):
    PERMANENT = "permanent"  # restart on crash and on normal exit
    TRANSIENT = "transient"  # restart on crash only (rooms)
    TEMPORARY = "temporary"  # never restart


class Supervised(Protocol):
    """What the supervisor needs from a child (``Room`` implements it)."""

    @property
    def name(self) -> str:
        """For logs, e.g. ``room ABCD``."""
        ...

    async def run(self) -> None:
        """One incarnation: returns when the child is done, raises when it crashed."""
        ...

    def recover(self, exc: BaseException | None) -> None:
        """Prepare the next incarnation (from the last good state) after ``exc``."""
        ...

    def terminate(self, reason: str) -> None:
        """Stop for good without running again (given up on); must not block."""
        ...


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    children: int
    started: int
    crashes: int
    restarts: int
    given_up: int
    exited: int


@dataclass(slots=True)
class _Spec:
    child: Supervised
    restart: Restart
    intensity: int
    period: float
    on_exit: Callable[[Supervised, str], None] | None


class Supervisor:
    """Runs children one_for_one with a restart intensity of ``intensity`` in ``period`` s.

    Use: ``sup = await nursery.start(Supervisor().run)``, then
    ``sup.start_child(room)``. Cancelling ``run`` cancels every child.
    ``on_exit(child, outcome)`` is called once a child is finished for good;
    ``outcome`` is ``"normal"``, ``"crashed"`` (not restarted: temporary) or
    ``"gave_up"`` (restart intensity exceeded) or ``"cancelled"`` (the
    supervisor was cancelled).
    """

    def __init__(self, *, intensity: int = 3, period: float = 10.0, name: str = "rooms") -> None:
        _check_intensity(intensity, period)
        self.intensity = intensity
        self.period = period
        self.name = name
        self._nursery: trio.Nursery | None = None
        self._children: dict[int, _Spec] = {}
        self._started = 0
        self._crashes = 0
        self._restarts = 0
        self._given_up = 0
        self._exited = 0

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED):
        """Host the children until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started(self)
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def start_child(
        self,
        child: Supervised,
        *,
        restart: Restart = Restart.TRANSIENT,
        intensity: int | None = None,
        period: float | None = None,
        on_exit: Callable[[Supervised, str], None] | None = None,
    ) -> None:
        """Start supervising ``child`` (it starts running at once, in its own task).

        Raises ``RuntimeError`` when the supervisor is not running.
        """
        if self._nursery is None:
            raise RuntimeError(f"supervisor {self.name} is not running")
        intensity = self.intensity if intensity is None else intensity
        period = self.period if period is None else period
        _check_intensity(intensity, period)
        spec = _Spec(child, restart, intensity, period, on_exit)
        self._children[id(child)] = spec
        self._started += 1
        self._nursery.start_soon(self._supervise, spec, name=f"{self.name}: {child.name}")

    def children(self) -> list[Supervised]:
        return [spec.child for spec in self._children.values()]

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            children=len(self._children),
            started=self._started,
            crashes=self._crashes,
            restarts=self._restarts,
            given_up=self._given_up,
            exited=self._exited,
        )

    async def _supervise(self, spec: _Spec) -> None:
        child = spec.child
        crashes: deque[float] = deque()
        outcome = "cancelled"
        try:
            while True:
                try:
                    await child.run()
                except Exception as exc:
                    self._crashes += 1
                    if spec.restart is Restart.TEMPORARY:
                        log.error("%s crashed (temporary, not restarted)", child.name, exc_info=exc)
                        outcome = "crashed"
                        self._terminate(child, "crashed")
                        return
                    now = trio.current_time()
                    while crashes and crashes[0] <= now - spec.period:
                        crashes.popleft()
                    if len(crashes) >= spec.intensity:
                        log.error(
                            "%s crashed %d times in %.0f s; closing it",
                            child.name,
                            len(crashes) + 1,
                            spec.period,
                            exc_info=exc,
                        )
                        outcome = "gave_up"
                        self._given_up += 1
                        self._terminate(child, "crashed")
                        return
                    crashes.append(now)
                    log.error("%s crashed; restarting it", child.name, exc_info=exc)
                    if not self._recover(child, exc):
                        outcome = "gave_up"
                        self._given_up += 1
                        return
                    self._restarts += 1
                    continue
                if spec.restart is Restart.PERMANENT:
                    # A permanent child that returned is restarted too, within the
                    # same intensity budget (a child that returns at once would spin).
                    now = trio.current_time()
                    while crashes and crashes[0] <= now - spec.period:
                        crashes.popleft()
                    if len(crashes) >= spec.intensity:
                        outcome = "gave_up"
                        self._given_up += 1
                        self._terminate(child, "stopped")
                        return
                    crashes.append(now)
                    if not self._recover(child, None):
                        outcome = "gave_up"
                        self._given_up += 1
                        return
                    self._restarts += 1
                    continue
                outcome = "normal"
                return
        finally:
            self._children.pop(id(child), None)
            self._exited += 1
            if spec.on_exit is not None:
                try:
                    spec.on_exit(child, outcome)
                except Exception:
                    log.exception("%s: on_exit callback failed", child.name)

    def _recover(self, child: Supervised, exc: BaseException | None) -> bool:
        try:
            child.recover(exc)
        except Exception:
            log.exception("%s could not recover; closing it", child.name)
            self._terminate(child, "crashed")
            return False
        return True

    def _terminate(self, child: Supervised, reason: str) -> None:
        try:
            child.terminate(reason)
        except Exception:
            log.exception("%s: terminate failed", child.name)


def _check_intensity(intensity: int, period: float) -> None:
    if type(intensity) is not int or intensity < 0:
        raise ValueError("the restart intensity is a non-negative integer")
    if not (isinstance(period, (int, float)) and math.isfinite(period) and period > 0):
        raise ValueError("the restart period is a positive number of seconds")
