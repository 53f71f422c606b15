"""Smoke runs of the bench suites, and the load generator's hand-made wire code.

Each suite runs for a second or two with a few clients against a real relay
process and must complete and write its JSON record; the fanout run must
prove its seq shortcut (zero mismatches against a full decode). No speed
figure is asserted anywhere: benchmarks measure, tests check behaviour.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from bench._common import LatencyHistogram, histogram_quantile, parse_metrics
from bench.fanout import max_sustained, sweep_steps
from bench.loadgen import SeqModel, encode_input, mask_frame
from protocol import DELETE, Input, MsgpackCodec, Replace, apply, diff, f32

ROOT = Path(__file__).resolve().parent.parent


def _cpus() -> list[str]:
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if len(usable) >= 2:
        return ["--server-cpus", str(usable[0]), "--client-cpus", str(usable[1])]
    return ["--server-cpus", str(usable[0]), "--client-cpus", str(usable[0])]


def run_bench(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def _head(record: dict) -> None:
    for key in ("suite", "machine", "commit", "params", "seed", "started_at"):
        assert key in record, key
    assert record["machine"]["cpu_model"]
    assert record["machine"]["packages"]["trio"]
    assert record["commit"]


# -- the suites ---------------------------------------------------------------


def test_fanout_smoke_with_baseline(tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    png = tmp_path / "fanout.png"
    proc = run_bench(
        "fanout",
        "--ccu",
        "16",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--verify-every",
        "4",
        "--baseline",
        "--retries",
        "0",
        "--quiet",
        "--json",
        str(out),
        "--plot",
        str(png),
        *_cpus(),
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    _head(record)
    assert record["suite"] == "fanout"
    assert record["params"]["ccu"] == 16
    assert [r["target"] for r in record["runs"]] == ["relay", "baseline"]
    for run in record["runs"]:
        for key in (
            "server_cpu_percent",
            "server_rss_mb",
            "state_frames_per_client_per_s",
            "bytes_in_per_client_per_s",
            "bytes_out_per_client_per_s",
            "delta_vs_keyframe_ratio",
            "latency",
            "loadgen_cpu_percent",
            "failed_joins",
            "dropped",
            "checks",
            "sustained",
        ):
            assert key in run, key
        assert run["ccu"] == 16
        assert run["failed_joins"] == 0 and run["dropped"] == 0, run["fail_reasons"]
        assert run["latency"]["count"] > 0
        # the shortcut was checked against a full decode + apply, and agreed
        verify = run["verify"]
        assert verify["clients"] >= 4 and verify["frames"] > 0
        assert verify["mismatches"] == 0, verify["examples"]
        assert verify["shortcut_errors"] == 0
        assert verify["desyncs"] == 0
    relay = record["runs"][0]
    assert relay["server_frames_in_per_s"] is not None  # read from the relay's /metrics
    assert relay["tick"]["ticks"] > 0
    assert set(record["summary"]) == {"relay", "baseline"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rpc_smoke(tmp_path: Path) -> None:
    out = tmp_path / "rpc.json"
    proc = run_bench(
        "rpc",
        "--clients",
        "16",
        "--rates",
        "60",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--quiet",
        "--json",
        str(out),
        *_cpus(),
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    _head(record)
    assert isinstance(record["summary"]["player_rpc_available"], bool)
    targets = {"room", "player"} if record["summary"]["player_rpc_available"] else {"room"}
    assert {r["target"] for r in record["runs"]} == targets
    for row in record["runs"]:
        assert row["latency"]["count"] > 0  # calls get answered (by the room, or the callee)
        assert row["failed_joins"] == 0 and not row["errors"], row["errors"]


def test_join_storm_smoke(tmp_path: Path) -> None:
    out = tmp_path / "storm.json"
    proc = run_bench(
        "join-storm", "--rates", "20", "--duration", "1", "--quiet", "--json", str(out), *_cpus()
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    _head(record)
    (row,) = record["runs"]
    assert row["arrived"] == row["clients"] == 20
    assert row["joined"] == 20 and row["failed"] == 0, row["fail_reasons"]
    assert row["stages"]["create"]["count"] == 3  # rooms of 8: 20 clients, 3 rooms
    assert row["stages"]["join"]["count"] == 17
    assert row["stages"]["connect"]["count"] == 20


@pytest.mark.parametrize("suite", ["signal", "checkpoint"])
def test_feature_suites_run_or_say_why(suite: str, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    args = ["--quiet", "--json", str(out), *_cpus()]
    if suite == "signal":
        args += ["--clients", "16", "--rates", "40", "--duration", "1", "--warmup", "0.5"]
    else:
        args += ["--ccu", "16", "--duration", "1", "--warmup", "0.5"]
    proc = run_bench(suite, *args)
    if proc.returncode == 2:
        assert "not yet available" in proc.stderr
        assert "Traceback" not in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        record = json.loads(out.read_text())
        _head(record)
        assert len(record["runs"]) == (1 if suite == "signal" else 2)
        for row in record["runs"]:
            assert row["failed_joins"] == 0
            if suite == "signal":
                assert row["latency"]["count"] > 0 and not row["errors"], row["errors"]
            else:
                assert row["verify"]["mismatches"] == 0


def test_cli_dispatch() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "bench", "fanout", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0 and "--sweep" in proc.stdout
    bad = run_bench("nosuch")
    assert bad.returncode == 2 and "unknown suite" in bad.stderr
    bad = run_bench("fanout", "--server-cpus", "9999")
    assert bad.returncode == 2 and "CPU 9999" in bad.stderr and "Traceback" not in bad.stderr


# -- the load generator's wire code ----------------------------------------------


def test_hand_encoded_input_decodes_as_the_codec_reads_it() -> None:
    codec = MsgpackCodec()
    for seq in (1, 127, 128, 255, 256, 65535, 65536, 2**32):
        angle, x, y = f32(1.25), f32(99.5), f32(0.1)
        frame = codec.decode(encode_input(seq, angle, x, y))
        assert frame == Input(seq, {"angle": angle, "x": x, "y": y})


def test_masked_frames_parse_as_a_server_reads_them() -> None:
    rng = random.Random(5)
    server = FrameProtocol(client=False, extensions=[])
    key = rng.randbytes(4)
    key_int = int.from_bytes(key * 256, "big")
    payloads = [rng.randbytes(n) for n in (0, 1, 35, 125, 126, 1000, 1024, 1025, 70000)]
    server.receive_bytes(b"".join(mask_frame(p, key, key_int) for p in payloads))
    frames = list(server.received_frames())
    assert [f.opcode for f in frames] == [Opcode.BINARY] * len(payloads)
    assert [bytes(f.payload) for f in frames] == payloads


def _random_entity(rng: random.Random, seq: int) -> dict:
    return {
        "angle": f32(rng.random()),
        "hp": 100,
        "seq": seq,
        "x": f32(rng.random() * 100),
        "y": f32(rng.random() * 100),
    }


def test_seq_shortcut_matches_full_apply_through_moves_joins_and_leaves() -> None:
    """The shortcut and ``protocol.apply`` read the same seqs, tick after tick, through
    dense patches (moves), sparse ones (joins, leaves) and odd shapes."""
    rng = random.Random(1234)
    state = {"game": {}, "players": {}, "room": {"code": "ABCD"}}
    model = SeqModel()
    model.reset(state)
    next_id = 0
    for tick in range(600):
        players = dict(state["players"])
        roll = rng.random()
        if roll < 0.08 or not players:
            next_id += 1
            players[f"p{next_id:03d}"] = _random_entity(rng, 0)
        elif roll < 0.12:
            del players[rng.choice(sorted(players))]
        for pid in list(players):
            if rng.random() < 0.7:
                e = dict(players[pid])
                e["seq"] += rng.randint(1, 3)
                e["x"] = f32(rng.random() * 100)
                players[pid] = e
        new = {**state, "players": players}
        if tick % 97 == 0:
            new = {**new, "game": {"round": tick}}
        delta = diff(state, new, dense=True)
        state = apply(state, delta)
        assert state == new
        model.apply_delta(delta)
        expected = {pid: e["seq"] for pid, e in state["players"].items()}
        assert model.seq == expected, tick
        assert model.pids == sorted(expected)
    # whole-value shapes: Replace, a players map deleted and back, an entity replaced
    for delta in (
        {"players": Replace({"z": {"seq": 9, "hp": 1}})},
        {"players": {"z": Replace({"seq": 10})}},
        {"players": {"z": {"seq": DELETE}}},
        {"players": DELETE},
        {"players": {"a": {"hp": 1, "seq": 3}}},
    ):
        state = apply(state, delta)
        model.apply_delta(delta)
        players = state.get("players", {})
        assert model.seq == {pid: e.get("seq") for pid, e in players.items()}


# -- figures ------------------------------------------------------------------


def test_sweep_steps_and_the_sustained_verdict() -> None:
    assert sweep_steps(2400) == [80, 200, 400, 800, 1200, 1600, 1800, 2000, 2200, 2400]
    assert sweep_steps(500, start=200) == [200, 400]
    ok = {"valid": True, "sustained": True, "checks": {"frames": True}}
    bad = {"valid": True, "sustained": False, "checks": {"frames": False, "latency_p99": True}}
    rows = [{**ok, "ccu": 80}, {**ok, "ccu": 200}, {**bad, "ccu": 400}]
    assert max_sustained(rows) == {"max_sustained_ccu": 200, "stopped_by": "ccu=400: frames"}


def test_metrics_parsing_and_quantiles() -> None:
    text = (
        "# HELP relay_tick_duration_seconds room tick duration\n"
        'relay_tick_duration_seconds_bucket{le="0.001"} 50.0\n'
        'relay_tick_duration_seconds_bucket{le="0.01"} 100.0\n'
        'relay_tick_duration_seconds_bucket{le="+Inf"} 100.0\n'
        "relay_tick_overruns_total 3.0\n"
    )
    m = parse_metrics(text)
    assert m["relay_tick_overruns_total"] == 3.0
    buckets = m["relay_tick_duration_seconds_bucket"]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.0055)
    h = LatencyHistogram()
    for ms in range(1, 101):
        h.add(ms / 1000.0)
    assert h.quantile(0.5) == pytest.approx(0.05005, abs=1e-4)
    assert h.summary_ms()["p99_ms"] == pytest.approx(99.05, abs=0.1)
    merged = LatencyHistogram.from_json(json.loads(json.dumps(h.to_json())))
    merged.merge(h)
    assert merged.n == 200 and merged.quantile(0.99) == h.quantile(0.99)
