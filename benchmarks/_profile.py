"""Where the time goes: py-spy over a benchmark's measured window, and two profiles compared.

Issue 5 asks that a goal the hub misses be stated with the profile that shows where its time
goes. Earlier sessions took those profiles by hand, attaching py-spy from a second shell at
about the right moment; `--profile DIR` on `e2e.py` and `backlog.py` makes the profile part of
the run instead: each hub process is sampled over exactly the window the benchmark measures,
and `profile_diff.py` compares two such files function by function.

A profile is py-spy's raw (collapsed) format: one line per distinct stack,
`outer (file:line);...;leaf (file:line) COUNT`.

`--cprofile DIR` counts instead of sampling: the replicas and nodes run as `python -m
_cprofiled`, cProfile runs on their event-loop thread over the window (`counting`), and
`DIR/.../<name>.prof` holds every call with `window.json` beside it (the tasks in the window),
so `profile_diff.py` can put two windows side by side per task. cProfile about doubles the
Python time of what it profiles: compare calls exactly, and times only with each other.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import re
import select
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from _common import find_binary
from _cprofiled import CPROFILE_ENV

RATE_HZ = 250
"""Samples per second: enough for a few thousand samples over a measured window of seconds,
while py-spy itself stays under a few per cent of one core."""

_LINE_NO = re.compile(r":\d+\)$")


def add_profile_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each hub process with py-spy over the measured window, one file each in DIR"
        " (compare two with profile_diff.py)",
    )
    p.add_argument(
        "--cprofile",
        type=Path,
        metavar="DIR",
        help="count every call of the replicas and nodes with cProfile over the measured window"
        " (per task; about doubles their Python time), one .prof each in DIR",
    )


def under(root: Path | None, window: str) -> Path | None:
    """Where one window's profiles go: ``root/window``, or nowhere without the flag."""
    return root / window if root else None


def profile_params(args: argparse.Namespace) -> dict[str, str | None]:
    """The profile flags as a benchmark's result line names them."""
    return {
        "profile": str(args.profile) if args.profile else None,
        "cprofile": str(args.cprofile) if args.cprofile else None,
    }


def hub_module(cprofile_dir: Path | None) -> str:
    """What the rig runs as the hub command: `_cprofiled` when counting (its profiles go to
    ``cprofile_dir/raw`` until a window's end names them)."""
    if cprofile_dir is None:
        return "hub"
    raw = cprofile_dir.resolve() / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    os.environ[CPROFILE_ENV] = str(raw)
    return "_cprofiled"


@dataclass
class Window:
    """What a counted window held, filled in by the benchmark before the window closes."""

    tasks: int = 0


@contextlib.contextmanager
def counting(out_dir: Path | None, pids: Mapping[str, int]) -> Iterator[Window]:
    """Count the calls of each named `_cprofiled` process while the block runs, into
    ``out_dir/<name>.prof``, and the window's tasks into ``out_dir/window.json``.

    Only processes started with ``hub_module(dir)`` answer the signals; each one's file is
    waited for (bounded), since a process writes it when its loop next runs Python.
    """
    window = Window()
    if out_dir is None:
        yield window
        return
    raw = Path(os.environ[CPROFILE_ENV])
    for pid in pids.values():
        (raw / f"{pid}.prof").unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR1)
    try:
        yield window
    finally:
        for pid in pids.values():
            os.kill(pid, signal.SIGUSR2)
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 30
    for name, pid in pids.items():
        written = raw / f"{pid}.prof"
        while not written.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} (pid {pid}) wrote no profile within 30 s")
            time.sleep(0.05)
        written.replace(out_dir / f"{name}.prof")
    (out_dir / "window.json").write_text(json.dumps({"tasks": window.tasks}))


@contextlib.contextmanager
def recording(out_dir: Path | None, pids: Mapping[str, int]) -> Iterator[None]:
    """Sample each named process (name -> pid) into ``out_dir/<name>.txt`` while the block runs.

    Each sampler has started before the block begins (py-spy says so once attached), and each
    is stopped with SIGINT when the block ends, which makes py-spy write its file; a sampler
    that outlives its bound is killed. With no ``out_dir`` nothing is sampled.
    """
    if out_dir is None:
        yield
        return
    py_spy = find_binary("py-spy", "pip install -e '.[bench]'")
    out_dir.mkdir(parents=True, exist_ok=True)
    samplers: list[subprocess.Popen[bytes]] = []
    try:
        for name, pid in pids.items():
            argv = [py_spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ)]
            argv += ["--format", "raw", "--nonblocking", "--output", str(out_dir / f"{name}.txt")]
            sampler = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            samplers.append(sampler)
            _wait_attached(sampler)
        yield
    finally:
        for sampler in samplers:
            sampler.send_signal(signal.SIGINT)
        for sampler in samplers:
            try:
                sampler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sampler.kill()
                sampler.wait(timeout=5)


def _wait_attached(sampler: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Until py-spy says it samples (bounded: a read waits at most until the deadline); a
    py-spy that exits first is an error, with what it said."""
    assert sampler.stdout is not None
    fd = sampler.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    said = b""
    while b"Sampling process" not in said:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"py-spy did not start sampling within {timeout_s} s")
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"py-spy exited before sampling: {said.decode()[-2000:]}")
            said += chunk


@dataclass(frozen=True)
class Profile:
    """Samples per function: as the leaf of a stack (self) and anywhere in it (inclusive)."""

    samples: int
    own: Counter[str]
    inclusive: Counter[str]

    def share(self, function: str, *, inclusive: bool = False) -> float:
        counts = self.inclusive if inclusive else self.own
        return counts[function] / self.samples if self.samples else 0.0


def function_of(frame: str) -> str:
    """A frame's function and file, without its line: `Pool.claim (hub/pool.py)`. Lines split one
    function's samples over its statements, which a comparison of two runs does not want."""
    return _LINE_NO.sub(")", frame.strip())


def parse(collapsed: str) -> Profile:
    """A py-spy raw profile; lines that are not `stack COUNT` are skipped."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [function_of(f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for function in set(frames):
            inclusive[function] += n
    return Profile(samples, own, inclusive)


@dataclass(frozen=True)
class Change:
    function: str
    before: float  # share of the first profile's samples
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


def compare(before: Profile, after: Profile, *, inclusive: bool = False) -> list[Change]:
    """Every function's share in both profiles, the largest growth first. Shares, not counts:
    the two windows rarely hold the same number of samples."""
    functions = set(before.inclusive if inclusive else before.own)
    functions |= set(after.inclusive if inclusive else after.own)
    changes = [
        Change(f, before.share(f, inclusive=inclusive), after.share(f, inclusive=inclusive))
        for f in functions
    ]
    return sorted(changes, key=lambda c: (-c.delta, c.function))


@dataclass(frozen=True)
class Calls:
    """A counted window: per function, its calls and own (self) seconds, and the window's
    tasks (from ``window.json`` beside the file)."""

    tasks: int
    calls: dict[str, int]
    own_s: dict[str, float]

    def per_task(self, function: str) -> tuple[float, float]:
        """(calls, own µs) per task."""
        n = max(self.tasks, 1)
        return self.calls.get(function, 0) / n, self.own_s.get(function, 0.0) * 1e6 / n

    @property
    def own_us_per_task(self) -> float:
        """Every function's own time together, per task."""
        return sum(self.own_s.values()) * 1e6 / max(self.tasks, 1)


_INSTALLED = re.compile(r"^.*/(site-packages|lib/python3\.\d+)/")
_PROJECT = re.compile(r"^.*/(hub|benchmarks)/")


def _where(path: str) -> str:
    """A file as the project names it (`hub/pool.py`, `nats/aio/client.py`), not where it is."""
    shorter = _INSTALLED.sub("", path)
    return shorter if shorter != path else _PROJECT.sub(r"\1/", path)


def load_calls(path: Path) -> Calls:
    """A ``.prof`` written by ``counting``; a function is `name (file:line)`: cProfile keeps
    no class names, and the line tells apart two lambdas of one file."""
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    calls: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for (file, line, name), (_, ncalls, own_s, _, _) in stats.items():
        function = f"{name} ({_where(file)}:{line})" if line else name
        calls[function] += ncalls
        own[function] += own_s
    window = path.parent / "window.json"
    tasks = json.loads(window.read_text())["tasks"] if window.exists() else 0
    return Calls(tasks, dict(calls), dict(own))


@dataclass(frozen=True)
class CallChange:
    function: str
    calls: tuple[float, float]  # per task, before and after
    own_us: tuple[float, float]

    @property
    def delta(self) -> float:
        return self.own_us[1] - self.own_us[0]


def compare_calls(before: Calls, after: Calls) -> list[CallChange]:
    """Every function per task in both windows, the largest growth of own time first."""
    changes = []
    for f in set(before.calls) | set(after.calls):
        (calls_before, us_before), (calls_after, us_after) = before.per_task(f), after.per_task(f)
        changes.append(CallChange(f, (calls_before, calls_after), (us_before, us_after)))
    return sorted(changes, key=lambda c: (-c.delta, c.function))
