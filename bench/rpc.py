"""The rpc suite: RPC round trips through the relay at increasing call rates.

Clients sit in rooms of 8 (no inputs) and call on an open-loop schedule;
a call's latency runs from its send to the answer (``RpcResult``, or the
``Error`` that refuses it). Two kinds of call:

* room RPC (target ``"room"``): the room's tick hands the call to the rule
  set and answers it in the caller's next state frame. The arena rule set
  has no actions, so it refuses every call (``invalid_event``); that is still
  the whole path (decode, mailbox/link, tick, rule set, answer), which is what
  is measured.
* player RPC (target: another player's id): relayed to the callee, whose
  client answers, relayed back. Measured only when the relay supports it: a
  probe at start-up asks, and the table says so when it does not.

Each step runs on a fresh relay; the suite stops after the first step that is
not sustained (answers short of 95 % of the rate, p99 past ``--max-p99-ms``,
errors, failed or dropped clients).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    BenchError,
    LoadSpec,
    ServerProcess,
    console_for_tables,
    fmt,
    parse_cpus,
    pin_self,
    progress,
    raise_fd_limit,
    result_record,
    run_load,
    run_params,
    server_command,
    write_json,
)

__all__ = ["build_parser", "main", "parse_rates", "probe_relay", "rate_steps"]

DEFAULT_RATES = "100,200,500,1000,2000,4000,8000"


def parse_rates(text: str) -> list[float]:
    """``"100,200,500"`` -> rates; ``ValueError`` for a malformed or non-positive one."""
    rates = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        value = float(part)
        if value <= 0:
            raise ValueError(f"rates must be positive, got {part}")
        rates.append(value)
    if not rates:
        raise ValueError("no rates given")
    return sorted(rates)


def probe_relay(server_cpus: list[int] | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a fresh relay what it relays: ``{"player_rpc": (ok, detail), "signal": (ok, detail)}``.

    Two SDK clients share an arena room; one calls an RPC on the other and
    sends it a ``Signal``. ``ok`` is True when the call is answered by the
    callee and the signal arrives; ``detail`` says what happened otherwise.
    """
    import tempfile

    import trio

    from protocol import Signal
    from relay.client import RpcError, connect

    out: dict[str, Any] = {}

    async def probe(port: int) -> None:
        url = f"ws://127.0.0.1:{port}"
        async with connect(url) as a, connect(url) as b:
            code = await a.create("arena", timeout=timeout)
            await b.join(code, timeout=timeout)
            b.rpc_handlers["bench_probe"] = lambda caller, args: args
            try:
                value = await a.rpc(b.player_id or "", "bench_probe", 7, timeout=timeout)
                out["player_rpc"] = (value == 7, f"answered {value!r}")
            except RpcError as exc:
                out["player_rpc"] = (False, f"the relay answers {exc.code}: {exc.message}")
            # signalling runs between members of one voice channel: both join the room's
            try:
                for client in (a, b):
                    await client.rpc("room", "voice.join", {}, timeout=timeout)
            except RpcError as exc:
                out["signal"] = (False, f"voice.join refused: {exc.code}: {exc.message}")
                return
            await a.send(Signal("offer", b.player_id or "", b"probe", ""))
            with trio.move_on_after(timeout):
                while not b.signals:
                    if a.errors:
                        error = a.errors[-1]
                        out["signal"] = (False, f"the relay answers {error.code}: {error.message}")
                        return
                    await trio.sleep(0.02)
            if b.signals:
                out["signal"] = (True, "relayed")
            else:
                out["signal"] = (False, f"no Signal arrived within {timeout} s")

    with tempfile.TemporaryDirectory(prefix="roomwire-probe-") as data_dir:
        spec = LoadSpec(target="relay", clients=2, server_cpus=server_cpus)
        with ServerProcess(server_command(spec, data_dir), cpus=server_cpus, expect_http=True) as s:
            trio.run(probe, s.port)
    return out


def rate_steps(rates: list[float], max_rate: float | None) -> list[float]:
    return [r for r in rates if max_rate is None or r <= max_rate]


def add_common_options(p: argparse.ArgumentParser, *, clients: int, duration: float) -> None:
    p.add_argument("--clients", type=int, default=clients, help=f"clients ({clients})")
    p.add_argument("--room-size", type=int, default=8, help="clients per room (8)")
    p.add_argument("--rates", default=DEFAULT_RATES, help=f"calls/s steps ({DEFAULT_RATES})")
    p.add_argument("--max-rate", type=float, default=None, help="skip steps above this")
    p.add_argument("--duration", type=float, default=duration, help=f"window, s ({duration:g})")
    p.add_argument("--warmup", type=float, default=1.0, help="settle time, s (1)")
    p.add_argument("--max-p99-ms", type=float, default=100.0, help="sustained: p99 (100)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-cpus", default="0", help="CPUs of the server (0)")
    p.add_argument("--client-cpus", default="1", help="CPUs of the load generator (1)")
    p.add_argument("--workers", type=int, default=1, help="load-generator processes (1)")
    p.add_argument("--transport", default="fast", help="fast or websocket (default fast)")
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot latency against the call rate")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def check_common(opts: argparse.Namespace, prog: str) -> str | None:
    """Validate the shared options in place; returns an error message or None."""
    try:
        opts.server_cpu_list = parse_cpus(opts.server_cpus)
        opts.client_cpu_list = parse_cpus(opts.client_cpus)
        opts.rate_list = rate_steps(parse_rates(opts.rates), opts.max_rate)
    except ValueError as exc:
        return f"{prog}: {exc}"
    if not opts.rate_list:
        return f"{prog}: no rate within --max-rate"
    if opts.clients < 2 or opts.room_size < 2 or opts.workers < 1:
        return f"{prog}: --clients and --room-size must be at least 2"
    if opts.duration <= 0 or opts.warmup < 0:
        return f"{prog}: --duration must be positive"
    return None


def run_rate_step(
    opts: argparse.Namespace, bar: Any, *, kind: str, rate: float, target: str
) -> dict[str, Any]:
    """One step: ``rate`` calls (or signals) per second in total, spread over the clients."""
    per_client = rate / opts.clients
    worker: dict[str, Any] = {"mode": "rooms", "room_mode": "arena", "input_hz": 0.0}
    worker["verify_every"] = 0
    if kind == "signal":
        worker.update(signal_hz=per_client, rpc_target="next")
    else:
        worker.update(rpc_hz=per_client, rpc_target=target, rpc_method="bench_ping")
    spec = LoadSpec(
        target="relay",
        clients=opts.clients,
        room_size=opts.room_size,
        server_cpus=opts.server_cpu_list,
        client_cpus=opts.client_cpu_list,
        workers=opts.workers,
        seed=opts.seed,
        warmup=opts.warmup,
        duration=opts.duration,
        transport=opts.transport,
        worker=worker,
    )
    run = run_load(spec, bar, task_note=f"{kind} {target} {rate:g}/s")
    c = run["clients"]
    window = c["window_seconds"] or run["server"]["window_seconds"]
    hist = c["hists"]["signal_latency" if kind == "signal" else "rpc_latency"]
    lat = hist.summary_ms()
    done_per_s = hist.n / window if window else 0.0
    errors = {k: v for k, v in c["rpc_errors"].items() if not k.startswith("refused:")}
    # error frames that answer no call (a refused signal has no id to refer to), and
    # frames the client could not decode (their answers are lost to it)
    for key, n in c["other_frames"].items():
        if key.startswith(("error:", "undecodable")):
            errors[key] = errors.get(key, 0) + n
    refused = {k: v for k, v in c["rpc_errors"].items() if k.startswith("refused:")}
    failed = max(run["setup"]["failed"], c["failed"])
    # a call to a player crosses two ticks (to the callee, and its answer back)
    bound = opts.max_p99_ms if target == "room" or kind == "signal" else opts.max_p99_ms_player
    checks = {
        "rate": done_per_s >= 0.95 * rate,
        "latency_p99": lat["p99_ms"] is not None and lat["p99_ms"] <= bound,
        "no_errors": not errors,
        "no_failed_or_dropped": failed == 0 and c["dropped"] == 0,
    }
    return {
        "kind": kind,
        "target": target,
        "rate": rate,
        "clients": opts.clients,
        "completed_per_s": round(done_per_s, 1),
        "sent": c["signals_sent"] if kind == "signal" else c["rpcs_sent"],
        "latency": lat,
        "errors": errors,
        "refusals": refused,
        "server_cpu_percent": round(run["server"]["cpu_percent"], 1),
        "server_other_load_percent": run["server"].get("other_load_percent"),
        "loadgen_cpu_percent": round(run["loadgen_cpu_percent"], 1),
        "failed_joins": failed,
        "dropped": c["dropped"],
        "checks": checks,
        "sustained": all(checks.values()),
        "server_command": run["server_command"],
    }


def run_series(
    opts: argparse.Namespace, bar: Any, *, kind: str, target: str
) -> list[dict[str, Any]]:
    rows = []
    for rate in opts.rate_list:
        row = run_rate_step(opts, bar, kind=kind, rate=rate, target=target)
        rows.append(row)
        if not row["sustained"]:
            break
    return rows


def max_sustained_rate(rows: list[dict[str, Any]]) -> float | None:
    best = None
    for row in rows:
        if not row["sustained"]:
            break
        best = row["rate"]
    return best


def render(rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for name in (
        "kind",
        "target",
        "rate/s",
        "done/s",
        "p50 ms",
        "p95",
        "p99",
        "max",
        "srv CPU %",
        "loadgen CPU %",
        "errors",
        "sustained",
    ):
        table.add_column(name, justify="right")
    for r in rows:
        lat = r["latency"]
        table.add_row(
            r["kind"],
            r["target"],
            fmt(r["rate"], 0),
            fmt(r["completed_per_s"], 0),
            fmt(lat["p50_ms"]),
            fmt(lat["p95_ms"]),
            fmt(lat["p99_ms"]),
            fmt(lat["max_ms"]),
            fmt(r["server_cpu_percent"]),
            fmt(r["loadgen_cpu_percent"]),
            fmt(sum(r["errors"].values())),
            "yes" if r["sustained"] else "NO",
        )
    console_for_tables().print(table)


def plot_rates(rows: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for target in sorted({r["target"] for r in rows}):
        pts = [r for r in rows if r["target"] == target]
        x = [r["rate"] for r in pts]
        ax.plot(x, [r["latency"]["p50_ms"] for r in pts], "-o", label=f"{target} p50")
        ax.plot(x, [r["latency"]["p99_ms"] for r in pts], "--s", label=f"{target} p99")
    ax.set_xscale("log")
    ax.set_xlabel("calls per second (total)")
    ax.set_ylabel("round trip (ms)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench rpc", description="RPC round trips at increasing call rates."
    )
    add_common_options(p, clients=64, duration=5.0)
    p.add_argument(
        "--max-p99-ms-player",
        type=float,
        default=150.0,
        help="sustained: p99 of a player RPC, which crosses two ticks (150)",
    )
    p.add_argument(
        "--target",
        choices=("room", "player", "both"),
        default="both",
        help="room RPC, player-to-player RPC (when the relay has it), or both (default)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    error = check_common(opts, "bench rpc")
    if error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    params = run_params(opts)
    record = result_record("rpc", params, opts.seed)
    raise_fd_limit()
    pin_self(opts.client_cpu_list)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    try:
        if opts.target in ("player", "both"):
            features = probe_relay(opts.server_cpu_list)
            ok, detail = features.get("player_rpc", (False, "probe did not finish"))
            summary["player_rpc_available"] = ok
            summary["player_rpc_probe"] = detail
            if not ok:
                print(f"player-to-player RPC: not available ({detail})", file=sys.stderr)
                if opts.target == "player":
                    record["summary"] = summary
                    if opts.json:
                        write_json(opts.json, record)
                    return 2
        with progress(not opts.quiet) as bar:
            if opts.target in ("room", "both"):
                rows += run_series(opts, bar, kind="rpc", target="room")
                summary["room_max_sustained_rate"] = max_sustained_rate(rows)
            if summary.get("player_rpc_available"):
                player = run_series(opts, bar, kind="rpc", target="next")
                for r in player:
                    r["target"] = "player"
                rows += player
                summary["player_max_sustained_rate"] = max_sustained_rate(player)
    except BenchError as exc:
        print(f"bench rpc: {exc}", file=sys.stderr)
        record.update(error=str(exc), runs=rows, summary=summary)
        if opts.json:
            write_json(opts.json, record)
        return EXIT_FAILURE
    record["runs"] = rows
    record["summary"] = summary
    render(rows, f"rpc, {opts.clients} clients in rooms of {opts.room_size} ({record['commit']})")
    for key in ("room_max_sustained_rate", "player_max_sustained_rate"):
        if key in summary:
            print(f"{key.replace('_', ' ')}: {fmt(summary[key], 0)} calls/s")
    if "player_rpc_probe" in summary and not summary.get("player_rpc_available"):
        print(f"player RPC: not measured ({summary['player_rpc_probe']})")
    if opts.json:
        write_json(opts.json, record)
    if opts.plot and rows:
        plot_rates(rows, opts.plot, f"rpc round trips ({record['commit']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
