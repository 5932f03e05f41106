"""Claim cost against the backlog: drain rate with a big queue vs a small one.

For each backlog size (`--small`, `--large`) it starts a fresh hub with no nodes, queues that
many `echo` tasks (Submit over gRPC), then starts the nodes and times how long the hub takes to
run the first `--measure` tasks (queued + in-flight count from the Pool API, polled). The old
pool scanned its dict to claim, so its claim cost grew with the backlog; here a claim is a
pull from a work-queue consumer, which should not. Reports both rates and large/small.

    python benchmarks/backlog.py --small 1000 --large 100000 --measure 1000 --sync 1s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SYNC_MODES, CpuMeter, emit_json, median, nats_server_version, note, run_async
from _hub import HubRig, hub_params

from hub.client import ClientError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--small", type=int, default=1000, help="small backlog")
    p.add_argument("--large", type=int, default=100_000, help="large backlog")
    p.add_argument("--measure", type=int, default=1000, help="tasks timed from each backlog")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--fill-concurrency", type=int, default=128)
    p.add_argument("--sync", choices=SYNC_MODES, default="1s")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    return p.parse_args(argv)


async def drain_rate(args: argparse.Namespace, backlog: int) -> tuple[float, float]:
    """(tasks/s over the first `measure` tasks, replica CPU us per task)."""
    async with HubRig(nodes=args.nodes, slots=args.slots, sync=args.sync, start_nodes=False) as rig:
        client = rig.clients[0]
        counter = iter(range(backlog))
        t_fill = time.perf_counter()

        async def fill() -> None:
            for _ in counter:
                await client.submit("echo", b"x" * 64)

        await asyncio.gather(*(fill() for _ in range(args.fill_concurrency)))
        note(f"queued {backlog} in {time.perf_counter() - t_fill:.1f} s")
        measure = min(args.measure, backlog)

        async def left() -> int:
            for _ in range(50):
                try:
                    c = await client.pool()
                except ClientError:  # Pool races a message acked between its two reads
                    await asyncio.sleep(0.01)
                    continue
                return sum(c.queued.values()) + c.in_flight
            raise RuntimeError("Pool kept failing")

        meter = CpuMeter({"replicas": rig.replica_pids})
        meter.start()
        t0 = time.perf_counter()
        for i in range(args.nodes):
            await rig.start_node(f"bench-n{i}", i)
        while await left() > backlog - measure:  # noqa: ASYNC110 (polls the hub, not us)
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - t0
        cpu = meter.stop()["replicas"]
        return measure / elapsed, cpu * 1e6 / measure


async def main_async(args: argparse.Namespace) -> list[dict[str, float]]:
    reps = []
    for rep in range(args.reps):
        small, small_cpu = await drain_rate(args, args.small)
        large, large_cpu = await drain_rate(args, args.large)
        r = {
            "small_tasks_per_s": small,
            "large_tasks_per_s": large,
            "ratio": large / small,
            "small_replica_cpu_us_per_task": small_cpu,
            "large_replica_cpu_us_per_task": large_cpu,
        }
        note(f"rep {rep + 1}: {json.dumps({k: round(v, 3) for k, v in r.items()})}")
        reps.append(r)
    return reps


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reps, loop_name = run_async(main_async(args), args.loop)
    keys = list(reps[0])
    emit_json(
        {
            "bench": "backlog",
            "sync": args.sync,
            "small": args.small,
            "large": args.large,
            "measure": args.measure,
            "reps": args.reps,
            "loop": loop_name,
            **{k: round(median([r[k] for r in reps]), 3) for k in keys},
            "raw": {k: [round(r[k], 3) for r in reps] for k in keys},
            **hub_params(),
            "nats_server": nats_server_version(),
            "host": {"cpus": os.cpu_count()},
            "note": "time to first result excluded: the clock starts when nodes are launched",
        }
    )


if __name__ == "__main__":
    main()
