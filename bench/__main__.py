"""``python -m bench SUITE`` (also ``relay bench SUITE``): the benchmark suites.

Suites: fanout, rpc, join-storm, signal, checkpoint. Each measures one
relay process running on its own pinned CPUs against a load generator on
others, and reports a table, and with ``--json`` a full record (machine,
commit, parameters, seed). See docs/bench.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["SUITES", "main"]

_USAGE = """usage: python -m bench SUITE [options]   (or: relay bench SUITE [options])

suites:
  fanout       rooms of 8 moving players at 20 Hz: sustained CCU, latency, CPU
  rpc          room RPC round trips at increasing call rates (and player RPC)
  join-storm   connect + hello + create/join per second at increasing rates
  signal       voice signalling relay rate and latency
  checkpoint   the cost of durability (checkpoints to a store) under fanout load

`python -m bench SUITE --help` lists a suite's options.
"""


def _fanout(argv: list[str]) -> int:
    from .fanout import main

    return main(argv)


def _rpc(argv: list[str]) -> int:
    from .rpc import main

    return main(argv)


def _join_storm(argv: list[str]) -> int:
    from .join_storm import main

    return main(argv)


def _signal(argv: list[str]) -> int:
    from .signal import main

    return main(argv)


def _checkpoint(argv: list[str]) -> int:
    from .fanout import checkpoint_main

    return checkpoint_main(argv)


SUITES: dict[str, Callable[[list[str]], int]] = {
    "fanout": _fanout,
    "rpc": _rpc,
    "join-storm": _join_storm,
    "signal": _signal,
    "checkpoint": _checkpoint,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_USAGE, end="")
        return 0 if argv else 2
    suite = SUITES.get(argv[0])
    if suite is None:
        print(f"bench: unknown suite {argv[0]!r}\n\n{_USAGE}", end="", file=sys.stderr)
        return 2
    try:
        return suite(argv[1:])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
