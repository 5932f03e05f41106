"""Journal appends: T tasks at once, each writing stdout as fast as it can.

Starts the hub (embedded NATS, one replica, nodes with the benchmark kinds) and runs `--tasks`
`spam` tasks at once for `--seconds`. Reports appends accepted per second (Output messages the
replica took, over the wall time until every task's result, which is written after its
output), KV writes per task per second (the journal stream's sequence advance, minus the
task records' own writes), and checks that every task's stdout head and tail are byte-exact
and its total byte count right (invariant 5).

    python benchmarks/journal_appends.py --tasks 100 --seconds 5 --sync 1s --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CpuMeter, add_rep_flags, note
from _handlers import stream_bytes
from _hub import emit_reps, handler_rig, run_reps

from hub.config import Settings

RECORD_WRITES_PER_TASK = 3  # create (queued), claim (running), result (succeeded)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=100, help="tasks writing at once")
    p.add_argument("--seconds", type=float, default=5.0, help="how long each task writes")
    p.add_argument("--chunk", type=int, default=100, help="bytes per append")
    p.add_argument("--nodes", type=int, default=2)
    add_rep_flags(p)
    return p.parse_args(argv)


async def run_rep(args: argparse.Namespace) -> dict[str, float]:
    async with handler_rig(args) as rig:
        client = rig.clients[0]
        nc = await nats.connect(rig.nats.url)
        js = nc.jetstream()
        stream = "KV_hub_journal"
        seq0 = (await js.stream_info(stream)).state.last_seq
        meter = CpuMeter(rig.cpu_groups(os.getpid()))
        meter.start()
        payload = json.dumps({"seconds": args.seconds, "chunk": args.chunk}).encode()
        t0 = time.perf_counter()
        ids = [(await client.submit("spam", payload)).task.task_id for _ in range(args.tasks)]
        done = await asyncio.gather(*(client.wait(t, args.seconds + 120) for t in ids))
        elapsed = time.perf_counter() - t0
        cpu = meter.stop()
        writes = (await js.stream_info(stream)).state.last_seq - seq0
        await nc.close()
        s = Settings()
        chunks, exact, succeeded = 0, 0, 0
        for t, w in zip(ids, done, strict=True):
            if not (w.done and w.task.status == 4):  # SUCCEEDED
                # reported, not fatal: a task that lost its lease under the output flood is
                # a finding (see `succeeded`), and the others' figures still stand
                note(f"task {t} did not succeed: {w.task.status} attempt {w.task.attempt}")
                continue
            succeeded += 1
            n = json.loads(w.task.result)["chunks"]
            chunks += n
            task = await client.get(t, include_output=True)
            want = stream_bytes(n, args.chunk)
            out = task.stdout
            head, tail = want[: s.journal_head_bytes], want[len(want) - s.journal_tail_bytes :]
            if len(want) <= s.journal_head_bytes + s.journal_tail_bytes:
                head, tail = want, b""
            ok = out.total_bytes == len(want) and out.head + out.tail == head + tail
            exact += ok
        buffer_writes = writes - RECORD_WRITES_PER_TASK * args.tasks
        return {
            # the node writes for `seconds`; the hub has accepted them all once the results are
            # in (a result is written after the task's output), so the hub's rate is over elapsed
            "appends_per_s": chunks / elapsed,
            "appends_offered_per_s": chunks / args.seconds,
            "kv_writes_per_task_per_s": buffer_writes / args.tasks / elapsed,
            "head_tail_exact": exact / max(succeeded, 1),
            "succeeded": succeeded / args.tasks,
            "elapsed_s": elapsed,
            "replica_cpu_s": cpu["replicas"],
        }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reps, loop = run_reps(args, lambda: run_rep(args), digits=2)
    params = {"tasks": args.tasks, "seconds": args.seconds, "chunk": args.chunk}
    emit_reps("journal_appends", args, params, reps, loop)


if __name__ == "__main__":
    main()
