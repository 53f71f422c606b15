"""RPCs between the players of a room: routing by target, correlation, timeouts, buffered calls.

Theory of operation
-------------------
A client's ``Rpc`` arrives in its frames at the room's tick. For a target
other than ``"room"`` the room relays it: each callee is sent
``Rpc(relay_id, target, method, args, buffered, caller)`` in its frame of the
same tick, where ``relay_id`` is a room-unique number (callers' ids can
collide, so they never leave the room) and ``caller`` is the sender's player
id, set here whatever the client put in it. A callee answers with
``RpcResult(relay_id, ...)``; the room maps it back to the caller's id and
queues it for the caller only. So a relayed call costs one tick plus transit
each way, and everything rides in the one state frame per client per tick.

Targets and the shape of the answer:

* a player id or ``"host"``: one callee; the caller gets the callee's
  ``RpcResult`` as it is (``ok``, ``value``);
* a list of player ids, ``"others"`` or ``"all"``: every callee that is there
  is called; the caller gets one ``RpcResult(ok=True)`` whose value maps each
  callee to ``{"ok": bool, "value": ...}``, once all have answered, left or
  timed out (``"others"`` with nobody else answers ``{}`` at once).

A call with no answer by its deadline (the room's ``rpc_timeout``, capped
by ``rpc_timeout_max``) fails with ``rpc_timeout``. A callee that is not in
the room fails the call at once with ``no_such_player``; one whose seat is
held for a reconnect, with ``player_disconnected``; a callee leaving or
dropping with a call pending fails it the same way, at once. A caller that
leaves or drops has its calls forgotten (their answers are dropped).

``buffered`` calls (to ``"others"`` or ``"all"``) are also kept, in order,
and replayed to every player who joins later (with ``buffered = True``;
their answers are not relayed), until the sender leaves the room or removes
them with the room RPC ``rpc.unbuffer`` (``{"id": its call id}`` or
``{"method": name}``, or nothing for all of its own).

``RpcTable`` holds a room's calls. The room's tick changes it copy-on-write
(``writable``): a tick that fails leaves the committed table as it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from protocol import Rpc, RpcResult

from ._voice import VOICE_METHODS, VoiceError, call_voice

__all__ = [
    "MAX_METHOD_CHARS",
    "RUNTIME_PREFIXES",
    "RpcSettings",
    "RpcTable",
    "answer",
    "call_timeout",
    "expire",
    "member_gone",
    "replay_buffered",
    "route",
    "runtime_call",
    "writable",
]

#: room RPC methods the runtime handles itself, before the rule set sees any
RUNTIME_PREFIXES = ("voice.", "rpc.")
MAX_METHOD_CHARS = 64
MAX_TARGETS = 64
_MULTI = frozenset({"others", "all"})
_BUFFERABLE = _MULTI


@dataclass(frozen=True, slots=True)
class RpcSettings:
    """The RPC settings of a room (from its ``RoomConfig``).

    ``timeout``: seconds a relayed call waits for its answer; ``timeout_max``
    caps what a call may ask for; ``max_pending``: calls one caller may have
    waiting; ``max_buffered``: buffered calls a room keeps.
    """

    timeout: float = 10.0
    timeout_max: float = 60.0
    max_pending: int = 64
    max_buffered: int = 128


@dataclass(frozen=True, slots=True)
class _Call:
    caller: str
    caller_id: int
    method: str
    deadline: float
    timeout: float
    single: bool
    waiting: frozenset[str]
    results: tuple[tuple[str, bool, Any], ...] = ()  # multi-target: (callee, ok, value)
    order: tuple[str, ...] = ()  # multi-target: the callees, in the order of the target


@dataclass(frozen=True, slots=True)
class _Buffered:
    sender: str
    caller_id: int
    relay_id: int
    target: str
    method: str
    args: Any


class RpcTable:
    """The calls of one room: waiting calls by relay id, buffered calls, counters."""

    __slots__ = (
        "buffered",
        "calls",
        "next_deadline",
        "next_id",
        "pending_by_caller",
        "relayed",
        "timeouts",
        "unmatched",
    )

    def __init__(self) -> None:
        self.next_id = 1
        self.calls: dict[int, _Call] = {}
        self.pending_by_caller: dict[str, int] = {}
        self.buffered: tuple[_Buffered, ...] = ()
        self.next_deadline = math.inf
        self.relayed = 0
        self.timeouts = 0
        self.unmatched = 0

    def copy(self) -> RpcTable:
        new = RpcTable.__new__(RpcTable)
        new.next_id = self.next_id
        new.calls = dict(self.calls)
        new.pending_by_caller = dict(self.pending_by_caller)
        new.buffered = self.buffered
        new.next_deadline = self.next_deadline
        new.relayed = self.relayed
        new.timeouts = self.timeouts
        new.unmatched = self.unmatched
        return new

    def _add(self, relay_id: int, call: _Call) -> None:
        self.calls[relay_id] = call
        self.pending_by_caller[call.caller] = self.pending_by_caller.get(call.caller, 0) + 1
        if call.deadline < self.next_deadline:
            self.next_deadline = call.deadline

    def _pop(self, relay_id: int) -> _Call:
        call = self.calls.pop(relay_id)
        left = self.pending_by_caller[call.caller] - 1
        if left:
            self.pending_by_caller[call.caller] = left
        else:
            del self.pending_by_caller[call.caller]
        if not self.calls:
            self.next_deadline = math.inf
        return call

    def __len__(self) -> int:
        return len(self.calls)

    def __repr__(self) -> str:
        return f"<RpcTable {len(self.calls)} waiting, {len(self.buffered)} buffered>"


class _Member(Protocol):
    player_id: str
    link: Any


class _Work(Protocol):
    """What these functions use of a room's tick working set."""

    now: float
    host: str | None
    members: dict[str, Any]
    rpc: RpcTable
    rpc_own: bool
    voice: Any

    def queue(self, player_id: str, frame: Any) -> None: ...


def writable(w: _Work) -> RpcTable:
    """The tick's own copy of the room's table (made at the first change of a tick)."""
    if not w.rpc_own:
        w.rpc = w.rpc.copy()
        w.rpc_own = True
    return w.rpc


def call_timeout(requested: float | None, settings: RpcSettings) -> float:
    """The timeout of a call: what it asked for (or the room's default), capped."""
    if requested is None or not math.isfinite(requested) or requested <= 0:
        requested = settings.timeout
    return min(requested, settings.timeout_max)


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _refuse(w: _Work, m: _Member, frame: Rpc, code: str, message: str) -> None:
    w.queue(m.player_id, RpcResult(frame.id, False, _error(code, message)))


def _absent(w: _Work, pid: str) -> dict[str, str] | None:
    """Why ``pid`` cannot be called now, or None if it can."""
    member = w.members.get(pid)
    if member is None:
        return _error("no_such_player", f"no player {pid!r} in this room")
    if member.link is None:
        return _error("player_disconnected", f"{pid} is disconnected")
    return None


def route(w: _Work, m: _Member, frame: Rpc, settings: RpcSettings) -> None:
    """Relay ``frame`` (target not ``"room"``) from member ``m``; refusals are answered."""
    caller = m.player_id
    target = frame.target
    method = frame.method
    if not method or len(method) > MAX_METHOD_CHARS:
        _refuse(w, m, frame, "invalid_method", f"a method name is 1-{MAX_METHOD_CHARS} chars")
        return
    if type(target) is str:
        if target == "host":
            callees = [w.host] if w.host is not None else []
            single = True
        elif target == "others":
            callees = [p for p in w.members if p != caller]
            single = False
        elif target == "all":
            callees = list(w.members)
            single = False
        else:
            callees = [target]
            single = True
    else:
        callees = list(dict.fromkeys(target))  # in order, without repeats
        single = False
        if not callees or len(callees) > MAX_TARGETS:
            _refuse(w, m, frame, "invalid_target", "a target list names 1-64 players")
            return
    if frame.buffered and (type(target) is not str or target not in _BUFFERABLE):
        _refuse(w, m, frame, "not_bufferable", 'only calls to "others" or "all" are buffered')
        return
    table = w.rpc
    if table.pending_by_caller.get(caller, 0) >= settings.max_pending:
        _refuse(
            w, m, frame, "too_many_calls", f"at most {settings.max_pending} calls may wait at once"
        )
        return
    if frame.buffered and len(table.buffered) >= settings.max_buffered:
        _refuse(w, m, frame, "buffer_full", f"this room keeps {settings.max_buffered} calls")
        return
    if single:
        why = _absent(w, callees[0]) if callees else _error("no_such_player", "no host")
        if why is not None:
            w.queue(caller, RpcResult(frame.id, False, why))
            return
    table = writable(w)
    relay_id = table.next_id
    table.next_id += 1
    results: list[tuple[str, bool, Any]] = []
    waiting: list[str] = []
    call = Rpc(relay_id, target, method, frame.args, frame.buffered, caller)
    for pid in callees:
        why = _absent(w, pid)
        if why is not None:
            results.append((pid, False, why))
            continue
        waiting.append(pid)
        w.queue(pid, call)
    table.relayed += 1
    if frame.buffered:
        table.buffered = (
            *table.buffered,
            _Buffered(caller, frame.id, relay_id, target, method, frame.args),
        )
    # A call may ask for its own timeout (capped by the room's settings).
    asked = frame.timeout_ms
    timeout = call_timeout(None if asked is None else asked / 1000, settings)
    entry = _Call(
        caller,
        frame.id,
        method,
        w.now + timeout,
        timeout,
        single,
        frozenset(waiting),
        tuple(results),
        tuple(callees),
    )
    if waiting:
        table._add(relay_id, entry)
    else:
        _finish(w, entry)


def _finish(w: _Work, call: _Call) -> None:
    """Answer a multi-target call with every callee's outcome, in the target's order."""
    outcomes = {pid: {"ok": ok, "value": v} for pid, ok, v in call.results}
    _reply(w, call, True, {pid: outcomes[pid] for pid in call.order if pid in outcomes})


def _reply(w: _Work, call: _Call, ok: bool, value: Any) -> None:
    member = w.members.get(call.caller)
    if member is not None and member.link is not None:
        w.queue(call.caller, RpcResult(call.caller_id, ok, value))


def _settle(w: _Work, table: RpcTable, relay_id: int, callee: str, ok: bool, value: Any) -> None:
    """Record ``callee``'s outcome of call ``relay_id``; answer the caller when complete."""
    call = table.calls[relay_id]
    if call.single:
        table._pop(relay_id)
        _reply(w, call, ok, value)
        return
    call = _Call(
        call.caller,
        call.caller_id,
        call.method,
        call.deadline,
        call.timeout,
        False,
        call.waiting - {callee},
        (*call.results, (callee, ok, value)),
        call.order,
    )
    if call.waiting:
        table.calls[relay_id] = call
    else:
        table._pop(relay_id)
        _finish(w, call)


def answer(w: _Work, m: _Member, frame: RpcResult) -> None:
    """A callee's ``RpcResult``: routed to its caller; an answer nobody waits for
    (late, after a timeout, or to a replayed buffered call) is dropped."""
    call = w.rpc.calls.get(frame.id)
    if call is None or m.player_id not in call.waiting:
        writable(w).unmatched += 1
        return
    _settle(w, writable(w), frame.id, m.player_id, frame.ok, frame.value)


def expire(w: _Work) -> None:
    """Fail every call whose deadline has passed (``rpc_timeout``)."""
    table = w.rpc
    if table.next_deadline > w.now:
        return
    table = writable(w)
    nxt = math.inf
    for relay_id, call in list(table.calls.items()):
        if call.deadline > w.now:
            nxt = min(nxt, call.deadline)
            continue
        table.timeouts += 1
        why = _error("rpc_timeout", f"no answer to {call.method!r} within {call.timeout:g} s")
        if call.single:
            table._pop(relay_id)
            _reply(w, call, False, why)
        else:
            for pid in sorted(call.waiting):
                _settle(w, table, relay_id, pid, False, why)
    table.next_deadline = nxt if table.calls else math.inf


def member_gone(w: _Work, player_id: str, *, left: bool) -> None:
    """``player_id`` left the room (``left``) or its connection dropped: calls waiting on
    it fail at once, its own calls are forgotten, and if it left, its buffered calls go."""
    table = w.rpc
    involved = [
        rid for rid, c in table.calls.items() if c.caller == player_id or player_id in c.waiting
    ]
    buffered = left and any(b.sender == player_id for b in table.buffered)
    if not involved and not buffered:
        return
    table = writable(w)
    if left:
        why = _error("no_such_player", f"{player_id} left the room")
    else:
        why = _error("player_disconnected", f"{player_id} disconnected")
    for rid in involved:
        call = table.calls.get(rid)
        if call is None:
            continue
        if call.caller == player_id:
            table._pop(rid)
        else:
            _settle(w, table, rid, player_id, False, why)
    if buffered:
        table.buffered = tuple(b for b in table.buffered if b.sender != player_id)


def replay_buffered(w: _Work, player_id: str) -> None:
    """Queue the room's buffered calls, in order, for a player who just joined."""
    for b in w.rpc.buffered:
        if b.sender != player_id:
            w.queue(player_id, Rpc(b.relay_id, b.target, b.method, b.args, True, b.sender))


def _unbuffer(w: _Work, player_id: str, args: Any) -> dict[str, int]:
    if args is None:
        args = {}
    if not isinstance(args, Mapping) or not set(args) <= {"id", "method"}:
        raise VoiceError("invalid_args", "rpc.unbuffer takes {'id': int} or {'method': str}")
    call_id = args.get("id")
    method = args.get("method")

    def mine(b: _Buffered) -> bool:
        return (
            b.sender == player_id
            and (call_id is None or b.caller_id == call_id)
            and (method is None or b.method == method)
        )

    table = w.rpc
    removed = sum(1 for b in table.buffered if mine(b))
    if removed:
        table = writable(w)
        table.buffered = tuple(b for b in table.buffered if not mine(b))
    return {"removed": removed}


def runtime_call(w: _Work, m: _Member, frame: Rpc) -> bool:
    """A room RPC the runtime handles itself (``voice.*``, ``rpc.*``) or refuses
    (a buffered room call). Returns False when the rule set should take it."""
    method = frame.method
    if frame.buffered:
        _refuse(w, m, frame, "not_bufferable", 'only calls to "others" or "all" are buffered')
        return True
    if not method.startswith(RUNTIME_PREFIXES):
        return False
    pid = m.player_id
    try:
        if method in VOICE_METHODS:
            w.voice, value = call_voice(
                w.voice, pid, method, frame.args, host=w.host, members=w.members
            )
        elif method == "rpc.unbuffer":
            value = _unbuffer(w, pid, frame.args)
        else:
            raise VoiceError("no_such_method", f"the room has no method {method!r}")
    except VoiceError as exc:
        _refuse(w, m, frame, exc.code, exc.message)
        return True
    w.queue(pid, RpcResult(frame.id, True, value))
    return True
