"""Replica memory: N running tasks at once, each writing B bytes of stdout.

Starts the hub (embedded NATS, one replica, nodes with the benchmark kinds), submits `--tasks`
`bigout` tasks that each write `--bytes` of stdout and then keep running for `--hold`
seconds, samples the replica's RSS (VmRSS from /proc) every 100 ms, and reports the peak and
the baseline before the tasks. What the journal keeps per task is bounded (head + tail), so
the peak should not grow with the bytes written.

    python benchmarks/replica_rss.py --tasks 1000 --bytes 1000000 --sync 1s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_rep_flags
from _hub import emit_reps, handler_rig, rss_kib, run_reps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=1000, help="tasks running at once")
    p.add_argument("--bytes", type=int, default=1_000_000, help="stdout bytes per task")
    p.add_argument("--chunk", type=int, default=16384, help="bytes per append")
    p.add_argument("--hold", type=float, default=5.0, help="seconds each task keeps running")
    p.add_argument("--nodes", type=int, default=4)
    add_rep_flags(p, reps=1)
    return p.parse_args(argv)


async def run_rep(args: argparse.Namespace) -> dict[str, float]:
    async with handler_rig(args) as rig:
        pid = rig.replica_pids[0]
        client = rig.clients[0]
        base = rss_kib(pid)
        peak = base
        spec = {"bytes": args.bytes, "chunk": args.chunk, "hold_s": args.hold}
        payload = json.dumps(spec).encode()
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(64)

        async def submit() -> str:
            async with sem:
                return (await client.submit("bigout", payload)).task.task_id

        ids = await asyncio.gather(*(submit() for _ in range(args.tasks)))
        waits = asyncio.gather(*(client.wait(t, args.hold + 600) for t in ids))
        while not waits.done():
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.1)
        done = waits.result()
        elapsed = time.perf_counter() - t0
        ok = sum(1 for w in done if w.done and w.task.status == 4)  # SUCCEEDED
        return {
            "peak_rss_mb": peak / 1024,
            "baseline_rss_mb": base / 1024,
            "succeeded": ok,
            "elapsed_s": elapsed,
            "mb_written_per_s": args.tasks * args.bytes / 1e6 / elapsed,
        }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reps, loop = run_reps(args, lambda: run_rep(args), digits=2)
    params = {"tasks": args.tasks, "bytes": args.bytes, "chunk": args.chunk, "hold_s": args.hold}
    emit_reps("replica_rss", args, params, reps, loop, digits=2)


if __name__ == "__main__":
    main()
