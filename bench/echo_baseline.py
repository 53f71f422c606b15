"""A minimal echo-broadcast server on trio-websocket: the transport's own cost, as a baseline.

No room actor, no state, no deltas, no validation: clients are grouped by
the code they create or join, each group has one tick task at 20 Hz, and at
each tick it sends every member one fixed-shape ~180-byte frame carrying the
last input of each of the group's 8 seats. It speaks just enough of the
roomwire protocol (Hello -> Welcome, Create/Join -> Joined, Input, State
with a dense patch of all 8 seats) for ``bench.loadgen`` to drive it
unchanged, so ``bench fanout --baseline`` shows the same traffic shape with
the relay's work taken out.

    python -m bench.echo_baseline --port 0      # prints: ... listening on ws://HOST:PORT
"""

from __future__ import annotations

import argparse
import itertools
import signal
import string
import sys
from typing import Any

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

__all__ = ["BaselineServer", "main"]

_SUBPROTOCOL = "roomwire.v1.msgpack"
_ENTITY_MASK = 0b11101  # sorted [angle, hp, seq, x, y]: all but hp
_PACK = msgpack.Packer(use_bin_type=True, use_single_float=True).pack


class _Group:
    """Up to ``size`` connections sharing a code; seat i is player ``CODE-i``."""

    def __init__(self, code: str, size: int) -> None:
        self.code = code
        self.size = size
        self.members: dict[int, WebSocketConnection] = {}
        # per seat: angle, seq, x, y (what the dense patch carries)
        self.seats = [[0.0, 0, 0.0, 0.0] for _ in range(size)]
        self.tick = 0

    def pid(self, seat: int) -> str:
        return f"{self.code}-{seat}"

    def keyframe(self) -> dict[str, Any]:
        players = {
            self.pid(i): {"angle": a, "hp": 100, "seq": s, "x": x, "y": y}
            for i, (a, s, x, y) in enumerate(self.seats)
        }
        return {"game": {}, "players": players, "room": {"code": self.code}}

    def frame(self) -> bytes:
        # [State, tick, back=1, dense top [players], dense players [all seats]]
        seats = [[_ENTITY_MASK, a, s, x, y] for a, s, x, y in self.seats]
        return _PACK([9, self.tick, 1, [0b010, [(1 << self.size) - 1, *seats]]])


class BaselineServer:
    def __init__(self, tick_rate: float = 20.0, room_size: int = 8) -> None:
        self.tick_rate = tick_rate
        self.room_size = room_size
        self.groups: dict[str, _Group] = {}
        self._codes = ("".join(p) for p in itertools.product(string.ascii_uppercase, repeat=4))
        self._ids = itertools.count(1)
        self.nursery: trio.Nursery | None = None

    async def _tick(self, group: _Group) -> None:
        period = 1.0 / self.tick_rate
        deadline = trio.current_time()
        while group.members:
            deadline += period
            await trio.sleep_until(deadline)
            group.tick += 1
            data = group.frame()  # once per group per tick, the same bytes for everyone
            for seat, ws in list(group.members.items()):
                try:
                    await ws.send_message(data)
                except ConnectionClosed:
                    group.members.pop(seat, None)
        self.groups.pop(group.code, None)

    async def handle(self, request: WebSocketRequest) -> None:
        if _SUBPROTOCOL not in request.proposed_subprotocols:
            await request.reject(400, body=b"offer roomwire.v1.msgpack\n")
            return
        ws = await request.accept(subprotocol=_SUBPROTOCOL)
        group: _Group | None = None
        seat = -1
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, str):
                    continue
                frame = msgpack.unpackb(message, raw=False)
                kind = frame[0]
                if kind == 8 and group is not None:  # Input: [8, seq, {angle, x, y}]
                    entry = group.seats[seat]
                    entry[1] = frame[1]
                    delta = frame[2]
                    if type(delta) is dict:
                        entry[0] = delta.get("angle", entry[0])
                        entry[2] = delta.get("x", entry[2])
                        entry[3] = delta.get("y", entry[3])
                elif kind == 1:  # Hello
                    pid = f"anon-{next(self._ids)}"
                    welcome = [2, 1, "msgpack", pid, {"tick_rate": self.tick_rate}]
                    await ws.send_message(_PACK(welcome))
                elif kind == 3 and group is None:  # Create
                    group = _Group(next(self._codes), self.room_size)
                    self.groups[group.code] = group
                    seat = 0
                    group.members[seat] = ws
                    await self._joined(ws, frame[1], group, seat)
                    assert self.nursery is not None
                    self.nursery.start_soon(self._tick, group)
                elif kind == 4 and group is None:  # Join
                    group = self.groups.get(frame[2])
                    free = (
                        []
                        if group is None
                        else [i for i in range(group.size) if i not in group.members]
                    )
                    if group is None or not free:
                        error = [
                            13,
                            "room_not_found" if group is None else "room_full",
                            "",
                            frame[1],
                        ]
                        group = None
                        await ws.send_message(_PACK(error))
                        continue
                    seat = free[0]
                    group.members[seat] = ws
                    await self._joined(ws, frame[1], group, seat)
                elif kind == 14:  # Ping
                    await ws.send_message(_PACK([15, frame[1]]))
        except ConnectionClosed:
            pass
        finally:
            if group is not None:
                group.members.pop(seat, None)

    async def _joined(self, ws: WebSocketConnection, fid: int, group: _Group, seat: int) -> None:
        joined = [7, fid, group.code, group.pid(seat), seat, group.tick, group.keyframe()]
        await ws.send_message(_PACK(joined))

    async def run(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            server = await nursery.start(
                lambda task_status: serve_websocket(
                    self.handle,
                    host,
                    port,
                    None,
                    handler_nursery=nursery,
                    message_queue_size=64,
                    task_status=task_status,
                )
            )
            task_status.started(server.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tick-rate", type=float, default=20.0)
    parser.add_argument("--room-size", type=int, default=8, help="seats per group (1-63)")
    args = parser.parse_args(argv)
    if not 1 <= args.room_size <= 63 or args.tick_rate <= 0:
        print("echo baseline: --room-size must be 1..63, --tick-rate positive", file=sys.stderr)
        return 2
    server = BaselineServer(args.tick_rate, args.room_size)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.run, args.host, args.port)
            print(f"echo baseline listening on ws://{args.host}:{port}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(serve)
    except OSError as exc:
        print(f"echo baseline: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
