"""The cost of durability in the room runtime itself: rooms without sockets, with and
without a checkpoint store.

``relay bench checkpoint`` measures a whole relay (transport included) under fanout load;
on a small machine the transport caps it far below 500 rooms. This harness leaves the
transport out so the durability share is measured at scale: ``--rooms`` arena rooms of
``--size`` members in one process, each member's link handing the room one input per tick
(20 inputs/s at 20 Hz), and nothing sent anywhere. It runs twice, each pass in a fresh
process pinned to ``--cpu``: without durability, then with the store, and reports the
process CPU share (its worker threads included), tick figures, the checkpointer's flushes
and, for Redis, ``INFO commandstats`` and the server's CPU over the same window.

    python -m bench.checkpoint --rooms 500 --store redis://127.0.0.1:6379/0

Its keys use the prefix ``roomwire-bench:`` (never a relay's rooms) and it deletes its
rooms at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

__all__ = ["main"]

PREFIX = "roomwire-bench:"


class BenchLink:
    """A member connection in memory: one input per tick in, every frame dropped."""

    def __init__(self, player_id: str) -> None:
        from protocol import MsgpackCodec

        self.codec = MsgpackCodec()
        self.player_id = player_id
        self.closed = False
        self.seq = 0
        self.bytes_sent = 0

    def receive_nowait(self) -> list[Any]:
        from protocol import Input

        self.seq += 1
        s = self.seq
        return [Input(s, {"x": float(s % 97), "y": float(s % 89), "angle": float(s % 7)})]

    def ready(self) -> bool:
        return True

    def send_nowait(self, data: bytes) -> None:
        self.bytes_sent += len(data)

    def close_nowait(self, code: int, reason: str) -> None:
        self.closed = True

    def detach(self, reason: str) -> None:
        pass


def _redis_sample(url: str) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        stats = client.info("commandstats")
        cpu = client.info("cpu")
    finally:
        client.close()
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    usec = {k.removeprefix("cmdstat_"): v["usec"] for k, v in stats.items()}
    return {"calls": calls, "usec": usec, "cpu": cpu["used_cpu_sys"] + cpu["used_cpu_user"]}


async def _pass(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process: rooms, warm-up, window, clean-up."""
    import trio

    from actors import ArenaRules, RoomConfig, RoomRegistry
    from relay._config import Config
    from relay._durability import Durability
    from relay._store import open_store

    durability = None
    if args.store != "none":
        store = open_store(args.store, prefix=PREFIX, default_path=os.devnull)
        config = Config(store=None, store_flush_interval=args.flush_interval)
        durability = Durability(config, store=store)
    registry = RoomRegistry(
        [ArenaRules()],
        config=RoomConfig(empty_grace=3600.0, reconnect_grace=30.0),
        max_rooms=args.rooms + 16,
        checkpoint_sink=durability.room_sink if durability else None,
        game_record_sink=durability.recorder if durability else None,
    )
    redis_url = args.store if args.store.startswith("redis") else None
    out: dict[str, Any] = {"store": args.store, "rooms": args.rooms, "size": args.size}
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        if durability is not None:
            await nursery.start(durability.run, registry)
        replies = []
        for _ in range(args.rooms):
            handle = registry.create("arena", {"max_players": args.size})
            for i in range(args.size):
                link = BenchLink(f"p{i}")
                replies.append(handle.room.join_nowait(link.player_id, f"P{i}", link, 1))
        for reply in replies:
            await reply.wait(60.0)
        await trio.sleep(args.warmup)

        def totals() -> tuple[float, int, int]:
            stats = [h.statistics() for h in registry.rooms()]
            return (
                sum(s.tick_seconds_total for s in stats),
                sum(s.ticks for s in stats),
                sum(s.overruns for s in stats),
            )

        cp0 = durability.checkpointer.statistics() if durability else None
        r0 = await trio.to_thread.run_sync(_redis_sample, redis_url) if redis_url else None
        t0, c0, (s0, n0, o0) = time.perf_counter(), time.process_time(), totals()
        await trio.sleep(args.seconds)
        t1, c1, (s1, n1, o1) = time.perf_counter(), time.process_time(), totals()
        r1 = await trio.to_thread.run_sync(_redis_sample, redis_url) if redis_url else None
        window = t1 - t0
        out["cpu_share"] = (c1 - c0) / window
        out["tick_share"] = (s1 - s0) / window
        out["ticks_per_s"] = (n1 - n0) / window
        out["overruns_per_s"] = (o1 - o0) / window
        if durability is not None and cp0 is not None:
            cp1 = durability.checkpointer.statistics()
            out["flushes_per_s"] = (cp1.flushes - cp0.flushes) / window
            out["submissions_per_s"] = (cp1.submitted - cp0.submitted) / window
            out["backlog_entries_end"] = cp1.backlog_entries
            out["flush_failures"] = cp1.failures - cp0.failures
        if r0 is not None and r1 is not None:
            calls = {
                k: round((v - r0["calls"].get(k, 0)) / window)
                for k, v in r1["calls"].items()
                if v - r0["calls"].get(k, 0)
            }
            out["redis_calls_per_s"] = calls
            top = ("evalsha", "zadd", "zremrangebyscore", "pexpire", "del", "zrem")
            # commandstats counts the commands a script runs too; the pipeline sends
            # EVALSHA, ZADD, ZREMRANGEBYSCORE and two PEXPIRE per batch
            out["redis_commands_sent_per_s"] = (
                calls.get("evalsha", 0)
                + calls.get("zadd", 0)
                + calls.get("zremrangebyscore", 0)
                + 2 * calls.get("zadd", 0)
            )
            out["redis_commands_total_per_s"] = sum(calls.values())
            out["redis_cpu_share"] = (r1["cpu"] - r0["cpu"]) / window
            out["redis_top_level"] = {k: calls.get(k, 0) for k in top}
        for handle in registry.rooms():  # leave nothing behind in the store
            handle.stop_nowait("bench over")
        with trio.move_on_after(10):
            while registry.rooms():
                await trio.sleep(0.05)
        if durability is not None and durability.checkpointer is not None:
            with trio.move_on_after(10):
                await durability.checkpointer.wait_flushed()
        nursery.cancel_scope.cancel()
    if durability is not None and durability.store is not None:
        await durability.store.aclose()
    return out


def _run_pass(args: argparse.Namespace, store: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.checkpoint",
        "--pass",
        store,
        "--rooms",
        str(args.rooms),
        "--size",
        str(args.size),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--flush-interval",
        str(args.flush_interval),
    ]
    if args.cpu is not None:
        cmd += ["--cpu", str(args.cpu)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench checkpoint pass {store!r} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.checkpoint", description=__doc__)
    p.add_argument("--rooms", type=int, default=500)
    p.add_argument("--size", type=int, default=8, help="members per room (8)")
    p.add_argument("--store", default="none", help="store URL to measure (default: none)")
    p.add_argument("--seconds", type=float, default=10.0, help="measuring window (10)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--cpu", type=int, default=None, help="pin each pass to this CPU")
    p.add_argument(
        "--flush-interval", type=float, default=0.05, help="store_flush_interval, s (0.05)"
    )
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--pass", dest="one_pass", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one_pass is not None:
        import trio

        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        args.store = args.one_pass
        print(json.dumps(trio.run(_pass, args)))
        return 0
    runs = [_run_pass(args, "none")]
    if args.store != "none":
        runs.append(_run_pass(args, args.store))
    base = runs[0]
    print(
        f"{args.rooms} rooms of {args.size}, one input per member per tick (20/s), "
        f"flush every {args.flush_interval * 1000:.0f} ms"
    )
    for run in runs:
        extra = ""
        if run is not base:
            extra = f"  durability +{(run['cpu_share'] - base['cpu_share']) * 100:.1f} pp"
            extra += f", {run.get('flushes_per_s', 0):.1f} flushes/s"
        if "redis_commands_total_per_s" in run:
            extra += (
                f", redis {run['redis_commands_sent_per_s']} cmds/s sent"
                f" ({run['redis_commands_total_per_s']} incl. scripted),"
                f" redis CPU {run['redis_cpu_share'] * 100:.1f}%"
            )
        print(
            f"  {run['store']:<32} CPU {run['cpu_share'] * 100:5.1f}%  "
            f"ticks {run['ticks_per_s']:7.0f}/s  overruns {run['overruns_per_s']:5.1f}/s{extra}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"suite": "checkpoint-rooms", "args": vars(args), "runs": runs}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
