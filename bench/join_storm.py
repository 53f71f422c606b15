"""The join-storm suite: players arriving at increasing rates (connect, hello, create or join).

Clients arrive on an open-loop schedule (evenly spaced at the step's rate,
whatever the relay's answers) and go through the whole entry path: TCP
connect and WebSocket handshake, ``Hello`` -> ``Welcome``, then ``Create``
(the first of every 8) or ``Join`` by code -> ``Joined`` with the room's
keyframe. Each stage is timed, and so is the time from arrival to being in a
room. The headline figure is the time to create a room (arrival of the room's
first client -> its ``Joined``), whose target is under 100 ms at p99.

Each step runs on a fresh relay; the suite stops after the first step with a
failed entry or a time-to-create p99 past ``--bound-ms``.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from ._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    BenchError,
    LoadSpec,
    console_for_tables,
    fmt,
    parse_cpus,
    pin_self,
    progress,
    raise_fd_limit,
    result_record,
    run_load,
    run_params,
    write_json,
)
from .rpc import parse_rates

__all__ = ["build_parser", "main"]

DEFAULT_RATES = "25,50,100,200,400,800,1600"
STAGES = (
    ("connect", "TCP + WebSocket handshake"),
    ("hello", "Hello -> Welcome"),
    ("create", "Create -> Joined"),
    ("join", "Join -> Joined"),
    ("room_ready_creator", "arrival -> in a new room (time to create a room)"),
    ("room_ready_joiner", "arrival -> in a room by code"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench join-storm",
        description="Connect + hello + create/join per second at increasing rates.",
    )
    p.add_argument("--rates", default=DEFAULT_RATES, help=f"arrivals/s steps ({DEFAULT_RATES})")
    p.add_argument("--max-rate", type=float, default=None, help="skip steps above this")
    p.add_argument("--duration", type=float, default=3.0, help="arrivals last this long, s (3)")
    p.add_argument("--room-size", type=int, default=8, help="clients per room (8)")
    p.add_argument(
        "--bound-ms", type=float, default=100.0, help="sustained: time-to-create p99 (100)"
    )
    p.add_argument("--setup-timeout", type=float, default=10.0, help="give up on a client, s")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-cpus", default="0", help="CPUs of the server (0)")
    p.add_argument("--client-cpus", default="1", help="CPUs of the load generator (1)")
    p.add_argument("--workers", type=int, default=1, help="load-generator processes (1)")
    p.add_argument("--transport", default="fast", help="fast or websocket (default fast)")
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run_step(opts: argparse.Namespace, bar: Any, rate: float) -> dict[str, Any]:
    clients = max(opts.room_size, math.ceil(rate * opts.duration))
    spec = LoadSpec(
        target="relay",
        clients=clients,
        room_size=opts.room_size,
        server_cpus=opts.server_cpu_list,
        client_cpus=opts.client_cpu_list,
        workers=opts.workers,
        seed=opts.seed,
        warmup=0.0,
        duration=0.0,
        transport=opts.transport,
        setup_timeout=opts.setup_timeout,
        worker={
            "mode": "storm",
            "room_mode": "arena",
            "storm_rate": rate,
            "storm_duration": clients / rate,
            "verify_every": 0,
        },
    )
    run = run_load(spec, bar, task_note=f"{rate:g} arrivals/s")
    c = run["clients"]
    stages = {name: c["stages"][name].summary_ms() for name, _ in STAGES if name in c["stages"]}
    create = stages.get("room_ready_creator", {})
    arrived = c["arrivals"]
    checks = {
        "no_failed": c["failed"] == 0 and c["joined"] == arrived and arrived == clients,
        "create_p99": create.get("p99_ms") is not None and create["p99_ms"] <= opts.bound_ms,
    }
    return {
        "rate": rate,
        "clients": clients,
        "arrived": arrived,
        "joined": c["joined"],
        "failed": c["failed"],
        "fail_reasons": c["fail_reasons"],
        "dropped": c["dropped"],
        "stages": stages,
        "server_cpu_percent": round(run["server"]["cpu_percent"], 1),
        "server_other_load_percent": run["server"].get("other_load_percent"),
        "server_rss_mb": (
            round(run["server"]["rss_bytes"] / 2**20, 1) if run["server"]["rss_bytes"] else None
        ),
        "loadgen_cpu_percent": round(run["loadgen_cpu_percent"], 1),
        "checks": checks,
        "sustained": all(checks.values()),
        "server_command": run["server_command"],
    }


def render(rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for name in (
        "rate/s",
        "clients",
        "failed",
        "connect p50/p99",
        "hello p50/p99",
        "create p50/p99",
        "join p50/p99",
        "to new room p50/p99",
        "to room p99",
        "srv CPU %",
        "sustained",
    ):
        table.add_column(name, justify="right")

    def pair(stage: dict[str, Any] | None) -> str:
        if not stage or not stage.get("count"):
            return "-"
        return f"{fmt(stage['p50_ms'])} / {fmt(stage['p99_ms'])}"

    for r in rows:
        s = r["stages"]
        table.add_row(
            fmt(r["rate"], 0),
            fmt(r["clients"]),
            fmt(r["failed"]),
            pair(s.get("connect")),
            pair(s.get("hello")),
            pair(s.get("create")),
            pair(s.get("join")),
            pair(s.get("room_ready_creator")),
            fmt((s.get("room_ready_joiner") or {}).get("p99_ms")),
            fmt(r["server_cpu_percent"]),
            "yes" if r["sustained"] else "NO",
        )
    console_for_tables().print(table)


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    try:
        opts.server_cpu_list = parse_cpus(opts.server_cpus)
        opts.client_cpu_list = parse_cpus(opts.client_cpus)
        rates = [r for r in parse_rates(opts.rates) if opts.max_rate is None or r <= opts.max_rate]
    except ValueError as exc:
        print(f"bench join-storm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not rates or opts.duration <= 0 or opts.room_size < 1 or opts.workers < 1:
        print(
            "bench join-storm: need a rate, a positive --duration and --room-size", file=sys.stderr
        )
        return EXIT_USAGE
    params = run_params(opts)
    record = result_record("join-storm", params, opts.seed)
    raise_fd_limit()
    pin_self(opts.client_cpu_list)
    rows: list[dict[str, Any]] = []
    try:
        with progress(not opts.quiet) as bar:
            for rate in rates:
                row = run_step(opts, bar, rate)
                rows.append(row)
                if not row["sustained"]:
                    break
    except BenchError as exc:
        print(f"bench join-storm: {exc}", file=sys.stderr)
        record.update(error=str(exc), runs=rows)
        if opts.json:
            write_json(opts.json, record)
        return EXIT_FAILURE
    best = None
    for row in rows:
        if not row["sustained"]:
            break
        best = row["rate"]
    record["runs"] = rows
    record["summary"] = {"max_sustained_rate": best, "stages": dict(STAGES)}
    render(rows, f"join storm, rooms of {opts.room_size} ({record['commit']}); times in ms")
    print(
        f"max sustained arrival rate: {fmt(best, 0)}/s (time to create a room p99 <= "
        f"{opts.bound_ms:g} ms, no failures)"
    )
    if opts.json:
        write_json(opts.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
