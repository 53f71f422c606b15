"""The operator's HTTP port: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text).

A deliberately small HTTP/1.1 server on trio: GET only, one request per
connection, bounded request size and time. Metrics are read from the relay's
plain counters at scrape time by a custom collector, so the hot path never
touches a metrics lock.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from ._server import Relay

__all__ = ["RelayCollector", "serve_http"]

log = logging.getLogger("relay.http")

_MAX_REQUEST = 8192
_REQUEST_TIMEOUT = 5.0


class RelayCollector:
    """Turns ``Relay.metrics()`` into Prometheus metric families at scrape time."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def collect(self) -> Iterator[Metric]:
        m = self.relay.metrics()
        for name, help_text, value in m["gauges"]:
            g = GaugeMetricFamily(name, help_text)
            g.add_metric([], value)
            yield g
        for name, help_text, value in m["counters"]:
            c = CounterMetricFamily(name.removesuffix("_total"), help_text)
            c.add_metric([], value)
            yield c
        for name, help_text, buckets, total in m["histograms"]:
            h = HistogramMetricFamily(name, help_text)
            h.add_metric([], buckets, sum_value=total)
            yield h


def metrics_text(relay: Relay) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(relay))  # type: ignore[arg-type]
    return generate_latest(registry)


async def _respond(stream: trio.abc.Stream, status: str, content_type: str, body: bytes) -> None:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    await stream.send_all(head + body)


async def _read_request(stream: trio.abc.Stream) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > _MAX_REQUEST:
            return None
    return data


def _route(relay: Relay, method: str, target: str) -> tuple[str, str, bytes]:
    url = urlsplit(target)
    if method != "GET":
        return "405 Method Not Allowed", "text/plain", b"GET only\n"
    if url.path == "/healthz":
        health = relay.health()
        status = "200 OK" if health["status"] != "down" else "503 Service Unavailable"
        return status, "application/json", json.dumps(health).encode() + b"\n"
    if url.path == "/metrics":
        return "200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics_text(relay)
    extra: Callable[[dict[str, list[str]]], Any] | None = relay.http_routes.get(url.path)
    if extra is not None:
        try:
            payload = extra(parse_qs(url.query))
        except ValueError as exc:
            return "400 Bad Request", "application/json", json.dumps({"error": str(exc)}).encode()
        if inspect.isawaitable(payload):
            return _finish(payload)  # type: ignore[return-value]
        return "200 OK", "application/json", json.dumps(payload).encode() + b"\n"
    return "404 Not Found", "text/plain", b"not found\n"


async def _finish(payload: Awaitable[Any]) -> tuple[str, str, bytes]:
    """An async route's answer: 400 for the client's ValueError, 503 for any other error
    (a store that is down, say)."""
    try:
        value = await payload
    except ValueError as exc:
        return "400 Bad Request", "application/json", json.dumps({"error": str(exc)}).encode()
    except Exception as exc:
        error = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
        return "503 Service Unavailable", "application/json", error
    return "200 OK", "application/json", json.dumps(value).encode() + b"\n"


async def _serve_one(relay: Relay, stream: trio.abc.Stream) -> None:
    try:
        with trio.move_on_after(_REQUEST_TIMEOUT):
            raw = await _read_request(stream)
            if raw is None:
                await _respond(stream, "400 Bad Request", "text/plain", b"bad request\n")
                return
            line = raw.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            if len(parts) != 3:
                await _respond(stream, "400 Bad Request", "text/plain", b"bad request line\n")
                return
            # routes may read live state that async route handlers would change
            route = _route(relay, parts[0], parts[1])
            if inspect.isawaitable(route):  # an async route (one that reads a store)
                route = await route
            status, ctype, body = route
            await _respond(stream, status, ctype, body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:
        log.exception("http handler failed")
    finally:
        await trio.aclose_forcefully(stream)


async def serve_http(
    relay: Relay, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve /healthz and /metrics on ``config.http_port``; reports the bound port."""
    config = relay.config
    port = config.http_port or 0
    listeners = await trio.open_tcp_listeners(port, host=config.host)
    bound = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.abc.Stream) -> None:
        await _serve_one(relay, stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.serve_listeners(handler, listeners))
        task_status.started(bound)
