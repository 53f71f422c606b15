"""Machinery every bench suite shares: machine and commit, pinning, processes, figures, output.

A suite measures; this module records where and how (machine, commit,
parameters, seed), starts the server under test in its own pinned process,
reads its CPU time and its ``/metrics``, merges the load generator's
histograms, and writes the result as a rich table, JSON and a plot.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NOT_AVAILABLE",
    "EXIT_USAGE",
    "REPO_ROOT",
    "BenchError",
    "LatencyHistogram",
    "LoadSpec",
    "ServerProcess",
    "WorkerPool",
    "bucket_delta",
    "console_for_tables",
    "core_busy_seconds",
    "cpu_seconds",
    "fmt",
    "git_commit",
    "histogram_max_bound",
    "histogram_quantile",
    "machine_info",
    "merge_results",
    "metric_delta",
    "parse_cpus",
    "parse_metrics",
    "pin_self",
    "pinned",
    "progress",
    "raise_fd_limit",
    "result_record",
    "rss_bytes",
    "run_load",
    "scrape_json",
    "scrape_metrics",
    "server_command",
    "tick_figures",
    "wait_until",
    "worker_specs",
    "write_json",
]

EXIT_FAILURE = 1  # the bench could not run (the server did not start, a worker died)
EXIT_USAGE = 2  # bad options
EXIT_NOT_AVAILABLE = 2  # the relay lacks the feature the suite measures

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "roomwire",
    "trio",
    "trio-websocket",
    "wsproto",
    "msgpack",
    "cbor2",
    "psutil",
    "rich",
    "matplotlib",
)


class BenchError(Exception):
    """The bench cannot go on (the server under test died, a worker failed); says which."""


# -- where and what ---------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model and cores, memory, OS, Python and package versions, load at start."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": (
            sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "system": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "hostname": platform.node(),
    }
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def git_commit(root: Path = REPO_ROOT) -> str:
    """``git rev-parse --short HEAD``, plus ``-dirty`` when the tree has changes; or
    ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if status.strip() else "")


def run_params(opts: Any) -> dict[str, Any]:
    """A suite's parameters as given: its options, less where the output goes and
    the ``*_list`` values parsed from other options."""
    return {
        k: v
        for k, v in vars(opts).items()
        if k not in ("json", "plot", "quiet") and not k.endswith("_list")
    }


def result_record(suite: str, params: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """The head every result carries: suite, time, machine, commit, parameters, seed."""
    return {
        "suite": suite,
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "commit": git_commit(),
        "command": "python -m bench " + " ".join(sys.argv[1:]) if sys.argv else "",
        "params": params,
        "seed": seed,
    }


def write_json(path: str, record: dict[str, Any]) -> None:
    """Write ``record`` as indented JSON (parent directories are created)."""
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")


# -- pinning and processes --------------------------------------------------


#: the CPUs this process could use when it started (the bench later pins itself)
_USABLE_CPUS = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def parse_cpus(text: str) -> list[int]:
    """``"0"``, ``"1,3"``, ``"0-3"`` -> CPU numbers. Raises ``ValueError`` for a malformed
    list or a CPU this process may not use (the message names it)."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise ValueError(f"cannot read CPU list {text!r} (use e.g. 0 or 0,2 or 0-3)")
        lo = int(m.group(1))
        hi = int(m.group(2) or lo)
        if hi < lo:
            raise ValueError(f"CPU range {part!r} runs backwards")
        cpus.update(range(lo, hi + 1))
    if not cpus:
        raise ValueError("empty CPU list")
    if _USABLE_CPUS is not None:
        usable = _USABLE_CPUS
        missing = sorted(cpus - usable)
        if missing:
            raise ValueError(
                f"CPU {missing[0]} is not available here (usable: {_cpu_text(sorted(usable))})"
            )
    return sorted(cpus)


def _cpu_text(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def pinned(cmd: list[str], cpus: Sequence[int] | None) -> list[str]:
    """``cmd`` run under ``taskset -c CPUS`` (or as is when ``cpus`` is None or there is
    no taskset; ``pin_self`` in the child then does the pinning)."""
    if not cpus or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", _cpu_text(cpus), *cmd]


def pin_self(cpus: Sequence[int] | None) -> None:
    """Pin this process to ``cpus`` (no-op where the OS has no affinity call)."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (children inherit it); returns it."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        return soft
    except (ImportError, ValueError, OSError):
        return 0


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of the processes ``pids`` (gone ones count 0)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system
    return total


def core_busy_seconds() -> list[float]:
    """Busy (non-idle) CPU seconds of each core since boot, in core order."""
    import psutil

    out = []
    for t in psutil.cpu_times(percpu=True):
        idle = t.idle + getattr(t, "iowait", 0.0)
        out.append(sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0))
    return out


def rss_bytes(pid: int) -> int | None:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


_LISTEN_RE = re.compile(r"listening on wss?://[^\s:]+:(\d+)")
_HTTP_RE = re.compile(r"http on http://[^\s:]+:(\d+)")


@dataclass
class ServerProcess:
    """The server under test in its own (pinned) process; a context manager.

    ``cmd`` must print ``... listening on ws://HOST:PORT`` (and, when it has
    one, ``... http on http://HOST:PORT``) on stdout, as ``relay serve`` does.
    Raises ``BenchError`` with the server's own stderr when it does not come
    up within ``start_timeout``.
    """

    cmd: list[str]
    cpus: Sequence[int] | None = None
    start_timeout: float = 20.0
    expect_http: bool = False
    env: dict[str, str] | None = None
    port: int = 0
    http_port: int | None = None
    proc: subprocess.Popen[str] | None = None
    full_cmd: list[str] = field(default_factory=list)
    _stderr: Any = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.full_cmd = pinned(self.cmd, self.cpus)
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        cpus = self.cpus if shutil.which("taskset") is None else None
        self.proc = subprocess.Popen(
            self.full_cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=str(REPO_ROOT),
            env=self.env,
            preexec_fn=(lambda: pin_self(cpus)) if cpus else None,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise BenchError(f"the server did not start within {self.start_timeout} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                raise BenchError(
                    f"the server exited with status {code} before listening: {self.stderr()}"
                )
            m = _LISTEN_RE.search(line)
            if m:
                self.port = int(m.group(1))
                if not self.expect_http:
                    return
            m = _HTTP_RE.search(line)
            if m:
                self.http_port = int(m.group(1))
            if self.port and self.http_port is not None:
                return

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().strip()
        return text[-2000:] if text else "(no output)"

    def stop(self, timeout: float = 8.0) -> None:
        """SIGINT (a clean shutdown), then SIGKILL after ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


# -- metrics ------------------------------------------------------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LE_RE = re.compile(r'le="([^"]+)"')


def parse_metrics(text: str) -> dict[str, Any]:
    """Prometheus text -> ``{name: value}`` plus ``{name_bucket: [(le, count), ...]}``."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2), m.group(3)
        try:
            number = float(value)
        except ValueError:
            continue
        if name.endswith("_bucket") and labels:
            le = _LE_RE.search(labels)
            if le is None:
                continue
            bound = math.inf if le.group(1) == "+Inf" else float(le.group(1))
            out.setdefault(name, []).append((bound, number))
        elif not labels:
            out[name] = number
    return out


def scrape_metrics(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> dict[str, Any]:
    """GET /metrics of the relay's HTTP port, parsed (see ``parse_metrics``)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as resp:
        return parse_metrics(resp.read().decode("utf-8"))


def scrape_json(port: int, path: str, host: str = "127.0.0.1", timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


def bucket_delta(
    before: list[tuple[float, float]] | None, after: list[tuple[float, float]] | None
) -> list[tuple[float, float]]:
    """Cumulative histogram buckets of a window: ``after - before`` per bound."""
    if not after:
        return []
    base = dict(before or [])
    return [(le, n - base.get(le, 0.0)) for le, n in after]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated linearly inside the
    bucket as Prometheus' ``histogram_quantile`` does; None when it is empty. A
    quantile in the +Inf bucket returns the largest finite bound."""
    if not buckets:
        return None
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def histogram_max_bound(buckets: list[tuple[float, float]]) -> float | None:
    """The upper bound of the highest non-empty bucket (inf: past the last bound)."""
    last = None
    prev = 0.0
    for bound, count in sorted(buckets):
        if count > prev:
            last = bound
        prev = count
    return last


# -- latency ------------------------------------------------------------------


class LatencyHistogram:
    """Latencies in fixed 0.1 ms buckets up to ``limit`` seconds (the last bucket
    holds the rest); exact max. Merges by adding, so workers ship it as JSON."""

    RESOLUTION = 1e-4

    def __init__(self, limit: float = 5.0) -> None:
        self.limit = limit
        self.counts: dict[int, int] = {}
        self.n = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        i = int(seconds / self.RESOLUTION)
        top = int(self.limit / self.RESOLUTION)
        if i > top:
            i = top
        self.counts[i] = self.counts.get(i, 0) + 1
        self.n += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: LatencyHistogram | dict[str, Any]) -> None:
        if isinstance(other, dict):
            other = LatencyHistogram.from_json(other)
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.n += other.n
        self.total += other.total
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (seconds, bucket midpoint); None when empty."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min((i + 0.5) * self.RESOLUTION, self.max)
        return self.max

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def summary_ms(self) -> dict[str, float | int | None]:
        def ms(x: float | None) -> float | None:
            return None if x is None else round(x * 1000.0, 2)

        return {
            "count": self.n,
            "mean_ms": ms(self.mean()),
            "p50_ms": ms(self.quantile(0.50)),
            "p95_ms": ms(self.quantile(0.95)),
            "p99_ms": ms(self.quantile(0.99)),
            "max_ms": ms(self.max if self.n else None),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "counts": {str(i): c for i, c in self.counts.items()},
            "n": self.n,
            "max": self.max,
            "total": self.total,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyHistogram:
        h = cls(float(data.get("limit", 5.0)))
        h.counts = {int(i): int(c) for i, c in data.get("counts", {}).items()}
        h.n = int(data.get("n", 0))
        h.max = float(data.get("max", 0.0))
        h.total = float(data.get("total", 0.0))
        return h


# -- load-generator workers --------------------------------------------------


class WorkerPool:
    """Load-generator worker processes (``python -m bench.loadgen``), each pinned.

    Each worker reads a JSON spec and then commands from its stdin and writes
    JSON lines (progress, ready, result, error) to its stdout; ``events()``
    yields them as ``(worker index, message)``. A worker that dies without a
    result raises ``BenchError`` with its stderr.
    """

    def __init__(self, specs: list[dict[str, Any]], cpus: Sequence[int] | None) -> None:
        self.specs = specs
        self.cpus = list(cpus) if cpus else None
        self.procs: list[subprocess.Popen[str]] = []
        self._stderr: list[Any] = []
        self._queue: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        self.commands: list[list[str]] = []

    def _cpus_for(self, i: int) -> list[int] | None:
        if not self.cpus:
            return None
        if len(self.cpus) >= len(self.specs):
            return [self.cpus[i % len(self.cpus)]]
        return self.cpus

    def start(self) -> None:
        for i, spec in enumerate(self.specs):
            cpus = self._cpus_for(i)
            cmd = pinned([sys.executable, "-m", "bench.loadgen"], cpus)
            self.commands.append(cmd)
            err = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
            self._stderr.append(err)
            no_taskset = cpus and shutil.which("taskset") is None
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
                cwd=str(REPO_ROOT),
                preexec_fn=(lambda c=cpus: pin_self(c)) if no_taskset else None,
            )
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(i, proc), daemon=True).start()
            self.send(i, spec)

    def _read(self, i: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self._queue.put((i, json.loads(line)))
            except json.JSONDecodeError:
                self._queue.put((i, {"type": "log", "text": line}))
        self._queue.put((i, None))

    def send(self, i: int, message: dict[str, Any]) -> None:
        proc = self.procs[i]
        if proc.stdin is None or proc.poll() is not None:
            return
        try:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def broadcast(self, message: dict[str, Any]) -> None:
        for i in range(len(self.procs)):
            self.send(i, message)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stderr(self, i: int) -> str:
        f = self._stderr[i]
        f.seek(0)
        return f.read().strip()[-2000:] or "(no output)"

    def get(self, timeout: float) -> tuple[int, dict[str, Any]] | None:
        """The next message from any worker within ``timeout``, or None.

        Raises ``BenchError`` when a worker's output ended (it exited)."""
        try:
            i, msg = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if msg is None:
            code = self.procs[i].wait()
            raise BenchError(f"load-generator worker {i} exited ({code}): {self.stderr(i)}")
        if msg.get("type") == "error":
            raise BenchError(f"load-generator worker {i}: {msg.get('message')}")
        return i, msg

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(Exception):
                    assert proc.stdin is not None
                    proc.stdin.close()
        deadline = time.monotonic() + 5.0
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in self._stderr:
            f.close()

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(t: float, tick: Callable[[], None] | None = None, step: float = 0.1) -> None:
    """Sleep until monotonic time ``t``, calling ``tick`` every ``step`` seconds."""
    while True:
        now = time.monotonic()
        if now >= t:
            return
        time.sleep(min(step, t - now))
        if tick is not None:
            tick()


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: ``-`` for None, numbers rounded."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:,.{digits}f}"
    return str(value)


def console_for_tables() -> Any:
    """A rich console for result tables, at least 160 columns wide so that no column is
    cut to an ellipsis (a narrower terminal wraps the lines instead)."""
    from rich.console import Console

    console = Console()
    if console.width < 160:
        console = Console(width=160)
    return console


@contextlib.contextmanager
def progress(enabled: bool = True) -> Iterator[Any]:
    """A rich progress display on stderr (a silent stand-in when ``enabled`` is False)."""
    if not enabled:
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        yield bar


class _NoProgress:
    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def remove_task(self, *args: Any, **kwargs: Any) -> None:
        pass


# -- one load run -------------------------------------------------------------

_SUM_KEYS = (
    "clients",
    "joined",
    "failed",
    "dropped",
    "dropped_in_window",
    "bytes_in",
    "bytes_out",
    "msgs_in",
    "keyframes",
    "keyframe_bytes",
    "deltas",
    "delta_bytes",
    "inputs_sent",
    "rpcs_sent",
    "rpcs_answered",
    "rpcs_ok",
    "rpcs_received",
    "signals_sent",
    "signals_received",
    "cpu_seconds",
    "arrivals",
)
_DICT_KEYS = ("fail_reasons", "drop_reasons", "rpc_errors", "other_frames")
_HIST_KEYS = ("latency", "rpc_latency", "signal_latency", "send_lag")


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the ``result`` messages of several workers (histograms merge)."""
    out: dict[str, Any] = {k: 0 for k in _SUM_KEYS}
    for k in _DICT_KEYS:
        out[k] = {}
    hists = {k: LatencyHistogram() for k in _HIST_KEYS}
    stages: dict[str, LatencyHistogram] = {}
    verify = {"clients": 0, "frames": 0, "mismatches": 0, "desyncs": 0, "shortcut_errors": 0}
    examples: list[str] = []
    out["frames_per_client"] = []
    out["keyframe_equivalent_bytes"] = []
    out["window_seconds"] = 0.0
    out["tick_rate"] = 0.0
    for r in results:
        for k in _SUM_KEYS:
            out[k] += r.get(k, 0)
        for k in _DICT_KEYS:
            for name, n in r.get(k, {}).items():
                out[k][name] = out[k].get(name, 0) + n
        for k in _HIST_KEYS:
            if k in r:
                hists[k].merge(r[k])
        for name, h in r.get("stages", {}).items():
            stages.setdefault(name, LatencyHistogram()).merge(h)
        v = r.get("verify", {})
        for k in verify:
            verify[k] += v.get(k, 0)
        examples.extend(v.get("examples", []))
        out["frames_per_client"].extend(r.get("frames_per_client", []))
        out["keyframe_equivalent_bytes"].extend(r.get("keyframe_equivalent_bytes", []))
        out["window_seconds"] = max(out["window_seconds"], r.get("window_seconds", 0.0))
        out["tick_rate"] = max(out["tick_rate"], r.get("tick_rate", 0.0) or 0.0)
    out["hists"] = hists
    out["stages"] = stages
    out["verify"] = {**verify, "examples": examples[:5]}
    return out


@dataclass
class LoadSpec:
    """One load run: a fresh server, ``clients`` clients in rooms, one window.

    ``target`` is ``"relay"`` (``relay serve``) or ``"baseline"``
    (``bench.echo_baseline``). ``worker`` holds the per-worker spec keys of
    ``bench.loadgen.Worker`` that the suite sets (rates, mode...)."""

    target: str
    clients: int
    room_size: int = 8
    server_cpus: Sequence[int] | None = None
    client_cpus: Sequence[int] | None = None
    workers: int = 1
    seed: int = 1
    warmup: float = 3.0
    duration: float = 10.0
    transport: str = "websocket"
    server_args: Sequence[str] = ()
    worker: dict[str, Any] = field(default_factory=dict)
    setup_timeout: float = 60.0
    label: str = ""


def server_command(spec: LoadSpec, data_dir: str) -> list[str]:
    rooms = -(-spec.clients // max(1, spec.room_size))
    if spec.target == "baseline":
        return [sys.executable, "-m", "bench.echo_baseline", "--port", "0"]
    return [
        sys.executable,
        "-m",
        "relay",
        "serve",
        "--port",
        "0",
        "--http-port",
        "0",
        "--allow-anonymous",
        "--log-level",
        "error",
        "--transport",
        spec.transport,
        "--max-rooms",
        str(max(2000, rooms + 64)),
        "--max-connections",
        str(max(10000, spec.clients + 256)),
        "--data-dir",
        data_dir,
        # every bench client comes from 127.0.0.1: the per-IP connection rate
        # limit (an abuse guard) would refuse most of them
        "--ip-connect-rate",
        "0",
        *spec.server_args,
    ]


def worker_specs(spec: LoadSpec, port: int) -> list[dict[str, Any]]:
    """Whole rooms per worker, as even as rooms allow."""
    size = max(1, spec.room_size)
    rooms = -(-spec.clients // size)
    n = max(1, min(spec.workers, rooms))
    specs = []
    first_room = 0
    for w in range(n):
        count = rooms // n + (1 if w < rooms % n else 0)
        first = first_room * size
        last = min(spec.clients, (first_room + count) * size)
        first_room += count
        if last <= first:
            continue
        extra = dict(spec.worker)
        if "storm_rate" in extra:  # a total rate: each worker takes its share
            extra["storm_rate"] = float(extra["storm_rate"]) * (last - first) / spec.clients
        specs.append(
            {
                "host": "127.0.0.1",
                "port": port,
                "room_size": size,
                "first_index": first,
                "clients": last - first,
                "seed": spec.seed,
                "setup_timeout": spec.setup_timeout,
                **extra,
            }
        )
    return specs


def run_load(spec: LoadSpec, bar: Any, *, task_note: str = "") -> dict[str, Any]:
    """Run one load step and return the raw figures (see the suites for the summary).

    Raises ``BenchError`` when the server does not start or dies, or a worker fails.
    """
    storm = spec.worker.get("mode") == "storm"
    note = task_note or f"{spec.target} {spec.clients} clients"
    with tempfile.TemporaryDirectory(prefix="roomwire-bench-") as data_dir:
        server = ServerProcess(
            server_command(spec, data_dir),
            cpus=spec.server_cpus,
            expect_http=spec.target == "relay",
        )
        with server:
            specs = worker_specs(spec, server.port)
            pool = WorkerPool(specs, spec.client_cpus)
            with pool:
                return _drive(spec, server, pool, bar, note, storm)


def _drive(
    spec: LoadSpec, server: ServerProcess, pool: WorkerPool, bar: Any, note: str, storm: bool
) -> dict[str, Any]:
    n_workers = len(pool.specs)
    setup: dict[str, Any] = {"joined": 0, "failed": 0, "setup_seconds": 0.0, "fail_reasons": {}}
    if not storm:
        task = bar.add_task("connect", total=spec.clients, note=note)
        progress_by: dict[int, int] = {}
        ready: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + spec.setup_timeout + 30.0
        while len(ready) < n_workers:
            if time.monotonic() > deadline:
                raise BenchError("the clients did not finish connecting in time")
            if not server.alive():
                raise BenchError(f"the server died while clients connected: {server.stderr()}")
            got = pool.get(0.25)
            if got is None:
                continue
            i, msg = got
            if msg["type"] == "progress":
                progress_by[i] = msg["joined"] + msg["failed"]
            elif msg["type"] == "ready":
                ready[i] = msg
                progress_by[i] = msg["joined"] + msg["failed"]
            bar.update(task, completed=sum(progress_by.values()))
        bar.remove_task(task)
        for msg in ready.values():
            setup["joined"] += msg["joined"]
            setup["failed"] += msg["failed"]
            setup["setup_seconds"] = max(setup["setup_seconds"], msg["setup_seconds"])
            for k, v in msg.get("fail_reasons", {}).items():
                setup["fail_reasons"][k] = setup["fail_reasons"].get(k, 0) + v
    t_go = time.monotonic() + 0.2
    t0 = t_go + (0.0 if storm else spec.warmup)
    t1 = t0 + (spec.duration if not storm else 0.0)
    pool.broadcast({"cmd": "go", "t_go": t_go, "t0": t0, "t1": t1 if not storm else 1e18})
    worker_pids = pool.pids()
    if not storm and spec.warmup > 0:
        task = bar.add_task("warm-up", total=spec.warmup, note=note)
        warmup = spec.warmup
        wait_until(t0, lambda: bar.update(task, completed=min(warmup, time.monotonic() - t_go)))
        bar.remove_task(task)
    else:
        wait_until(t0)
    # the window opens: sample the server and the load generator
    m0 = _scrape(server)  # before the window opens, so its cost is not counted in it
    start = _sample(server.pid, worker_pids)
    total = spec.duration if not storm else spec.worker.get("storm_duration", 1.0)
    task = bar.add_task("measure" if not storm else "storm", total=total, note=note)
    results: dict[int, dict[str, Any]] = {}
    end_by = t1 + 30.0 + (spec.setup_timeout if storm else 0.0) + (total if storm else 0.0)
    sampled_end = False
    m1: dict[str, Any] | None = None
    end: dict[str, Any] = {}
    rss = None
    while len(results) < n_workers:
        now = time.monotonic()
        if now > end_by:
            raise BenchError("the load generator did not report in time")
        if not storm and not sampled_end and now >= t1:
            end = _sample(server.pid, worker_pids)
            m1 = _scrape(server)
            rss = rss_bytes(server.pid)
            sampled_end = True
        if not server.alive():
            raise BenchError(f"the server died during the run: {server.stderr()}")
        bar.update(task, completed=min(total, now - t0))
        wait = (t1 - now) if (not storm and not sampled_end) else 0.2
        got = pool.get(min(0.2, max(0.0, wait)))
        if got is None:
            continue
        i, msg = got
        if msg["type"] == "result":
            results[i] = msg
    if storm or not sampled_end:
        end = _sample(server.pid, worker_pids)
        m1 = _scrape(server)
        rss = rss_bytes(server.pid)
    bar.remove_task(task)
    merged = merge_results([results[i] for i in sorted(results)])
    wall = max(1e-9, end["t"] - start["t"])
    server_cpu = 100.0 * (end["server"] - start["server"]) / wall
    loadgen_cpu = 100.0 * (end["workers"] - start["workers"]) / wall
    cores_busy = [100.0 * (b - a) / wall for a, b in zip(start["busy"], end["busy"], strict=False)]

    def busy_on(cpus: Sequence[int] | None) -> float | None:
        if not cpus or not cores_busy:
            return None
        return sum(cores_busy[c] for c in cpus if c < len(cores_busy))

    server_cores = busy_on(spec.server_cpus)
    client_cores = busy_on(spec.client_cpus)
    return {
        "spec": spec,
        "setup": setup,
        "clients": merged,
        "server": {
            "cpu_percent": server_cpu,
            "rss_bytes": rss,
            "metrics_before": m0,
            "metrics_after": m1,
            "window_seconds": wall,
            # CPU that other processes took on the server's cores in the window:
            # the machine may be shared, and a busy neighbour skews the figures
            "other_load_percent": (
                None if server_cores is None else max(0.0, server_cores - server_cpu)
            ),
        },
        "loadgen_cpu_percent": loadgen_cpu,
        "loadgen_other_load_percent": (
            None if client_cores is None else max(0.0, client_cores - loadgen_cpu)
        ),
        "cores_busy_percent": [round(x, 1) for x in cores_busy],
        "server_command": server.full_cmd,
        "worker_commands": pool.commands,
        "workers": len(pool.specs),
    }


def _sample(server_pid: int, worker_pids: list[int]) -> dict[str, Any]:
    """CPU seconds of the server, of the workers and of every core, and the time,
    taken together (the wall time is read in the middle)."""
    busy = core_busy_seconds()
    server = cpu_seconds([server_pid])
    t = time.monotonic()
    workers = cpu_seconds(worker_pids)
    return {"t": t, "server": server, "workers": workers, "busy": busy}


def _scrape(server: ServerProcess) -> dict[str, Any] | None:
    if server.http_port is None:
        return None
    try:
        return scrape_metrics(server.http_port)
    except (OSError, ValueError):
        return None


def metric_delta(run: dict[str, Any], name: str) -> float | None:
    """A counter's increase over the window, from the two /metrics scrapes."""
    a = run["server"]["metrics_before"]
    b = run["server"]["metrics_after"]
    if not a or not b or name not in b:
        return None
    return b[name] - a.get(name, 0.0)


def tick_figures(run: dict[str, Any]) -> dict[str, float | None]:
    """Tick duration p50/p99/max bound (ms) and overruns over the window."""
    a = run["server"]["metrics_before"] or {}
    b = run["server"]["metrics_after"] or {}
    buckets = bucket_delta(
        a.get("relay_tick_duration_seconds_bucket"), b.get("relay_tick_duration_seconds_bucket")
    )

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000.0, 3)

    overruns = metric_delta(run, "relay_tick_overruns_total")
    count = buckets[-1][1] if buckets else None
    return {
        "ticks": count,
        "p50_ms": ms(histogram_quantile(0.50, buckets)),
        "p99_ms": ms(histogram_quantile(0.99, buckets)),
        "max_le_ms": ms(histogram_max_bound(buckets)) if buckets else None,
        "overruns": overruns,
    }
