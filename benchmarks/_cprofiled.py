"""A hub command that can count its own calls over a window: what `--cprofile DIR` runs.

`python -m _cprofiled serve` (or `node ...`) runs `python -m hub ...` with two signal
handlers: SIGUSR1 starts cProfile on the main thread (where the event loop runs every line of
the hub's Python), SIGUSR2 stops it and writes `$BENCH_CPROFILE/<pid>.prof`. The benchmark
sends them at the edges of its measured window (`_profile.counting`). py-spy samples shares of
time; this counts every call exactly, so two windows can be compared call by call per task.
The hub's own code carries no profiling hooks: they are installed here, as `_stamps` does.
"""

from __future__ import annotations

import cProfile
import os
import signal
from pathlib import Path
from types import FrameType

CPROFILE_ENV = "BENCH_CPROFILE"  # (not HUB_*: the rig drops those from its children)

_running: list[cProfile.Profile] = []


def _start(signum: int, frame: FrameType | None) -> None:
    if not _running:
        profile = cProfile.Profile()
        profile.enable()
        _running.append(profile)


def _stop(signum: int, frame: FrameType | None) -> None:
    if not _running:
        return
    profile = _running.pop()
    profile.disable()
    out = Path(os.environ[CPROFILE_ENV]) / f"{os.getpid()}.prof"
    partial = out.with_suffix(".partial")
    profile.dump_stats(partial)
    partial.replace(out)  # the benchmark waits for the whole file, never a part of it


def main() -> None:
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    from hub.__main__ import main as hub_main

    hub_main()


if __name__ == "__main__":
    main()
