"""A rescan with many nodes: what one dispatch round that looks at every priority costs.

Every RESCAN_S (0.5 s) a replica's dispatch round looks at every priority again, for the work
no doorbell announced (redeliveries, another replica's hand-backs). Each node has a route of
its own on every priority, so a rescan that pulled every route cost a round trip per node and
priority. This runs the pool in this process (embedded NATS, no gRPC, no node processes), with
`--nodes` takers that each have free slots and an empty pool, forces `--rounds` rescans, and
reports the median wall time and CPU (this process: the pool) per rescan, and the pulls made.
With `--busy`, each node first takes one task of its own (a task routed to that node, pulled
and not acked, so it stays in flight) and still has free slots: its route's subject then holds
a message, though nothing in it is waiting to be pulled (the takers say they hold it).

    python benchmarks/rescan.py --nodes 400 --rounds 20 --reps 3
    python benchmarks/rescan.py --nodes 400 --rounds 20 --reps 3 --busy
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_rep_flags, median
from _hub import emit_reps, run_reps

from hub.config import Settings
from hub.journal import Journal
from hub.model import Priority, Route, TaskSpec
from hub.nats.connection import connect
from hub.nats.inline import subscribe_inline
from hub.nats.server import EmbeddedNats
from hub.nats.topology import Topology
from hub.pool import Pool, Taker
from hub.queue import Queue


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=400, help="idle nodes, each a taker")
    p.add_argument("--rounds", type=int, default=20, help="rescans timed per rep")
    p.add_argument(
        "--busy", action="store_true", help="each node first takes one task routed to it"
    )
    add_rep_flags(p)
    return p.parse_args(argv)


async def _round(pool: Pool, takers: list[Taker]) -> None:
    pool._scanned_at = 0.0  # a rescan is due
    handed = pool.fetch(takers)  # (an async generator; a list before 946fb90)
    if inspect.isasyncgen(handed):
        async for _ in handed:
            pass
    else:
        await handed


async def one_rep(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-rescan-") as tmp:
        server = EmbeddedNats(tmp, sync=args.sync)
        await server.start()
        settings = Settings()
        nc = await connect([server.url], settings, name="bench-rescan")
        try:
            js = nc.jetstream(timeout=settings.request_timeout_s)
            topology = Topology(js, settings)
            await topology.ensure()
            journal = Journal(nc, js, settings)
            pool = Pool(nc, topology, journal, Queue(nc, js, settings), settings)
            await pool.start()
            takers = [Taker(f"node{i:05d}", free=4) for i in range(args.nodes)]
            await _round(pool, takers)  # the first creates what it needs
            if args.busy:
                for t in takers:
                    await pool.submit(TaskSpec("echo", route=Route(node=t.node)))
                await _round(pool, takers)  # each node's task is pulled and stays in flight
                if "own" in {f.name for f in dataclasses.fields(Taker)}:  # (not before 2026-11-24)
                    takers = [dataclasses.replace(t, own={Priority.NORMAL: 1}) for t in takers]
            pulls = 0

            def note_pull(_: Any) -> None:
                nonlocal pulls
                pulls += 1

            # (read inline, so every pull the rounds sent is counted once the flush returns)
            pull_requests = "$JS.API.CONSUMER.MSG.NEXT.>"
            spy = await subscribe_inline(nc, pull_requests, note_pull, headers=False)
            await nc.flush()
            walls, cpus = [], []
            for _ in range(args.rounds):
                t0, c0 = time.perf_counter(), time.process_time()
                await _round(pool, takers)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            await nc.flush()
            await spy.unsubscribe()
            return {
                "rescan_ms": median(walls) * 1e3,
                "rescan_cpu_ms": median(cpus) * 1e3,
                "pulls_per_rescan": pulls / args.rounds,
            }
        finally:
            await nc.close()
            if server.process is not None:
                server.process.kill()
                await server.process.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reps, loop = run_reps(args, lambda: one_rep(args), digits=2)
    params = {"nodes": args.nodes, "rounds": args.rounds, "busy": args.busy}
    emit_reps("rescan", args, params, reps, loop, digits=2)


if __name__ == "__main__":
    main()
