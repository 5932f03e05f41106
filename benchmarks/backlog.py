"""Claim cost against the backlog: throughput with a big queue vs a small one.

For each backlog size (`--small`, `--large`) it starts a fresh hub with no nodes, queues that
many `echo` tasks (Submit over gRPC), then starts the nodes and times how long the hub takes to
run `--measure` tasks from the first one finished (messages left in the work-queue streams,
polled from NATS: a task's message is removed after its result is written). The old
pool scanned its dict to claim, so its claim cost grew with the backlog; here a claim is a
pull from a work-queue consumer, which should not. Reports both rates and large/small.

By default the backlog drains (so `--measure 1000` from 1,000 queued times the whole drain,
start-up included). With `--hold` the benchmark submits a task for each one that finishes,
keeping the backlog at its size while it measures: throughput *with* N tasks queued, over as
many tasks as `--measure` asks, the same pipeline (submit, claim, run, result) in both cases.
Reps alternate which backlog is measured first (small first in the first rep), so an order
effect does not always fall on the same side; `--small N --large N` is an A/A check.

`--ballast N` stores, beside the small side's backlog only, N messages in a stream and N keys in
a KV bucket that the hub never reads, each the average size of the hub's own task messages and
records. `--small 1000 --large 100000 --ballast 99000` gives both sides the same store (and
about the same time to grow into it), so the ratio is the cost of the hub's own backlog alone;
`--small 1000 --large 1000 --ballast 100000` measures what a bigger store alone does (the small
side has it).

`--same-history` has the small side's replica first take `large - small` submits, which are
then purged from the work-queue stream: both replicas have taken the same submits and the
journal holds the same records, and only the queued backlog differs. Without it the large
side alone keeps 100k records in the journal, and those records, not the queue's depth, are
what costs nats-server and the replica more per task (see docs/benchmarks.md, P4).

    python benchmarks/backlog.py --small 1000 --large 100000 --measure 1000 --sync 1s
    python benchmarks/backlog.py --small 1000 --large 100000 --measure 5000 --hold --sync 1s
    python benchmarks/backlog.py --small 1000 --large 100000 --ballast 99000 --sync 1s
    python benchmarks/backlog.py --small 1000 --large 100000 --same-history --sync 1s
    python benchmarks/backlog.py --small 1000 --large 100000 --measure 5000 --hold --profile prof

`--profile DIR` samples the replica (and this process, the agent) with py-spy over each side's
measured window: `DIR/rep1-small/replica0.txt` against `DIR/rep1-large/replica0.txt` with
`profile_diff.py` shows what the large backlog costs the replica, function by function.
`--cprofile DIR` counts the replica's calls over the same window instead (`replica0.prof`),
which `profile_diff.py` puts side by side per task.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nats
from _common import CpuMeter, add_rep_flags, note
from _hub import HubRig, emit_reps, run_reps
from _profile import add_profile_flag, counting, hub_module, profile_params, recording, under
from nats.js import JetStreamContext
from nats.js.api import StorageType

from hub.client import Client
from hub.model import Priority
from hub.nats import subjects


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--small", type=int, default=1000, help="small backlog")
    p.add_argument("--large", type=int, default=100_000, help="large backlog")
    p.add_argument("--measure", type=int, default=1000, help="tasks timed from each backlog")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--fill-concurrency", type=int, default=128)
    p.add_argument(
        "--hold",
        action="store_true",
        help="keep the backlog at its size while measuring (submit one per finished task)",
    )
    p.add_argument(
        "--ballast",
        type=int,
        default=0,
        help="unrelated messages and KV keys stored beside the small side's backlog",
    )
    p.add_argument(
        "--same-history",
        action="store_true",
        help="the small side's replica first takes large-small submits, then purged",
    )
    add_rep_flags(p, reps=1)
    add_profile_flag(p)
    return p.parse_args(argv)


async def drain_rate(
    args: argparse.Namespace,
    backlog: int,
    *,
    ballast: int = 0,
    history: int = 0,
    profile_dir: Path | None = None,
    count_dir: Path | None = None,
) -> tuple[float, float, float]:
    """(tasks/s over `measure` tasks, replica and nats-server CPU us per task)."""
    rig = HubRig(
        nodes=args.nodes,
        slots=args.slots,
        sync=args.sync,
        start_nodes=False,
        loop=args.loop,
        module=hub_module(args.cprofile),
    )
    async with rig, await nats.connect(rig.nats.url) as nc:
        client = rig.clients[0]
        js = nc.jetstream()
        if history:
            await submit_echoes(client, history, args.fill_concurrency)
            await js.purge_stream(subjects.stream_name(Priority.NORMAL))
            note(f"history: {history} tasks submitted, then purged from the work queue")
        t_fill = time.perf_counter()
        await submit_echoes(client, backlog, args.fill_concurrency)
        note(f"queued {backlog} in {time.perf_counter() - t_fill:.1f} s")
        # Count what is left from the work-queue streams themselves (a task's message is acked,
        # i.e. removed, after its result is written), not through the replica's Pool API: each
        # Pool call costs the replica 9 NATS requests, and at a 20 ms poll that load grew with
        # the drain time, so a slower drain looked slower still.
        streams = [subjects.stream_name(p) for p in Priority]
        queue = Backlog(backlog)

        async def left() -> int:
            queue.left = sum([(await js.stream_info(s)).state.messages for s in streams])
            return queue.left

        assert await left() == backlog, "the work-queue streams do not hold the backlog"
        if ballast:
            await store_ballast(js, ballast)
        meter = CpuMeter(rig.cpu_groups(os.getpid()))
        await settle(meter)
        # the nodes start inside the window: the replica and this process are what is sampled
        with (
            recording(profile_dir, rig.named_pids(os.getpid())),
            counting(count_dir, rig.hub_pids()) as window,
        ):
            finished, elapsed, cpu = await run_window(args, rig, queue, left, meter, backlog)
            window.tasks = finished
        per_task = {k: v * 1e6 / finished for k, v in cpu.items()}
        return finished / elapsed, per_task["replicas"], per_task["nats_server"]


async def run_window(
    args: argparse.Namespace,
    rig: HubRig,
    queue: Backlog,
    left: Callable[[], Awaitable[int]],
    meter: CpuMeter,
    backlog: int,
) -> tuple[int, float, dict[str, float]]:
    """Start the nodes and time `--measure` tasks from the first one finished; (tasks, seconds,
    CPU seconds by process kind)."""
    client = rig.clients[0]
    meter.start()
    t0 = time.perf_counter()
    stop = asyncio.Event()
    refills = [asyncio.ensure_future(queue.refill(client, stop)) for _ in range(32)]
    if not args.hold:
        stop.set()
    try:
        for i in range(args.nodes):
            await rig.start_node(f"bench-n{i}", i)
        # the clock starts at the first finished task: node start-up is not claim cost
        while (d0 := queue.done(await left())) == 0:  # noqa: ASYNC110 (polls NATS)
            await asyncio.sleep(0.005)
        measure = args.measure if args.hold else min(args.measure, queue.left)
        if measure:
            meter.start()
            t0 = time.perf_counter()
        else:  # a tiny backlog, gone before the first poll saw it move: count from start
            d0, measure = 0, backlog
        while (d1 := queue.done(await left())) < d0 + measure:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - t0
        return d1 - d0, elapsed, meter.stop()
    finally:
        stop.set()
        await asyncio.gather(*refills)


async def store_ballast(js: JetStreamContext, n: int, *, window: int = 512) -> None:
    """N messages and N KV keys the hub never reads, sized like the hub's own (averaged over
    what the fill stored), with the same shape: one subject for the messages, a key each."""
    tasks = await js.stream_info(subjects.stream_name(Priority.NORMAL))
    records = await js.stream_info(f"KV_{subjects.JOURNAL_BUCKET}")
    msg_bytes = tasks.state.bytes // max(tasks.state.messages, 1)
    rec_bytes = records.state.bytes // max(records.state.messages, 1)
    await js.add_stream(name="BALLAST", subjects=["ballast"], storage=StorageType.FILE)
    kv = await js.create_key_value(bucket="ballast")
    t0 = time.perf_counter()
    for start in range(0, n, window):
        count = min(window, n - start)
        await asyncio.gather(
            *(js.publish("ballast", b"b" * msg_bytes) for _ in range(count)),
            *(kv.put(f"task.{start + i}", b"r" * rec_bytes) for i in range(count)),
        )
    took = time.perf_counter() - t0
    note(f"ballast: {n} messages of {msg_bytes} B and {n} keys of {rec_bytes} B in {took:.1f} s")


async def submit_echoes(client: Client, n: int, concurrency: int) -> None:
    counter = iter(range(n))

    async def submit() -> None:
        for _ in counter:
            await client.submit("echo", b"x" * 64)

    await asyncio.gather(*(submit() for _ in range(concurrency)))


class Backlog:
    """The tasks in the work-queue streams: how many finished, and (``--hold``) refilled."""

    def __init__(self, depth: int) -> None:
        self.depth, self.submitted, self.left = depth, depth, depth

    def done(self, left: int) -> int:
        return self.submitted - left

    async def refill(self, client: Client, stop: asyncio.Event) -> None:
        """Submit while the streams hold fewer than ``depth`` (as last polled), until ``stop``."""
        while not stop.is_set():
            if self.left >= self.depth:
                await asyncio.sleep(0.005)
                continue
            self.left += 1
            await client.submit("echo", b"x" * 64)
            self.submitted += 1


async def settle(meter: CpuMeter, *, idle_share: float = 0.05, limit_s: float = 60.0) -> None:
    """Wait until the hub is idle: the fill leaves the replica a queue of doorbells and journal
    echoes (one each per task) whose processing would otherwise be billed to the drain, the
    more so the bigger the backlog."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        meter.start()
        await asyncio.sleep(0.5)
        used = meter.stop()
        if used["replicas"] + used["nats_server"] < idle_share * 0.5:
            return
    note("the hub did not go idle after the fill; measuring anyway")


async def run_rep(args: argparse.Namespace, rep: int, *, large_first: bool) -> dict[str, float]:
    history = args.large - args.small if args.same_history else 0

    sides = {
        "small": lambda: drain_rate(
            args,
            args.small,
            ballast=args.ballast,
            history=history,
            profile_dir=under(args.profile, f"rep{rep}-small"),
            count_dir=under(args.cprofile, f"rep{rep}-small"),
        ),
        "large": lambda: drain_rate(
            args,
            args.large,
            profile_dir=under(args.profile, f"rep{rep}-large"),
            count_dir=under(args.cprofile, f"rep{rep}-large"),
        ),
    }
    order = ("large", "small") if large_first else ("small", "large")
    runs = {side: await sides[side]() for side in order}
    (small, small_cpu, small_nats), (large, large_cpu, large_nats) = runs["small"], runs["large"]
    return {
        "small_tasks_per_s": small,
        "large_tasks_per_s": large,
        "ratio": large / small,
        "small_replica_cpu_us_per_task": small_cpu,
        "large_replica_cpu_us_per_task": large_cpu,
        "small_nats_server_cpu_us_per_task": small_nats,
        "large_nats_server_cpu_us_per_task": large_nats,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Every other rep measures the large backlog first: the second hub of a rep may run on a
    # machine in another state (page cache, the first store's deletion), which would otherwise
    # always count against the large backlog.
    large_first = itertools.cycle((False, True))
    numbers = itertools.count(1)
    reps, loop = run_reps(args, lambda: run_rep(args, next(numbers), large_first=next(large_first)))
    params = {
        "small": args.small,
        "large": args.large,
        "measure": args.measure,
        "hold": args.hold,
        "ballast": args.ballast,
        "same_history": args.same_history,
        **profile_params(args),
    }
    emit_reps(
        "backlog",
        args,
        params,
        reps,
        loop,
        note=(
            "the clock starts at the first finished task (node start-up excluded);"
            " progress is read from the work-queue streams, not the Pool API"
        ),
    )


if __name__ == "__main__":
    main()
