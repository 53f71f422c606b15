"""The ``relay`` command: serve, keygen, ticket, demo, bench, replay, leaderboard.

Every failure an operator can cause (a bad flag, a missing key file, a port
in use) ends with one line on stderr and a non-zero exit status, never a
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio

from ._config import Config, ConfigError

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field, default None so the environment can fill it."""
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        env = "RELAY_" + f.name.upper()
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = f.type if isinstance(f.type, str) else str(f.type)
        if kind == "bool":
            parser.add_argument(
                flag,
                action="store_const",
                const=True,
                default=None,
                help=f"{help_text} [env {env}]",
            )
        else:
            parser.add_argument(
                flag,
                default=None,
                metavar=f.name.upper(),
                help=f"{help_text} (default: {default!r}) [env {env}]",
            )


def _config_from(args: argparse.Namespace) -> Config:
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Config)}
    return Config.from_sources(flags)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _add_store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", default=None, help="store URL (default: RELAY_STORE, else the embedded one)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="where the embedded store lives [env RELAY_DATA_DIR]"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="roomwire: a real-time game relay on Trio."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run a relay")
    _add_config_flags(serve)

    keygen = sub.add_parser("keygen", help="write an Ed25519 key pair for join tickets")
    keygen.add_argument("--out", default=".", help="directory for NAME.secret and NAME.public")
    keygen.add_argument("--name", default="relay", help="file name stem")

    ticket = sub.add_parser("ticket", help="mint a join ticket")
    ticket.add_argument("--key", required=True, help="a .secret key file from keygen")
    ticket.add_argument("--player", required=True, help="player id")
    ticket.add_argument("--name", required=True, help="display name")
    ticket.add_argument("--room", default=None, help="bind the ticket to this room code")
    ticket.add_argument("--role", default="player", help="player, spectator or host")
    ticket.add_argument("--ttl", type=float, default=3600.0, help="seconds of validity")

    demo = sub.add_parser("demo", help="a relay plus bots playing party games, with a live view")
    demo.add_argument("--rooms", type=int, default=3, help="rooms to play in")
    demo.add_argument("--players", type=int, default=5, help="bots per room (2-8)")
    demo.add_argument("--mode", default="quiz8", help="quiz8 or quiz12")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: when every game ends)",
    )
    demo.add_argument(
        "--speed", type=float, default=1.0, help="bots act this many times faster than a person"
    )
    demo.add_argument("--store", default=None, help="store URL (default: embedded SQLite)")
    demo.add_argument("--no-live", action="store_true", help="plain log lines, no live view")
    demo.add_argument("--seed", type=int, default=None)

    replay = sub.add_parser("replay", help="rebuild a room from the store and print its history")
    replay.add_argument("code", help="room code")
    _add_store_flags(replay)
    replay.add_argument("--inputs", action="store_true", help="list every input (default: count)")
    replay.add_argument("--json", action="store_true", help="machine-readable output")

    board = sub.add_parser("leaderboard", help="print a game mode's leaderboard from the store")
    board.add_argument("--mode", required=True, help="game mode, e.g. quiz8")
    board.add_argument("--limit", type=int, default=10, help="rows (1-1000)")
    _add_store_flags(board)
    board.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("bench", help="throughput suites (see `relay bench --help`)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from bench.__main__ import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _cmd_serve(args: argparse.Namespace) -> int:
    config = _config_from(args)
    _setup_logging(config.log_level)
    from ._gc import collect_periodically, tune_gc
    from ._server import Relay, RelayStartupError

    async def run() -> None:
        relay = Relay(config)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(relay.run)
            if config.gc_interval > 0:
                tune_gc()
                nursery.start_soon(collect_periodically, config.gc_interval)
            scheme = "wss" if config.tls_cert else "ws"
            print(f"relay listening on {scheme}://{config.host}:{addresses.port}", flush=True)
            if addresses.http_port is not None:
                print(
                    f"relay http on http://{config.host}:{addresses.http_port}"
                    " (/healthz, /metrics)",
                    flush=True,
                )
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    print(f"relay: {signal.Signals(signum).name}, shutting down", flush=True)
                    await relay.shutdown()
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(run)
    except (RelayStartupError, BaseExceptionGroup) as exc:
        # raised inside nurseries, it arrives wrapped in exception groups
        startup = _only(exc, RelayStartupError)
        if startup is None:
            raise
        print(f"relay: {startup}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _only(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` if it is a ``kind``, or the one ``kind`` inside nested groups, else None."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, kind) else None


def _cmd_keygen(args: argparse.Namespace) -> int:
    from ._tickets import KeyFileError, write_keypair

    try:
        secret, public = write_keypair(args.out, args.name)
    except (KeyFileError, ValueError, OSError) as exc:
        print(f"relay keygen: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {secret} (keep it secret) and {public} (give it to relays: --keys)")
    return 0


def _cmd_ticket(args: argparse.Namespace) -> int:
    from ._tickets import KeyFileError, load_signing_key, mint_ticket

    try:
        key = load_signing_key(args.key)
        token = mint_ticket(
            key,
            player_id=args.player,
            name=args.name,
            room=args.room,
            role=args.role,
            ttl=args.ttl,
        )
    except (KeyFileError, ValueError, OSError) as exc:
        print(f"relay ticket: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(token)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import DemoError, run_demo

    try:
        return run_demo(args)
    except DemoError as exc:
        print(f"relay demo: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _cmd_replay(args: argparse.Namespace) -> int:
    from ._durability import replay_main

    return replay_main(args)


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from ._durability import leaderboard_main

    return leaderboard_main(args)


_COMMANDS: dict[str, Any] = {
    "replay": _cmd_replay,
    "leaderboard": _cmd_leaderboard,
    "serve": _cmd_serve,
    "keygen": _cmd_keygen,
    "ticket": _cmd_ticket,
    "demo": _cmd_demo,
}
