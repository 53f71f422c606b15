"""The fanout suite: rooms of 8 moving players, 20 inputs per second each, a 20 Hz state stream.

Measures what one relay process sustains: the server runs alone on its
pinned CPUs, the load generator (``bench.loadgen``) on others. Each client
sends an ``Input`` every 50 ms on an open-loop schedule (a fixed random
phase, never waiting for replies), with a small random walk of x, y and
angle; latency is the time from an input's send to the first state frame
that shows that player's seq at or past it. ``--sweep`` steps the number of
clients up to the first step that is not sustained; ``--baseline`` runs the
same traffic against ``bench.echo_baseline`` (the transport alone).

    python -m bench fanout --ccu 400 --duration 10 --json out.json
    python -m bench fanout --sweep --baseline --plot docs/img/fanout.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from ._common import (
    EXIT_FAILURE,
    EXIT_NOT_AVAILABLE,
    EXIT_USAGE,
    REPO_ROOT,
    BenchError,
    LoadSpec,
    ServerProcess,
    console_for_tables,
    fmt,
    metric_delta,
    parse_cpus,
    pin_self,
    progress,
    raise_fd_limit,
    result_record,
    run_load,
    run_params,
    scrape_json,
    server_command,
    tick_figures,
    write_json,
)

__all__ = ["SWEEP_STEPS", "build_parser", "main", "summarize", "sweep_steps"]

SWEEP_STEPS = (80, 200, 400, 800, 1200, 1600)
SWEEP_INCREMENT = 200  # after the listed steps: fine steps where a relay tops out


def sweep_steps(max_ccu: int, start: int | None = None) -> list[int]:
    """80, 200, 400, 800, 1200, 1600, then +200 up to ``max_ccu`` (inclusive)."""
    steps = [s for s in SWEEP_STEPS if s <= max_ccu]
    nxt = SWEEP_STEPS[-1] + SWEEP_INCREMENT
    while nxt <= max_ccu:
        steps.append(nxt)
        nxt += SWEEP_INCREMENT
    if start is not None:
        steps = [s for s in steps if s >= start]
    return steps


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench fanout",
        description="Rooms of 8 moving players against one relay process: CCU, latency, CPU.",
    )
    p.add_argument("--ccu", type=int, default=80, help="concurrent clients (default 80)")
    p.add_argument("--room-size", type=int, default=8, help="clients per room (default 8)")
    p.add_argument("--duration", type=float, default=10.0, help="measuring window, s (10)")
    p.add_argument("--warmup", type=float, default=3.0, help="settle time before it, s (3)")
    p.add_argument("--seed", type=int, default=1, help="phases, walks, masks (default 1)")
    p.add_argument("--input-hz", type=float, default=20.0, help="inputs per client per s (20)")
    p.add_argument("--transport", default="fast", help="fast or websocket (default fast)")
    p.add_argument("--server-cpus", default="0", help="CPUs of the server (default 0)")
    p.add_argument("--client-cpus", default="1", help="CPUs of the load generator (default 1)")
    p.add_argument("--workers", type=int, default=1, help="load-generator processes (1)")
    p.add_argument(
        "--verify-every",
        type=int,
        default=32,
        help="every N-th client also decodes in full and checks the shortcut (32)",
    )
    p.add_argument(
        "--connect-concurrency", type=int, default=64, help="clients connecting at once (64)"
    )
    p.add_argument("--sweep", action="store_true", help="step CCU up to the first failing step")
    p.add_argument("--max-ccu", type=int, default=4000, help="last sweep step (4000)")
    p.add_argument("--start-ccu", type=int, default=None, help="first sweep step to run")
    p.add_argument("--baseline", action="store_true", help="also run the echo baseline")
    p.add_argument("--max-p99-ms", type=float, default=100.0, help="sustained: latency p99 (100)")
    p.add_argument(
        "--min-frame-ratio",
        type=float,
        default=0.975,
        help="sustained: each client gets this share of the ticks (0.975)",
    )
    p.add_argument(
        "--max-cpu-share",
        type=float,
        default=0.95,
        help="sustained: server CPU at most this share of its pinned cores (0.95)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="run a step again when its measurement is not valid (1)",
    )
    p.add_argument("--server-arg", action="append", default=[], help="extra relay serve flag")
    p.add_argument("--json", metavar="FILE", help="write the full result as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot latency and server CPU against CCU")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def summarize(run: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """The figures of one step, and whether it is sustained (with the failed checks)."""
    spec: LoadSpec = run["spec"]
    c = run["clients"]
    window = c["window_seconds"] or run["server"]["window_seconds"]
    tick_rate = c["tick_rate"] or 20.0
    fpc = c["frames_per_client"]
    running = len(fpc)
    per_client_rate = [n / window for n in fpc] if window else []
    lat = c["hists"]["latency"].summary_ms()
    lag = c["hists"]["send_lag"].summary_ms()
    deltas = c["deltas"]
    delta_mean = c["delta_bytes"] / deltas if deltas else None
    keq = c["keyframe_equivalent_bytes"]
    key_mean = statistics.fmean(keq) if keq else None
    ratio = delta_mean / key_mean if delta_mean and key_mean else None
    server_cores = len(spec.server_cpus) if spec.server_cpus else 1
    client_cores = len(spec.client_cpus) if spec.client_cpus else 1
    frames_in = metric_delta(run, "relay_frames_received_total")
    frames_out = metric_delta(run, "relay_frames_sent_total")
    sw = run["server"]["window_seconds"]
    ticks = tick_figures(run) if spec.target == "relay" else {}
    failed = max(run["setup"]["failed"], c["failed"])
    dropped = c["dropped"]
    verify = c["verify"]
    # A client's frame count over a window can be one short of the rate by
    # where the window edges fall; allow that one frame.
    min_rate = min(((n + 1) / window for n in fpc), default=0.0) if window else 0.0
    checks = {
        "frames": min_rate >= opts.min_frame_ratio * tick_rate and running > 0,
        "latency_p99": lat["p99_ms"] is not None and lat["p99_ms"] <= opts.max_p99_ms,
        "server_cpu": run["server"]["cpu_percent"] <= 100.0 * opts.max_cpu_share * server_cores,
        "no_failed_or_dropped": failed == 0 and dropped == 0 and running == spec.clients,
    }
    valid = {
        "verify_mismatches_zero": verify["mismatches"] == 0 and verify["shortcut_errors"] == 0,
        "loadgen_not_saturated": run["loadgen_cpu_percent"] <= 90.0 * client_cores
        and (lag["p99_ms"] is None or lag["p99_ms"] <= 10.0),
    }
    other = run["server"].get("other_load_percent")
    return {
        "target": spec.target,
        "transport": spec.transport if spec.target == "relay" else "trio-websocket",
        "ccu": spec.clients,
        "running": running,
        "window_seconds": round(window, 3),
        "tick_rate": tick_rate,
        "server_cpu_percent": round(run["server"]["cpu_percent"], 1),
        # comparable across CCUs as long as the server is not saturated
        "server_cpu_percent_per_client": (
            round(run["server"]["cpu_percent"] / running, 4) if running else None
        ),
        "server_rss_mb": (
            round(run["server"]["rss_bytes"] / 2**20, 1) if run["server"]["rss_bytes"] else None
        ),
        "server_other_load_percent": None if other is None else round(other, 1),
        "server_frames_in_per_s": None if frames_in is None else round(frames_in / sw, 1),
        "server_frames_out_per_s": None if frames_out is None else round(frames_out / sw, 1),
        "client_frames_in_per_s": round(c["msgs_in"] / window, 1) if window else None,
        "client_frames_out_per_s": round(c["inputs_sent"] / window, 1) if window else None,
        "state_frames_per_client_per_s": {
            "mean": round(statistics.fmean(per_client_rate), 2) if per_client_rate else None,
            "min": round(min(per_client_rate), 2) if per_client_rate else None,
        },
        "bytes_in_per_client_per_s": (
            round(c["bytes_in"] / window / running, 1) if running and window else None
        ),
        "bytes_out_per_client_per_s": (
            round(c["bytes_out"] / window / running, 1) if running and window else None
        ),
        "delta_frame_bytes_mean": None if delta_mean is None else round(delta_mean, 1),
        "keyframe_bytes_mean": None if key_mean is None else round(key_mean, 1),
        "delta_vs_keyframe_ratio": None if ratio is None else round(ratio, 3),
        "latency": lat,
        "tick": ticks,
        "store": store_figures(run),
        "loadgen_cpu_percent": round(run["loadgen_cpu_percent"], 1),
        "loadgen_send_lag": lag,
        "failed_joins": failed,
        "fail_reasons": {**run["setup"]["fail_reasons"], **c["fail_reasons"]},
        "dropped": dropped,
        "drop_reasons": c["drop_reasons"],
        "setup_seconds": round(run["setup"]["setup_seconds"], 2),
        "verify": verify,
        "errors_received": c["other_frames"],
        "checks": checks,
        "validity": valid,
        "sustained": all(checks.values()),
        "valid": all(valid.values()),
        "server_command": run["server_command"],
        "worker_commands": run["worker_commands"],
        "cores_busy_percent": run.get("cores_busy_percent"),
    }


def store_figures(run: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint store's work over the window (when the relay reports one)."""
    after = run["server"]["metrics_after"] or {}
    if "relay_checkpoints_total" not in after:
        return {}
    sw = run["server"]["window_seconds"]
    out: dict[str, Any] = {}
    for name, key in (
        ("relay_checkpoints_total", "checkpoints_per_s"),
        ("relay_journal_entries_total", "journal_entries_per_s"),
        ("relay_store_flushes_total", "flushes_per_s"),
    ):
        d = metric_delta(run, name)
        out[key] = None if d is None else round(d / sw, 1)
    out["failures"] = metric_delta(run, "relay_store_failures_total")
    out["backlog_entries_at_end"] = after.get("relay_store_backlog_entries")
    return out


def _spec(opts: argparse.Namespace, target: str, ccu: int) -> LoadSpec:
    return LoadSpec(
        target=target,
        clients=ccu,
        room_size=opts.room_size,
        server_cpus=opts.server_cpu_list,
        client_cpus=opts.client_cpu_list,
        workers=opts.workers,
        seed=opts.seed,
        warmup=opts.warmup,
        duration=opts.duration,
        transport=opts.transport,
        server_args=tuple(opts.server_arg),
        setup_timeout=max(30.0, ccu / 50.0),
        worker={
            "mode": "rooms",
            "room_mode": "arena",
            "input_hz": opts.input_hz,
            "verify_every": opts.verify_every,
            "connect_concurrency": opts.connect_concurrency,
        },
    )


def _run_series(opts: argparse.Namespace, target: str, steps: list[int], bar: Any) -> list[dict]:
    rows = []
    task = bar.add_task(f"{target} sweep", total=len(steps), note="") if len(steps) > 1 else None
    for n, ccu in enumerate(steps):
        attempts = 1 + max(0, opts.retries)
        for attempt in range(attempts):
            run = run_load(_spec(opts, target, ccu), bar, task_note=f"{target} ccu={ccu}")
            row = summarize(run, opts)
            row["attempt"] = attempt + 1
            rows.append(row)
            # not valid: a busy neighbour starved the load generator (or the
            # shortcut check failed); the record stays, the step runs again
            if row["valid"]:
                break
        if task is not None:
            bar.update(task, completed=n + 1)
        if not row["sustained"] or not row["valid"]:
            break
    if task is not None:
        bar.remove_task(task)
    return rows


def max_sustained(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest step that passed before the first one that did not."""
    best = None
    stopped_by = None
    for i, row in enumerate(rows):
        retried = i + 1 < len(rows) and rows[i + 1]["ccu"] == row["ccu"]
        if retried and rows[i + 1]["target"] == row["target"]:
            continue  # an invalid attempt measured again
        if not row["valid"]:
            broken = [k for k, ok in row["validity"].items() if not ok]
            stopped_by = f"ccu={row['ccu']}: run not valid ({', '.join(broken)})"
            break
        if not row["sustained"]:
            failed = [k for k, ok in row["checks"].items() if not ok]
            stopped_by = f"ccu={row['ccu']}: {', '.join(failed)}"
            break
        best = row["ccu"]
    return {"max_sustained_ccu": best, "stopped_by": stopped_by}


def render_table(rows: list[dict[str, Any]], title: str) -> None:
    """Two tables: throughput and cost, then latency, ticks and the verdict."""
    from rich.table import Table

    load = Table(title=f"{title}: load and cost")
    for name in (
        "target",
        "CCU",
        "srv CPU %",
        "% per client",
        "other %",
        "RSS MB",
        "frames in/s",
        "frames out/s",
        "state/client/s min",
        "B in/client/s",
        "B out/client/s",
        "delta/key",
        "loadgen CPU %",
    ):
        load.add_column(name, justify="right")
    timing = Table(title=f"{title}: latency and ticks")
    for name in (
        "target",
        "CCU",
        "lat p50 ms",
        "p95",
        "p99",
        "tick p50 ms",
        "p99",
        "max <=",
        "overruns",
        "failed",
        "dropped",
        "verify bad/frames",
        "sustained",
    ):
        timing.add_column(name, justify="right")
    for r in rows:
        t = r["tick"] or {}
        frames_in = r["server_frames_in_per_s"] or r["client_frames_out_per_s"]
        frames_out = r["server_frames_out_per_s"] or r["client_frames_in_per_s"]
        verify = r["verify"]
        load.add_row(
            r["target"],
            fmt(r["ccu"]),
            fmt(r["server_cpu_percent"]),
            fmt(r.get("server_cpu_percent_per_client"), 3),
            fmt(r["server_other_load_percent"], 0),
            fmt(r["server_rss_mb"]),
            fmt(frames_in, 0),
            fmt(frames_out, 0),
            fmt(r["state_frames_per_client_per_s"]["min"], 2),
            fmt(r["bytes_in_per_client_per_s"], 0),
            fmt(r["bytes_out_per_client_per_s"], 0),
            fmt(r["delta_vs_keyframe_ratio"], 3),
            fmt(r["loadgen_cpu_percent"]),
        )
        timing.add_row(
            r["target"],
            fmt(r["ccu"]),
            fmt(r["latency"]["p50_ms"]),
            fmt(r["latency"]["p95_ms"]),
            fmt(r["latency"]["p99_ms"]),
            fmt(t.get("p50_ms"), 2),
            fmt(t.get("p99_ms"), 2),
            fmt(t.get("max_le_ms"), 1),
            fmt(t.get("overruns"), 0),
            fmt(r["failed_joins"]),
            fmt(r["dropped"]),
            f"{verify['mismatches']}/{verify['frames']}",
            ("yes" if r["sustained"] else "NO") + ("" if r["valid"] else " (invalid)"),
        )
    console = console_for_tables()
    console.print(load)
    console.print(timing)


def series_label(row: dict[str, Any]) -> str:
    """``relay``, ``relay (fast)``, ``baseline``: what a row measured."""
    transport = row.get("transport", "websocket")
    if row["target"] == "relay" and transport != "websocket":
        return f"relay ({transport})"
    return row["target"]


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    """Latency p50/p99 and server CPU against CCU, relay and baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not r.get("valid", True):
            continue  # an attempt that was measured again
        series.setdefault(series_label(r), []).append(r)
    for n, (label, pts) in enumerate(series.items()):
        style = ("-", "--", "-.", ":")[n % 4]
        x = [r["ccu"] for r in pts]
        ax1.plot(x, [r["latency"]["p50_ms"] for r in pts], style, marker="o", label=f"{label} p50")
        ax1.plot(x, [r["latency"]["p99_ms"] for r in pts], style, marker="s", label=f"{label} p99")
        ax2.plot(x, [r["server_cpu_percent"] for r in pts], style, marker="o", label=label)
    ax1.set_xlabel("CCU")
    ax1.set_ylabel("input -> state latency (ms)")
    ax1.axhline(100.0, color="grey", linewidth=0.8, linestyle=":")
    ax1.set_yscale("log")
    ax1.legend()
    ax1.grid(True, alpha=0.3)
    ax2.set_xlabel("CCU")
    ax2.set_ylabel("server CPU (% of one core)")
    ax2.axhline(95.0, color="grey", linewidth=0.8, linestyle=":")
    ax2.legend()
    ax2.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    try:
        opts.server_cpu_list = parse_cpus(opts.server_cpus)
        opts.client_cpu_list = parse_cpus(opts.client_cpus)
    except ValueError as exc:
        print(f"bench fanout: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for name in ("ccu", "room_size", "workers", "max_ccu"):
        if getattr(opts, name) < 1:
            print(f"bench fanout: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return EXIT_USAGE
    if opts.duration <= 0 or opts.warmup < 0 or opts.input_hz <= 0:
        print("bench fanout: --duration and --input-hz must be positive", file=sys.stderr)
        return EXIT_USAGE
    overlap = set(opts.server_cpu_list) & set(opts.client_cpu_list)
    if overlap:
        print(
            f"bench fanout: warning: server and load generator share CPU {sorted(overlap)};"
            " the server's figures will include the load generator's cost",
            file=sys.stderr,
        )
    steps = sweep_steps(opts.max_ccu, opts.start_ccu) if opts.sweep else [opts.ccu]
    if not steps:
        print("bench fanout: no sweep step within --start-ccu..--max-ccu", file=sys.stderr)
        return EXIT_USAGE
    params = run_params(opts)
    record = result_record("fanout", params, opts.seed)
    raise_fd_limit()
    pin_self(opts.client_cpu_list)  # keep the coordinator off the server's cores
    rows: list[dict[str, Any]] = []
    try:
        with progress(not opts.quiet) as bar:
            rows += _run_series(opts, "relay", steps, bar)
            if opts.baseline:
                rows += _run_series(opts, "baseline", steps, bar)
    except BenchError as exc:
        print(f"bench fanout: {exc}", file=sys.stderr)
        if opts.json:
            record["error"] = str(exc)
            record["runs"] = rows
            write_json(opts.json, record)
        return EXIT_FAILURE
    record["runs"] = rows
    summary: dict[str, Any] = {"relay": max_sustained([r for r in rows if r["target"] == "relay"])}
    if opts.baseline:
        summary["baseline"] = max_sustained([r for r in rows if r["target"] == "baseline"])
    record["summary"] = summary
    title = f"fanout, rooms of {opts.room_size}, {opts.input_hz:g} inputs/s per client"
    render_table(rows, f"{title} — commit {record['commit']}")
    for target, s in summary.items():
        if opts.sweep:
            print(
                f"{target}: max sustained CCU {s['max_sustained_ccu']}"
                + (f" (stopped: {s['stopped_by']})" if s["stopped_by"] else "")
            )
    for r in rows:
        if r["verify"]["mismatches"] or r["verify"]["shortcut_errors"]:
            print(
                f"warning: the seq shortcut disagreed with a full decode at ccu={r['ccu']}:"
                f" {r['verify']['examples']}",
                file=sys.stderr,
            )
        other = r.get("server_other_load_percent")
        if other is not None and other > 10.0:
            print(
                f"note: other processes used {other:.0f}% of the server's CPUs at"
                f" ccu={r['ccu']} ({r['target']}); the machine is shared",
                file=sys.stderr,
            )
    if opts.json:
        write_json(opts.json, record)
    if opts.plot:
        plot(rows, opts.plot, f"{title} ({record['commit']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# -- the checkpoint suite -------------------------------------------------------


def store_wiring(server_cpus: list[int] | None = None) -> tuple[bool, str]:
    """Whether ``relay serve --store`` makes the relay checkpoint: the flag must be in
    ``relay serve --help``, and a relay started with ``--store sqlite:...`` must
    report that store in ``/healthz``."""
    helptext = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=str(REPO_ROOT),
        timeout=60,
        check=False,
    ).stdout
    if "--store" not in helptext:
        return False, "relay serve has no --store flag"
    with tempfile.TemporaryDirectory(prefix="roomwire-bench-") as tmp:
        spec = LoadSpec(target="relay", clients=8, server_args=(f"--store=sqlite:{tmp}/b.db",))
        try:
            with ServerProcess(
                server_command(spec, tmp), cpus=server_cpus, expect_http=True
            ) as server:
                assert server.http_port is not None
                health = scrape_json(server.http_port, "/healthz")
        except (BenchError, OSError, ValueError) as exc:
            return False, f"relay serve --store sqlite:... does not start: {exc}"
    store = health.get("store") or {}
    kind = store.get("kind")
    if kind != "sqlite":
        return False, (
            "relay serve accepts --store, but the relay does not use it yet "
            f"(/healthz reports store kind {kind!r} for --store sqlite:...)"
        )
    return True, f"store kind {kind!r}"


def checkpoint_main(argv: list[str] | None = None) -> int:
    """The cost of durability: the fanout scenario with checkpoints kept in memory
    (``--reference-store``) and with a real store (``--store``, SQLite by default)."""
    p = argparse.ArgumentParser(
        prog="python -m bench checkpoint",
        description="Fanout load, checkpoints in memory vs in a store: the cost of durability.",
    )
    p.add_argument("--ccu", type=int, default=200, help="concurrent clients (200)")
    p.add_argument(
        "--store", default=None, help="store URL to measure (default: SQLite in a temp dir)"
    )
    p.add_argument(
        "--reference-store",
        default="memory:",
        help="the store of the reference run (default memory:, checkpoints kept in RAM)",
    )
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        server_cpus = parse_cpus(args.server_cpus)
        parse_cpus(args.client_cpus)
    except ValueError as exc:
        print(f"bench checkpoint: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ok, detail = store_wiring(server_cpus)
    if not ok:
        print(
            "bench checkpoint: not yet available: it needs the durability feature "
            f"(relay serve --store wired to a checkpoint store): {detail}",
            file=sys.stderr,
        )
        return EXIT_NOT_AVAILABLE
    with tempfile.TemporaryDirectory(prefix="roomwire-bench-") as tmp:
        store = args.store or f"sqlite:{tmp}/checkpoints.db"
        base = [
            "--ccu",
            str(args.ccu),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--seed",
            str(args.seed),
            "--server-cpus",
            args.server_cpus,
            "--client-cpus",
            args.client_cpus,
            "--retries",
            "0",
        ] + (["--quiet"] if args.quiet else [])
        rows = []
        for label, extra in (
            (f"store {args.reference_store}", [f"--server-arg=--store={args.reference_store}"]),
            (f"store {store}", [f"--server-arg=--store={store}"]),
        ):
            out = f"{tmp}/{len(rows)}.json"
            code = main([*base, *extra, "--json", out])
            if code != 0:
                return code
            with open(out, encoding="utf-8") as f:
                run = json.load(f)["runs"][0]
            run["label"] = label
            rows.append(run)
    record = result_record("checkpoint", vars(args), args.seed)
    record["runs"] = rows
    a, b = rows
    record["summary"] = {
        "labels": [a["label"], b["label"]],
        "server_cpu_percent": [a["server_cpu_percent"], b["server_cpu_percent"]],
        "store": [a.get("store"), b.get("store")],
        "latency_p99_ms": [a["latency"]["p99_ms"], b["latency"]["p99_ms"]],
        "tick_p99_ms": [a["tick"].get("p99_ms"), b["tick"].get("p99_ms")],
    }
    print(
        f"checkpoint cost at {args.ccu} CCU ({a['label']} -> {b['label']}): "
        f"server CPU {a['server_cpu_percent']}% -> "
        f"{b['server_cpu_percent']}%, latency p99 {a['latency']['p99_ms']} -> "
        f"{b['latency']['p99_ms']} ms, tick p99 {a['tick'].get('p99_ms')} -> "
        f"{b['tick'].get('p99_ms')} ms"
    )
    if args.json:
        write_json(args.json, record)
    return 0
