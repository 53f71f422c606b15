"""The signal suite: voice signalling (``Signal`` frames) relayed between players.

Each client sends ``Signal("offer", peer=the next player, payload=its send
time)`` on an open-loop schedule; the relay delivers it in the peer's next
state frame, and the latency runs from the send to the delivery (sender and
peer live in the same load-generator process, so they share a clock). Steps
of increasing total signal rate, as in the rpc suite.

The relay must relay signals for this to mean anything: the suite first asks
a fresh relay (a probe with two SDK clients) and, when it does not, says so
and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import (
    EXIT_FAILURE,
    EXIT_NOT_AVAILABLE,
    EXIT_USAGE,
    BenchError,
    pin_self,
    progress,
    raise_fd_limit,
    result_record,
    run_params,
    write_json,
)
from .rpc import (
    add_common_options,
    check_common,
    max_sustained_rate,
    probe_relay,
    render,
    run_series,
)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench signal",
        description="Voice-signalling relay rate and latency (needs a relay that relays Signal).",
    )
    add_common_options(p, clients=64, duration=5.0)
    return p


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    error = check_common(opts, "bench signal")
    if error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    params = run_params(opts)
    record = result_record("signal", params, opts.seed)
    try:
        features = probe_relay(opts.server_cpu_list)
    except BenchError as exc:
        print(f"bench signal: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    ok, detail = features.get("signal", (False, "the probe did not finish"))
    record["summary"] = {"signal_available": ok, "signal_probe": detail}
    if not ok:
        print(
            "bench signal: not yet available: this relay does not relay voice signalling "
            f"({detail}). The suite needs the voice feature (Signal frames relayed to peers).",
            file=sys.stderr,
        )
        if opts.json:
            write_json(opts.json, record)
        return EXIT_NOT_AVAILABLE
    raise_fd_limit()
    pin_self(opts.client_cpu_list)
    rows: list[dict[str, Any]] = []
    try:
        with progress(not opts.quiet) as bar:
            rows = run_series(opts, bar, kind="signal", target="next")
    except BenchError as exc:
        print(f"bench signal: {exc}", file=sys.stderr)
        record.update(error=str(exc), runs=rows)
        if opts.json:
            write_json(opts.json, record)
        return EXIT_FAILURE
    for r in rows:
        r["target"] = "player"
    record["runs"] = rows
    record["summary"]["max_sustained_rate"] = max_sustained_rate(rows)
    render(rows, f"signal relay, {opts.clients} clients ({record['commit']})")
    if opts.json:
        write_json(opts.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
