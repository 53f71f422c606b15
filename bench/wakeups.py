"""Micro-benchmark: CPU per room wake-up, trio.sleep_until against the shared Ticker.

    python -m bench.wakeups [--rooms 200] [--seconds 3]

Each of N tasks ticks at 20 Hz on its own phase, as rooms do; the figure is
process CPU time per wake-up. Pin it for stable numbers (``taskset -c 1``).
"""

from __future__ import annotations

import argparse
import time

import trio

from actors._ticker import Ticker

RATE = 20.0


async def _measure(rooms: int, seconds: float, ticker: Ticker | None) -> float:
    count = 0

    async def room(i: int) -> None:
        nonlocal count
        t0 = trio.current_time() + i * 0.00025  # rooms made one after another
        sleep_until = ticker.sleep_until if ticker is not None else trio.sleep_until
        n = 0
        while True:
            n += 1
            await sleep_until(t0 + n / RATE)
            count += 1

    async with trio.open_nursery() as nursery:
        if ticker is not None:
            await nursery.start(ticker.run)
        for i in range(rooms):
            nursery.start_soon(room, i)
        await trio.sleep(0.5)  # warm-up
        count = 0
        c0 = time.process_time()
        await trio.sleep(seconds)
        c1 = time.process_time()
        nursery.cancel_scope.cancel()
    return (c1 - c0) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wakeups", description=__doc__)
    p.add_argument("--rooms", type=int, default=200)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    plain = trio.run(_measure, args.rooms, args.seconds, None)
    shared = trio.run(_measure, args.rooms, args.seconds, Ticker(slot=1 / (5 * RATE)))
    print(f"{args.rooms} rooms at {RATE:g} Hz, CPU per room wake-up:")
    print(f"  trio.sleep_until, one timer per room: {plain:6.1f} µs")
    print(f"  shared Ticker, 10 ms slots:           {shared:6.1f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
