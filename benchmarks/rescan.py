"""Dispatch rounds with many nodes: what one round costs a replica, by the number of nodes.

A replica's dispatch loop runs a round whenever a task is stored (the doorbell), a slot frees
or an offer is made, and every RESCAN_S (0.5 s) a round is a rescan: it looks at every
priority again, for the work no doorbell announced (redeliveries, another replica's
hand-backs). Each node has a route of its own on every priority. This runs a replica's pool and
node sessions in this process (embedded NATS, no gRPC, no node processes: each session's
messages go nowhere), with `--nodes` attached nodes that each have free slots and an empty
pool, times `--rounds` rounds of `Nodes.dispatch_once`, and reports the median wall time and
CPU (this process: the replica) per round in µs, and the pulls made.

- `--round rescan` (the default): every round is a rescan.
- `--round rung`: `--batch` tasks (1) for any node stored before each round, their
  doorbells heard, and no rescan due: the round each task starts at low load, or a busy
  round's share of tasks.
- `--round idle`: no rescan due and nothing rung, as for the wake-ups of a slot freed or an
  offer made, the most frequent rounds at one task in flight.
- `--busy`: each node first runs one task routed to it (granted and not finished), and still
  has free slots. Its route's subject then holds that task's message, though nothing in it is
  waiting to be pulled.

    python benchmarks/rescan.py --nodes 400 --rounds 20 --reps 3
    python benchmarks/rescan.py --nodes 2000 --rounds 10 --reps 3 --busy
    python benchmarks/rescan.py --nodes 2000 --rounds 100 --reps 3 --round rung
    python benchmarks/rescan.py --nodes 2000 --rounds 30 --reps 3 --round rung --batch 64
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator
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
from hub.nodes import Nodes, NodeSession
from hub.pool import Pool
from hub.queue import Queue

#: How long the busy set-up may take to grant every node its task.
BUSY_TIMEOUT_S = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=400, help="attached nodes, each with free slots")
    p.add_argument("--rounds", type=int, default=20, help="rounds timed per rep")
    p.add_argument(
        "--round", choices=("rescan", "rung", "idle"), default="rescan", help="which rounds"
    )
    p.add_argument("--busy", action="store_true", help="each node first runs a task routed to it")
    p.add_argument("--batch", type=int, default=1, help="tasks stored before each rung round")
    add_rep_flags(p)
    return p.parse_args(argv)


async def _polls(what: str, interval_s: float) -> AsyncIterator[None]:
    """The turns of a polling loop, ``interval_s`` apart, for at most BUSY_TIMEOUT_S; past it,
    TimeoutError naming ``what`` was not seen."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while time.monotonic() <= deadline:
        yield
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {BUSY_TIMEOUT_S} s")


async def _busy(pool: Pool, nodes: Nodes) -> None:
    """Give every node one task routed to it, granted through the dispatch round (so the
    session holds it, as a node running it would), and wait until each holds it."""
    for node in nodes.sessions:
        await pool.submit(TaskSpec("echo", route=Route(node=node)))
    async for _ in _polls("the nodes' tasks all granted", 0.05):
        if all(s.held for s in nodes.sessions.values()):
            return
        pool._scanned_at = 0.0  # (a bell may have rung before its task was visible)
        await nodes.dispatch_once()


async def _rung(pool: Pool, rings: int) -> None:
    """Wait until the doorbell has rung for every task stored (bounded)."""
    async for _ in _polls("the doorbell rung for every task", 0.001):
        if pool._rings[Priority.NORMAL] >= rings:
            return


async def _finish(pool: Pool, nodes: Nodes, task_id: str) -> None:
    """Wait until a node holds the task (another, untimed round if the timed one missed it),
    then let it finish, so the nodes' slots stay free round after round."""
    async for _ in _polls(f"task {task_id} granted", 0.005):
        for session in nodes.sessions.values():
            if task_id in session.held:
                nodes.finished(session, task_id)
                return
        if not any(s.claiming for s in nodes.sessions.values()):
            pool._scanned_at = 0.0
            await nodes.dispatch_once()


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
            journal = Journal(nc, js, settings, shards=topology.journal_shards)
            pool = Pool(nc, topology, journal, Queue(nc, js, settings), settings)
            await pool.start()
            nodes = Nodes(pool, settings, "bench")
            for i in range(args.nodes):
                node = f"node{i:05d}"
                session = NodeSession(
                    node, frozenset(), 4, lambda _: None, kinds=frozenset({"echo"})
                )
                nodes.sessions[node] = session
            await nodes.dispatch_once()  # the first is a rescan, and creates the consumers
            if args.busy:
                await _busy(pool, nodes)
            pulls = 0

            def note_pull(_: Any) -> None:
                nonlocal pulls
                pulls += 1

            # (read inline, so every pull the rounds sent is counted once the flush returns)
            pull_requests = "$JS.API.CONSUMER.MSG.NEXT.>"
            spy = await subscribe_inline(nc, pull_requests, note_pull, headers=False)
            await nc.flush()
            walls, cpus, round_pulls = [], [], 0
            for _ in range(args.rounds):
                pool.bell.clear()  # (a round that offered something rings it again)
                if args.round == "rung":
                    rings = pool._rings[Priority.NORMAL]
                    stored = [
                        (await pool.submit(TaskSpec("echo")))[0].id for _ in range(args.batch)
                    ]
                    await _rung(pool, rings + args.batch)
                # a rescan is due, or none is (and none rang unless `rung`: the pool is empty)
                pool._scanned_at = 0.0 if args.round == "rescan" else time.monotonic()
                before = pulls
                t0, c0 = time.perf_counter(), time.process_time()
                await nodes.dispatch_once()
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                await nc.flush()
                round_pulls += pulls - before  # (not those of _finish)
                if args.round == "rung":
                    for task_id in stored:
                        await _finish(pool, nodes, task_id)
            await spy.unsubscribe()
            await nodes.close()
            return {
                "round_us": median(walls) * 1e6,
                "round_cpu_us": median(cpus) * 1e6,
                "pulls_per_round": round_pulls / args.rounds,
            }
        finally:
            await nc.close()
            if server.process is not None:
                server.process.kill()
                await server.process.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reps, loop = run_reps(args, lambda: one_rep(args), digits=1)
    params = {
        "nodes": args.nodes,
        "rounds": args.rounds,
        "round": args.round,
        "busy": args.busy,
        "batch": args.batch,
    }
    emit_reps("rescan", args, params, reps, loop, digits=1)


if __name__ == "__main__":
    main()
