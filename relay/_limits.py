"""Abuse limits: token buckets per connection (frames and bytes per second) and per IP
(new connections per second), their counters, and how they show in /metrics.

Transport-independent: a transport asks ``RelayLimits.allow_connection(ip)``
before it accepts a client, and calls its connection's
``ConnectionLimiter.admit(nbytes, link)`` for every WebSocket message it
receives, before decoding it. ``admit`` returns False for a message that
must be dropped and has already told the client:

* the first message over a limit is dropped and answered with an ``Error``
  frame ``rate_limited`` (the connection stays);
* messages over the limit for longer than ``rate_limit_sustain`` seconds
  after that close the connection with 1008 (policy violation);
* a connection with no message dropped for ``rate_limit_sustain`` seconds
  starts afresh (its next excess gets an error frame again).

A bucket holds ``rate * burst`` tokens (``rate_limit_burst`` seconds of the
rate) and refills continuously; a message takes one frame token and
``len(message)`` byte tokens. A rate of 0 turns that limit off.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from protocol import CloseCode, Error, Frame

__all__ = [
    "ConnectionLimiter",
    "LimitStatistics",
    "RelayLimits",
    "TokenBucket",
]

#: per-IP buckets kept at most; the ones idle longest go first
_MAX_TRACKED_IPS = 65536


class TokenBucket:
    """``rate`` tokens per second, holding at most ``capacity``; starts full.

    Sync and allocation-free on the hot path. ``now`` is any monotonic clock in
    seconds (the transports pass ``trio.current_time()``). Raises ``ValueError``
    for a negative or non-finite rate or capacity.
    """

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, *, now: float) -> None:
        if not (math.isfinite(rate) and rate >= 0 and math.isfinite(capacity) and capacity >= 0):
            raise ValueError("a token bucket needs a finite, non-negative rate and capacity")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.stamp = now

    def _refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.stamp = now

    def take(self, n: float, now: float) -> bool:
        """Take ``n`` tokens if there are that many; False (and nothing taken) if not."""
        # _refill, inlined: this runs for every message a client sends
        tokens = self.tokens
        elapsed = now - self.stamp
        if elapsed > 0:
            tokens += elapsed * self.rate
            if tokens > self.capacity:
                tokens = self.capacity
            self.stamp = now
        if tokens >= n - 1e-9:  # refills add up in floats: 0.5 + 0.5 may be 0.999...
            self.tokens = tokens - n
            return True
        self.tokens = tokens
        return False

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity

    def __repr__(self) -> str:
        return f"TokenBucket({self.tokens:.1f}/{self.capacity:g}, {self.rate:g}/s)"


class _Link(Protocol):
    def send_frame_nowait(self, frame: Frame) -> None: ...

    def close_nowait(self, code: int, reason: str) -> None: ...


@dataclass(slots=True)
class LimitStatistics:
    """Counters of every limit in one relay process (plain ints, read at scrape time)."""

    frames_dropped: int = 0  # messages dropped for a connection's rate limits
    warnings: int = 0  # rate_limited error frames sent
    closes: int = 0  # connections closed with 1008 for sustained excess
    ip_refused: int = 0  # new connections refused for their IP's rate


class ConnectionLimiter:
    """The rate limits of one connection. ``admit`` is called once per received message."""

    __slots__ = ("_bytes", "_frames", "_last_drop", "_relay", "_since", "_sustain", "closed")

    def __init__(self, relay: RelayLimits, *, now: float) -> None:
        config = relay.config
        self._relay = relay
        burst = config.rate_limit_burst
        self._frames = (
            TokenBucket(config.rate_limit_frames, config.rate_limit_frames * burst, now=now)
            if config.rate_limit_frames > 0
            else None
        )
        self._bytes = (
            TokenBucket(config.rate_limit_bytes, config.rate_limit_bytes * burst, now=now)
            if config.rate_limit_bytes > 0
            else None
        )
        self._sustain = config.rate_limit_sustain
        self._since = -math.inf  # first drop of the current excess episode
        self._last_drop = -math.inf
        self.closed = False  # closed for flooding

    def admit(self, nbytes: int, link: _Link, *, now: float | None = None) -> bool:
        """True when a message of ``nbytes`` may be handled. False: drop it; the client
        was told (``rate_limited`` error frame) or is being closed (1008)."""
        if now is None:
            now = trio.current_time()
        frames = self._frames
        if frames is None or frames.take(1, now):
            if self._bytes is None or self._bytes.take(nbytes, now):
                return True
            if frames is not None:
                frames.tokens += 1  # the message was not taken after all
        if self.closed:
            return False
        stats = self._relay.stats
        stats.frames_dropped += 1
        if now - self._last_drop >= self._sustain:
            # A new episode (none yet, or the last drop was long ago): warn once.
            self._since = now
            stats.warnings += 1
            link.send_frame_nowait(
                Error(
                    "rate_limited",
                    "too many messages or bytes per second: this one was dropped "
                    f"(limits: {self._relay.describe()})",
                )
            )
        elif now - self._since >= self._sustain:
            self.closed = True
            stats.closes += 1
            link.close_nowait(CloseCode.POLICY_VIOLATION, "rate limits exceeded: flooding")
        self._last_drop = now
        return False


class _Always:
    """The limiter of a relay whose per-connection limits are off."""

    __slots__ = ()

    def admit(self, nbytes: int, link: _Link, *, now: float | None = None) -> bool:
        return True


_ALWAYS = _Always()


class RelayLimits:
    """The limits of one relay process: makes connection limiters, checks IPs, counts.

    ``config`` is the relay's ``Config`` (``rate_limit_*``, ``ip_connect_*``).
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.stats = LimitStatistics()
        self._ips: OrderedDict[str, TokenBucket] = OrderedDict()

    def connection(self) -> ConnectionLimiter | _Always:
        """A limiter for a new connection (a no-op when both rates are 0)."""
        config = self.config
        if config.rate_limit_frames <= 0 and config.rate_limit_bytes <= 0:
            return _ALWAYS
        return ConnectionLimiter(self, now=trio.current_time())

    def allow_connection(self, ip: str | None, *, now: float | None = None) -> bool:
        """Whether a new connection from ``ip`` may be accepted now (takes a token).
        A refusal is counted; the transport answers it (HTTP 429)."""
        rate = self.config.ip_connect_rate
        if rate <= 0 or not ip:
            return True
        if now is None:
            now = trio.current_time()
        ips = self._ips
        bucket = ips.get(ip)
        if bucket is None:
            bucket = ips[ip] = TokenBucket(rate, self.config.ip_connect_burst, now=now)
            if len(ips) > _MAX_TRACKED_IPS:
                ips.popitem(last=False)
        else:
            ips.move_to_end(ip)
        if bucket.take(1, now):
            return True
        self.stats.ip_refused += 1
        return False

    def describe(self) -> str:
        c = self.config
        return (
            f"{c.rate_limit_frames:g} messages/s, {c.rate_limit_bytes:g} bytes/s, "
            f"bursts of {c.rate_limit_burst:g} s"
        )

    def info(self) -> dict[str, float]:
        """The limits, for ``Welcome.server`` (so clients can pace themselves)."""
        c = self.config
        return {
            "messages_per_second": c.rate_limit_frames,
            "bytes_per_second": c.rate_limit_bytes,
            "burst_seconds": c.rate_limit_burst,
        }

    def metrics(self) -> tuple[list[tuple[str, str, float]], list[tuple[str, str, float]]]:
        """``(gauges, counters)`` in the shape of ``Relay.metrics()``."""
        c = self.config
        s = self.stats
        gauges = [
            ("relay_limit_messages_per_second", "message rate limit", c.rate_limit_frames),
            ("relay_limit_bytes_per_second", "byte rate limit", c.rate_limit_bytes),
            ("relay_limit_burst_seconds", "seconds of rate one may burst", c.rate_limit_burst),
            ("relay_limit_ip_connects_per_second", "new connections per IP", c.ip_connect_rate),
            ("relay_limit_max_rooms", "rooms per process", c.max_rooms),
            ("relay_limit_max_connections", "connections per process", c.max_connections),
        ]
        counters = [
            ("relay_rate_limited_messages_total", "messages dropped", s.frames_dropped),
            ("relay_rate_limit_warnings_total", "rate_limited errors sent", s.warnings),
            ("relay_rate_limit_closes_total", "connections closed for flooding", s.closes),
            ("relay_ip_connections_refused_total", "refused for their IP's rate", s.ip_refused),
        ]
        return gauges, counters
