"""The hub end to end: agent Submit over gRPC -> replica -> node over gRPC -> result to the agent.

Starts the hub's embedded nats-server (durability mode `--sync`), R replicas (`hub serve`) and M
reference nodes (`hub node`, kind `echo`) as separate processes; this process is the agent. It
keeps K tasks in flight: each of K loops submits a task with `wait_s` (the client SDK carries
every loop's submit over one shared SubmitStream call), so a latency is submit called ->
terminal record seen by the agent. K=1 is the unloaded
latency, K=64 the loaded throughput. Reports tasks/s, p50/p99 and CPU per task of each process
kind (agent, replicas, nodes, nats-server) from /proc; every process is stopped by its PID.

    python benchmarks/e2e.py --tasks 5000 --inflight 64 --sync 1s --reps 3
    python benchmarks/e2e.py --tasks 5000 --inflight 64 --sync 1s --reps 1 --profile prof/k64

`--journal-shards N` runs the replicas with `HUB_JOURNAL_SHARDS=N` (the journal spread over N
KV buckets; docs/benchmarks.md, P2).

`--profile DIR` samples the agent, each replica and each node with py-spy over the measured
tasks (`DIR/rep1/replica0.txt`, ...; see `_profile.py`); `--cprofile DIR` counts every call of
each replica and node over the same tasks (`DIR/rep1/replica0.prof`, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nats
from _common import (
    CpuMeter,
    Progress,
    RepResult,
    add_journal_shards_flag,
    add_rep_flags,
    add_task_flags,
    each_rep,
    emit_json,
    nats_server_version,
    progress,
    run_async,
    summarize,
    task_params,
)
from _hub import HubRig, hub_params
from _profile import add_profile_flag, counting, hub_module, profile_params, recording, under

from hub.client import Client
from hub.nats.topology import journal_shards_made


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_task_flags(p)
    p.add_argument("--replicas", type=int, default=1, help="hub replica processes (R)")
    p.add_argument("--nodes", type=int, default=2, help="node processes (M)")
    p.add_argument("--slots", type=int, default=0, help="slots per node; 0 = enough for K")
    add_journal_shards_flag(p)
    add_rep_flags(p)
    p.add_argument(
        "--api",
        choices=("submit-wait", "submit+wait"),
        default="submit-wait",
        help="one Submit call with wait_s, or Submit then Wait (two calls)",
    )
    add_profile_flag(p)
    return p.parse_args(argv)


async def drive(
    clients: list[Client],
    n: int,
    inflight: int,
    payload: bytes,
    bar: Progress | None = None,
    api: str = "submit-wait",
) -> list[float]:
    """Run n echo tasks with `inflight` submit+wait loops; return the latencies in seconds."""
    latencies: list[float] = []
    counter = itertools.count()
    picks = itertools.cycle(clients)

    async def loop() -> None:
        client = next(picks)
        while next(counter) < n:
            t0 = time.perf_counter()
            if api == "submit-wait":
                done = await client.submit("echo", payload, wait_s=60.0)
            else:
                sub = await client.submit("echo", payload)
                done = await client.wait(sub.task.task_id, 60.0)
            if not done.done or done.task.result != payload:
                raise RuntimeError(f"task {done.task.task_id} not done right: {done.task}")
            latencies.append(time.perf_counter() - t0)
            if bar is not None:
                bar.advance()

    await asyncio.gather(*(loop() for _ in range(min(inflight, n))))
    return latencies


async def check_shards(url: str, shards: int) -> None:
    """The journal the replicas made has the shards asked for (not a setting lost on the way)."""
    nc = await nats.connect(url)
    try:
        made = await journal_shards_made(nc.jetstream())
    finally:
        await nc.close()
    if made != shards:
        raise RuntimeError(f"the replicas made a journal of {made} shards, not {shards}")


async def run_rep(args: argparse.Namespace, rep: int) -> RepResult:
    slots = args.slots or max(4, math.ceil(args.inflight / args.nodes))
    payload = b"x" * args.payload_bytes
    async with HubRig(
        replicas=args.replicas,
        nodes=args.nodes,
        slots=slots,
        sync=args.sync,
        loop=args.loop,
        module=hub_module(args.cprofile),
        replica_env={"journal_shards": str(args.journal_shards)},
    ) as rig:
        await check_shards(rig.nats.url, args.journal_shards)
        if args.warmup:
            await asyncio.wait_for(
                drive(rig.clients, args.warmup, args.inflight, payload, api=args.api), args.timeout
            )
        meter = CpuMeter(rig.cpu_groups(os.getpid()))
        with (
            recording(under(args.profile, f"rep{rep + 1}"), rig.named_pids(os.getpid())),
            counting(under(args.cprofile, f"rep{rep + 1}"), rig.hub_pids()) as window,
        ):
            window.tasks = args.tasks
            meter.start()
            t0 = time.perf_counter()
            with progress(args.tasks, f"e2e rep {rep + 1}/{args.reps}") as bar:
                lat = await asyncio.wait_for(
                    drive(rig.clients, args.tasks, args.inflight, payload, bar, args.api),
                    args.timeout,
                )
            elapsed = time.perf_counter() - t0
            cpu = meter.stop()
    return RepResult(args.tasks, elapsed, lat, cpu)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reps, loop_name = run_async(each_rep(args, run_rep), args.loop)
    params = {
        **task_params(args),
        "replicas": args.replicas,
        "nodes": args.nodes,
        "journal_shards": args.journal_shards,
        "loop": loop_name,
        **hub_params(),
        "nats_server": nats_server_version(),
        **profile_params(args),
    }
    emit_json(summarize("e2e", params, reps))


if __name__ == "__main__":
    main()
