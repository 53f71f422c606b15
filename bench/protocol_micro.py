"""Micro-benchmark of the sans-IO protocol: codec, delta and state-frame costs per call.

Times encode and decode of a realistic instance of every frame type in msgpack
and CBOR, diff and apply of the 8-player state of the byte-budget test (all
players moved; 2 of 8 moved), state_body and state_frame, and reports the
bytes per state frame against a keyframe. Each figure is the median of
``--repeat`` timeit runs. Run: python -m bench.protocol_micro [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol import (
    CborCodec,
    Codec,
    Create,
    Error,
    Event,
    Frame,
    Hello,
    Input,
    Join,
    Joined,
    Leave,
    MsgpackCodec,
    Ping,
    Pong,
    QuickJoin,
    Rpc,
    RpcResult,
    Signal,
    State,
    Welcome,
    apply,
    diff,
    f32,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 0.02  # per timed run: long enough for timer resolution, short overall


# -- the workload ----------------------------------------------------------------


def arena(positions: list[tuple[float, float, float]], seqs: list[int]) -> dict[str, Any]:
    """The state of docs/protocol.md "Sizes": 8 players {x, y, angle, hp, seq},
    a room map laid out as a room lays it out (code, mode, host, 8 members with
    name, seat and connected) and an empty game map."""
    ids = [f"player-{i + 1}" for i in range(8)]
    return {
        "game": {},
        "players": {
            pid: {"x": x, "y": y, "angle": a, "hp": 100, "seq": s}
            for pid, (x, y, a), s in zip(ids, positions, seqs, strict=True)
        },
        "room": {
            "code": "ABCD",
            "mode": "arena",
            "host": ids[0],
            "members": {
                pid: {"name": f"Player {i + 1}", "seat": i, "connected": True}
                for i, pid in enumerate(ids)
            },
        },
    }


_rng = random.Random(1200)  # fixed: the same floats, hence the same sizes, every run
POSITIONS = [
    (f32(_rng.uniform(-500, 500)), f32(_rng.uniform(-500, 500)), f32(_rng.uniform(-3, 3)))
    for _ in range(8)
]
MOVED = [
    (f32(x + _rng.uniform(-5, 5)), f32(y + _rng.uniform(-5, 5)), f32(a + 0.1))
    for x, y, a in POSITIONS
]
OLD = arena(POSITIONS, [1000] * 8)
# The next states are built by apply(), as a room builds them, so they share
# every subtree that did not change with OLD (and diff skips those by identity).
NEW_ALL = apply(OLD, diff(OLD, arena(MOVED, [1001] * 8)))
NEW_TWO = apply(
    OLD,
    diff(
        OLD,
        arena(
            [MOVED[i] if i in (2, 5) else POSITIONS[i] for i in range(8)],
            [1001 if i in (2, 5) else 1000 for i in range(8)],
        ),
    ),
)
DELTA_ALL = diff(OLD, NEW_ALL, dense=True)
DELTA_TWO = diff(OLD, NEW_TWO, dense=True)
TICK = 1200

FRAMES: list[Frame] = [
    Hello(1, "v4.public.eyJyb29tIjoiQUJDRCJ9.sig", None, "roomwire-py/0.1"),
    Welcome(1, "msgpack", "p1", {"name": "relay", "version": "0.1.0", "tick_rate": 20}),
    Create(1, "quiz8", {"public": True, "rounds": 8}),
    Join(2, "ABCD"),
    QuickJoin(3, "quiz12"),
    Leave(4),
    Joined(5, "ABCD", "p1", 3, TICK, OLD, "resume-token-0123456789"),
    Input(40001, {"x": f32(12.0), "y": f32(-3.5), "angle": f32(0.25), "seq": 40001}),
    State(TICK, 1, DELTA_ALL, (RpcResult(9, True, None),)),
    Rpc(8, "others", "emote", {"name": "wave", "at": [f32(1.5), f32(2.5)]}, False, "p1"),
    RpcResult(9, False, {"code": "no_such_player", "message": "p9 is not in the room"}),
    Signal("offer", "p2", b"v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n" * 4, "voice"),
    Error("invalid_field", "Create.mode must be str", 10),
    Ping(123456),
    Pong(123456),
    Event("host_changed", {"host": "p2", "previous": "p1"}),
]


# -- timing ----------------------------------------------------------------------


def time_op(fn: Callable[[], Any], repeat: int) -> float:
    """Median microseconds per call of ``fn`` over ``repeat`` timed runs."""
    timer = timeit.Timer(fn)
    number = 1
    while True:  # calibrate: enough calls that one run takes TARGET_SECONDS
        elapsed = timer.timeit(number)
        if elapsed >= TARGET_SECONDS / 4 or number >= 1 << 24:
            break
        number *= 4
    number = max(1, round(number * TARGET_SECONDS / max(elapsed, 1e-9)))
    runs = timer.repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number * 1e6


def frame_rows(codecs: list[Codec], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for frame in FRAMES:
        row: dict[str, Any] = {"frame": type(frame).__name__}
        for codec in codecs:
            data = codec.encode(frame)
            assert codec.decode(data) is not None
            row[codec.name] = {
                "bytes": len(data),
                "encode_us": time_op(lambda c=codec, f=frame: c.encode(f), repeat),
                "decode_us": time_op(lambda c=codec, d=data: c.decode(d), repeat),
            }
        rows.append(row)
    return rows


def delta_rows(codecs: list[Codec], repeat: int) -> list[dict[str, Any]]:
    rows = [
        {"op": "diff, 8 of 8 moved", "us": time_op(lambda: diff(OLD, NEW_ALL, dense=True), repeat)},
        {"op": "diff, 2 of 8 moved", "us": time_op(lambda: diff(OLD, NEW_TWO, dense=True), repeat)},
        {"op": "apply, 8 of 8 moved", "us": time_op(lambda: apply(OLD, DELTA_ALL), repeat)},
        {"op": "apply, 2 of 8 moved", "us": time_op(lambda: apply(OLD, DELTA_TWO), repeat)},
    ]
    msgs = (RpcResult(9, True, None), Event("buzz", {"by": "p3"}))
    for codec in codecs:
        body = codec.state_body(TICK, 1, DELTA_ALL)
        rows += [
            {
                "op": f"{codec.name} state_body, 8 of 8 moved",
                "us": time_op(lambda c=codec: c.state_body(TICK, 1, DELTA_ALL), repeat),
            },
            {
                "op": f"{codec.name} state_frame, no msgs",
                "us": time_op(lambda c=codec, b=body: c.state_frame(b), repeat),
            },
            {
                "op": f"{codec.name} state_frame, 2 msgs",
                "us": time_op(lambda c=codec, b=body: c.state_frame(b, msgs), repeat),
            },
        ]
    return rows


def size_rows(codecs: list[Codec]) -> list[dict[str, Any]]:
    rows = []
    for codec in codecs:

        def size(delta: Any, back: int, c: Codec = codec) -> int:
            return len(c.state_frame(c.state_body(TICK, back, delta)))

        keyframe = size(NEW_ALL, 0)
        all_moved = size(DELTA_ALL, 1)
        two_moved = size(DELTA_TWO, 1)
        rows.append(
            {
                "codec": codec.name,
                "delta_all_moved": all_moved,
                "delta_two_moved": two_moved,
                "keyframe": keyframe,
                "ratio_all_moved": all_moved / keyframe,
                "ratio_two_moved": two_moved / keyframe,
            }
        )
    return rows


# -- report ----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"protocol micro-benchmark: Python {meta['python']}, CPU {meta['cpu']}, "
        f"commit {meta['commit']}, median of {meta['repeat']} runs",
        "",
        "| frame | msgpack B | encode µs | decode µs | CBOR B | encode µs | decode µs |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for row in result["frames"]:
        m, c = row["msgpack"], row["cbor"]
        lines.append(
            f"| {row['frame']} | {m['bytes']} | {m['encode_us']:.2f} | {m['decode_us']:.2f} "
            f"| {c['bytes']} | {c['encode_us']:.2f} | {c['decode_us']:.2f} |"
        )
    lines += ["", "| operation (8-player state) | µs/op |", "|---|--:|"]
    lines += [f"| {row['op']} | {row['us']:.2f} |" for row in result["deltas"]]
    lines += [
        "",
        "| codec | delta, 8 moved | delta, 2 moved | keyframe | 8 moved / key | 2 moved / key |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for row in result["sizes"]:
        lines.append(
            f"| {row['codec']} | {row['delta_all_moved']} B | {row['delta_two_moved']} B "
            f"| {row['keyframe']} B | {row['ratio_all_moved']:.2f} | {row['ratio_two_moved']:.2f} |"
        )
    return "\n".join(lines)


def run(repeat: int) -> dict[str, Any]:
    codecs: list[Codec] = [MsgpackCodec(), CborCodec()]
    return {
        "meta": {
            "suite": "protocol_micro",
            "python": platform.python_version(),
            "cpu": cpu_model(),
            "commit": git_commit(),
            "repeat": repeat,
        },
        "frames": frame_rows(codecs, repeat),
        "deltas": delta_rows(codecs, repeat),
        "sizes": size_rows(codecs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.protocol_micro", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    result = run(args.repeat)
    print(markdown(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
