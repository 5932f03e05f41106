"""Real hub processes for fault tests: replicas (``python -m hub serve``) and nodes
(``python -m hub node``) on a NATS server the test started, clients to talk to them.

``ProcRig`` records every process it starts and stops all of them in ``close()`` (nodes
SIGKILLed, replicas SIGTERMed, then SIGKILLed if they hang), always by the PID it recorded.
Nodes run ``hub.dev.chaos_tasks`` (kind ``chaos``: payload ``{"seconds", "lines"}``, one line
per execution in ``$CHAOS_DIR``), so a test can count executions per task across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from hubtest import eventually

from hub.client import Client, ClientError
from hub.dev.procs import HubProcess, node_process, replica_process
from hub.v1 import common_pb2

#: Timers of the replica and node processes (HUB_* variables), on top of which a test adds its own.
BASE_ENV: dict[str, str] = {
    "HUB_HEARTBEAT_S": "1",
    "HUB_NODE_GRACE_S": "1",
    "HUB_OFFER_TIMEOUT_S": "2",
    "HUB_RETRY_BACKOFF_S": "[0]",
    "HUB_REQUEST_TIMEOUT_S": "3",
}
TERMINAL = {
    common_pb2.SUCCEEDED,
    common_pb2.FAILED,
    common_pb2.CANCELLED,
    common_pb2.DEAD,
    common_pb2.EXPIRED,
}
HANDLERS = "hub.dev.chaos_tasks"


def chaos_payload(seconds: float, lines: int = 3) -> bytes:
    return json.dumps({"seconds": seconds, "lines": lines}).encode()


class ProcRig:
    """Replica and node processes of one test on one NATS URL (or a comma-separated list)."""

    def __init__(self, base: Path, nats_url: str, **env: str) -> None:
        self.base, self.nats_url = base, nats_url
        self.logs = base / "logs"
        self.exec_dir = base / "exec"
        self.exec_dir.mkdir(parents=True, exist_ok=True)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        self.env = clean | {"CHAOS_DIR": str(self.exec_dir)} | BASE_ENV | env
        self.replicas: list[HubProcess] = []
        self.nodes: list[HubProcess] = []
        self.clients: list[Client] = []

    async def replica(self, name: str, **env: str) -> tuple[HubProcess, str]:
        """Start a replica process and wait until it answers over gRPC; (process, address)."""
        proc, addr = replica_process(name, self.nats_url, self.env | env, self.logs)
        self.replicas.append(proc)
        await proc.start()
        await self.reachable(addr)
        return proc, addr

    def node(
        self,
        node_id: str,
        addrs: Sequence[str],
        *,
        slots: int = 4,
        handlers: Sequence[str] = (),
        **env: str,
    ) -> HubProcess:
        """A node process (not started: ``await node.start()``) running the chaos handlers and
        any other ``handlers`` modules (importable by the child: see ``PYTHONPATH`` in env)."""
        proc = node_process(
            node_id, addrs, self.env | env, self.logs, slots=slots, handlers=[HANDLERS, *handlers]
        )
        self.nodes.append(proc)
        return proc

    def client(self, addr: str) -> Client:
        client = Client(addr, timeout_s=10)
        self.clients.append(client)
        return client

    async def reachable(self, addr: str, timeout_s: float = 30.0) -> None:
        async with Client(addr, timeout_s=2) as client:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    await client.pool()
                    return
                except ClientError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"replica at {addr} never answered") from None
                await asyncio.sleep(0.2)

    def executions(self) -> Counter[str]:
        """Executions per task id, from every node process's execution log."""
        runs: Counter[str] = Counter()
        for path in self.exec_dir.glob("exec-*.log"):
            for line in path.read_text().splitlines():
                runs[line.split()[0]] += 1
        return runs

    def log_text(self, proc: HubProcess) -> str:
        return proc.log.read_text(errors="replace") if proc.log.exists() else ""

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        await asyncio.gather(*(n.kill() for n in self.nodes), return_exceptions=True)
        await asyncio.gather(*(r.stop(10) for r in self.replicas), return_exceptions=True)


async def until(
    probe: Callable[[], Awaitable[Any]], *, timeout_s: float, interval_s: float = 0.1
) -> Any:
    """``eventually``, with a ClientError (a replica restarting) counted as "not yet"."""

    async def tolerant() -> Any:
        with contextlib.suppress(ClientError):
            return await probe()
        return None

    return await eventually(tolerant, timeout_s=timeout_s, interval_s=interval_s)


async def statuses(client: Client, task_ids: Sequence[str]) -> dict[str, int]:
    tasks = await asyncio.gather(*(client.get(t) for t in task_ids))
    return {t.task_id: t.status for t in tasks}


async def all_terminal(
    client: Client, task_ids: Sequence[str], *, timeout_s: float
) -> dict[str, common_pb2.Task]:
    """Wait (bounded) until every task is terminal; the final task records."""

    async def probe() -> bool:
        return all(s in TERMINAL for s in (await statuses(client, task_ids)).values())

    await until(probe, timeout_s=timeout_s, interval_s=0.2)
    tasks = await asyncio.gather(*(client.get(t, include_output=True) for t in task_ids))
    return {t.task_id: t for t in tasks}


RETRY_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "INTERNAL"})


async def retrying(
    call: Callable[[], Awaitable[Any]], *, timeout_s: float = 60.0, interval_s: float = 0.2
) -> Any:
    """Repeat an idempotent API call through an outage (transient codes only), bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except ClientError as exc:
            if exc.code not in RETRY_CODES or time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval_s)
