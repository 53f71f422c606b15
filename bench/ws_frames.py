"""Micro-benchmark of the server WebSocket frame layer: parse and write cost per frame.

Parses realistic client frames (a ~40-byte masked binary message, as a game
input) in batches of 1, 5 and 20 frames per feed, the way a tick-polled read
returns them, and times the writer for a ~180-byte state frame. wsproto's frame
parser on the same bytes is shown for reference. Run: python -m bench.ws_frames
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial

from protocol._websocket import (
    Opcode,
    WebSocketParser,
    encode_binary,
    encode_ping,
    frame_header,
)


def client_frame(payload: bytes, mask: bytes) -> bytes:
    """A masked FIN+BINARY client frame with a 7-bit length, built by hand."""
    assert len(payload) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + body


def best_time_per_call(fn: Callable[[], object], seconds: float, repeats: int = 3) -> float:
    """Seconds per call of ``fn``: calibrate a loop to ``seconds``, best of ``repeats``.

    Includes the loop and one call overhead (~0.05 us), as a caller would pay.
    """
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 10:
            break
        loops *= 4
    loops = max(1, int(loops * seconds / max(elapsed, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - start) / loops)
    return best


def parse_rows(seconds: float) -> list[tuple[str, int, float]]:
    """(parser, frames per feed, seconds per feed) for each batch size."""
    rows = []
    frames = [client_frame(os.urandom(40), os.urandom(4)) for _ in range(20)]
    for batch in (1, 5, 20):
        chunk = b"".join(frames[:batch])
        parser = WebSocketParser()
        events = parser.feed(chunk)
        assert len(events) == batch, events
        feed = partial(parser.feed, chunk)
        rows.append(("roomwire", batch, best_time_per_call(feed, seconds)))
    try:
        from wsproto.frame_protocol import FrameProtocol
    except ImportError:  # wsproto is only the reference row
        return rows
    for batch in (1, 20):
        chunk = b"".join(frames[:batch])
        proto = FrameProtocol(client=False, extensions=[])

        def wsproto_feed(chunk: bytes = chunk, proto: FrameProtocol = proto) -> list:
            proto.receive_bytes(chunk)
            return list(proto.received_frames())

        assert len(wsproto_feed()) == batch
        rows.append(("wsproto (reference)", batch, best_time_per_call(wsproto_feed, seconds)))
    return rows


def writer_rows(seconds: float) -> list[tuple[str, float]]:
    state = os.urandom(180)
    return [
        ("encode_binary(180 B)", best_time_per_call(partial(encode_binary, state), seconds)),
        (
            "frame_header(BINARY, 180)",
            best_time_per_call(partial(frame_header, Opcode.BINARY, 180), seconds),
        ),
        ("encode_ping(8 B)", best_time_per_call(partial(encode_ping, b"12345678"), seconds)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ws_frames", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=0.3, help="time per measurement (default 0.3)"
    )
    args = parser.parse_args(argv)

    print(f"python {platform.python_version()} on {platform.machine()}, best of 3")
    print()
    print(
        f"{'parse (40 B masked binary)':<28} {'frames/feed':>11} {'frames/s':>12} {'us/frame':>9}"
    )
    for name, batch, per_feed in parse_rows(args.seconds):
        per_frame = per_feed / batch
        print(f"{name:<28} {batch:>11} {1 / per_frame:>12,.0f} {per_frame * 1e6:>9.2f}")
    print()
    print(f"{'write':<28} {'calls/s':>12} {'us/call':>9}")
    for name, per_call in writer_rows(args.seconds):
        print(f"{name:<28} {1 / per_call:>12,.0f} {per_call * 1e6:>9.2f}")
    print()
    print(f"reproduce: python -m bench.ws_frames --seconds {args.seconds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
