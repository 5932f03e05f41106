"""``hub demo``: the whole hub on one machine, under load, with a node killed mid-task.

Embedded NATS, two replicas, a few nodes (real processes: ``hub node``), a burst of tasks
across priorities; one node is SIGKILLed while it holds work, and its tasks come back to the
others. A live progress display, then a summary. Every process it started is stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub.client import Client
from hub.config import Settings
from hub.model import Priority
from hub.nats.server import EmbeddedNats
from hub.replica import Replica

__all__ = ("run_demo",)

KILL_AFTER_S = 1.0


async def _start_node(
    addrs: list[str], node_id: str, env: dict[str, str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        "node",
        "--id",
        node_id,
        "--slots",
        "4",
        "--hub",
        ",".join(addrs),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


async def _stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


async def run_demo(*, tasks: int = 120, nodes: int = 3) -> int:
    console = Console()
    settings = Settings(
        grpc_addr="127.0.0.1:0",
        ack_wait_s=10,
        heartbeat_s=1,
        node_grace_s=1.0,
        nats_sync="always",
    )
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="hub-demo-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(EmbeddedNats(tmp, sync=settings.nats_sync))
            r1 = await stack.enter_async_context(Replica(settings, [server.url]))
            r2 = await stack.enter_async_context(Replica(settings, [server.url]))
            addrs = [f"127.0.0.1:{r1.port}", f"127.0.0.1:{r2.port}"]
            env = dict(os.environ)
            procs = [
                await _start_node(addrs[i % 2 :] + addrs[: i % 2], f"node-{i + 1}", env)
                for i in range(max(nodes, 2))
            ]
            console.print(
                f"[bold]hub demo[/]: NATS {server.url} (sync {settings.nats_sync}), "
                f"replicas {', '.join(addrs)}, {len(procs)} nodes"
            )
            try:
                return await _burst(console, addrs, procs, tasks, rng)
            finally:
                await asyncio.gather(*(_stop(p) for p in procs))


async def _burst(
    console: Console,
    addrs: list[str],
    procs: list[asyncio.subprocess.Process],
    tasks: int,
    rng: random.Random,
) -> int:
    async with Client(addrs[0]) as submitter, Client(addrs[1]) as waiter:
        async with asyncio.timeout(30):
            while len((await submitter.nodes()).nodes) < len(procs):  # noqa: ASYNC110 (remote)
                await asyncio.sleep(0.1)
        started: dict[str, tuple[Priority, float]] = {}
        for i in range(tasks):
            priority = rng.choice(list(Priority))
            seconds = 2.0 if i < 8 else rng.uniform(0.05, 0.4)
            payload = json.dumps({"seconds": round(seconds, 2)}).encode()
            response = await submitter.submit("sleep", payload, priority=priority)
            started[response.task.task_id] = (priority, time.perf_counter())

        progress = Progress(
            TextColumn("{task.description:>9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        bars = {
            p: progress.add_task(p.label, total=sum(1 for q, _ in started.values() if q is p))
            for p in Priority
        }
        latencies: dict[Priority, list[float]] = {p: [] for p in Priority}
        redelivered, failed = 0, 0

        async def follow(task_id: str) -> None:
            nonlocal redelivered, failed
            priority, t0 = started[task_id]
            response = await waiter.wait(task_id, 120)
            latencies[priority].append((time.perf_counter() - t0) * 1000)
            if response.task.attempt > 1:
                redelivered += 1
            if response.task.status != 4:  # SUCCEEDED
                failed += 1
            progress.advance(bars[priority])

        async def kill_one() -> None:
            await asyncio.sleep(KILL_AFTER_S)
            victim = procs[0]
            os.kill(victim.pid, signal.SIGKILL)
            progress.console.print(f"[red]SIGKILL node-1 (pid {victim.pid}) mid-task[/]")

        t0 = time.perf_counter()
        with progress:
            await asyncio.gather(kill_one(), *(follow(t) for t in started))
        wall = time.perf_counter() - t0

    table = Table(title=f"{tasks} tasks in {wall:.1f} s; {redelivered} redelivered after the kill")
    for column in ("priority", "completed", "p50 ms", "p90 ms", "max ms"):
        table.add_column(column, justify="right")
    for p in Priority:
        values = sorted(latencies[p])
        if not values:
            continue
        table.add_row(
            p.label,
            str(len(values)),
            f"{statistics.median(values):.0f}",
            f"{values[int(0.9 * (len(values) - 1))]:.0f}",
            f"{values[-1]:.0f}",
        )
    console.print(table)
    if failed:
        console.print(f"[red]{failed} tasks did not succeed[/]")
    return 1 if failed else 0
