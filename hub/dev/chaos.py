"""``hub dev chaos``: kill nodes, replicas and NATS servers under load; prove nothing is lost.

A 3-server NATS cluster (R3 streams and buckets), three replica processes and a dozen node
processes run N tasks of mixed priorities, durations and output sizes while a controller
SIGKILLs and restarts random nodes, random replicas and one NATS server at a time. Then it
checks, from the journal and the streams: every task has exactly one terminal result; no work
queue still holds a message; executions per task (duplicates happen only for an attempt whose
lease was lost, i.e. never more executions than claimed attempts); and the head+tail output of
every task is byte-exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from hub.buffers import HeadTail
from hub.client import Client, ClientError
from hub.config import Settings
from hub.dev.chaos_tasks import expected_output
from hub.dev.cluster import NatsCluster
from hub.dev.procs import HubProcess, node_process, replica_process
from hub.grpc.convert import status_name
from hub.model import Priority
from hub.nats import subjects

__all__ = ("ChaosReport", "run_chaos")

log = logging.getLogger(__name__)

TERMINAL = {"succeeded", "failed", "cancelled", "dead", "expired"}
RETRIES = 60


@dataclass
class ChaosReport:
    tasks: int
    seed: int
    kills: int = 0
    kills_by_kind: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    double_results: int = 0
    not_succeeded: int = 0
    duplicate_executions: int = 0
    unexplained_duplicates: int = 0
    journal_mismatches: int = 0
    messages_left: int = 0
    journal_buckets: int = 0
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.double_results
            or self.unexplained_duplicates
            or self.journal_mismatches
            or self.messages_left
        )


@dataclass(frozen=True)
class _Spec:
    task_id: str
    priority: Priority
    seconds: float
    lines: int


class _Rig:
    """The processes of one chaos run and what the controller did to them."""

    def __init__(self, base: Path, cluster: NatsCluster, settings_env: dict[str, str]) -> None:
        self.base, self.cluster, self.env = base, cluster, settings_env
        self.replicas: list[tuple[HubProcess, str]] = []
        self.nodes: list[HubProcess] = []
        self.kills: Counter[str] = Counter()
        self.attempts: dict[str, int] = {}

    @property
    def addrs(self) -> list[str]:
        return [addr for _, addr in self.replicas]

    async def start(self, replicas: int, nodes: int) -> None:
        logs = self.base / "logs"
        for i in range(replicas):
            self.replicas.append(
                replica_process(f"replica-{i + 1}", self.cluster.url, self.env, logs)
            )
        await asyncio.gather(*(p.start() for p, _ in self.replicas))
        await asyncio.gather(*(self._reachable(addr) for addr in self.addrs))
        for i in range(nodes):
            order = self.addrs[i % replicas :] + self.addrs[: i % replicas]
            self.nodes.append(
                node_process(
                    f"node-{i + 1:02d}", order, self.env, logs, handlers=["hub.dev.chaos_tasks"]
                )
            )
        await asyncio.gather(*(n.start() for n in self.nodes))

    async def _reachable(self, addr: str) -> None:
        async with Client(addr, timeout_s=2) as client:
            for _ in range(RETRIES * 2):
                with contextlib.suppress(ClientError):
                    await client.pool()
                    return
                await asyncio.sleep(0.5)
        raise RuntimeError(f"replica at {addr} never answered")

    async def stop(self) -> None:
        await asyncio.gather(*(n.kill() for n in self.nodes))
        await asyncio.gather(*(p.stop() for p, _ in self.replicas))

    async def kill(self, kind: str, rng: random.Random, console: Console) -> None:
        if kind == "node":
            victim = rng.choice(self.nodes)
            await victim.kill()
            console.print(f"  kill node {victim.name} (pid {victim.pid})")
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            await victim.start()
        elif kind == "replica":
            victim, addr = rng.choice(self.replicas)
            await victim.kill()
            console.print(f"  kill replica {victim.name} at {addr}")
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            await victim.start()
        else:
            server = rng.choice(self.cluster.servers)
            server.kill()
            await server.wait_exit()
            console.print(f"  kill nats-server {server.name}")
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            await server.restart()
            await self.cluster.wait_current(60)
        self.kills[kind] += 1


async def _call(rig: _Rig, rng: random.Random, method: str, *args: object, **kw: object) -> Any:
    """Call any live replica, through kills and elections, with the same (idempotent) args."""
    last: Exception | None = None
    for attempt in range(RETRIES):
        addr = rng.choice(rig.addrs)
        try:
            async with Client(addr, timeout_s=10) as client:
                return await getattr(client, method)(*args, **kw)
        except ClientError as exc:
            if exc.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "INTERNAL"):
                raise
            last = exc
        await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
    raise RuntimeError(f"{method} kept failing: {last}")


def _specs(tasks: int, rng: random.Random) -> list[_Spec]:
    return [
        _Spec(
            task_id=f"chaos-{i:06d}",
            priority=rng.choice(list(Priority)),
            seconds=rng.choice([0.0, 0.05, 0.2, 0.5, 2.0]),
            lines=rng.choice([0, 3, 50, 2000]),
        )
        for i in range(tasks)
    ]


async def run_chaos(
    *,
    tasks: int,
    kills: int,
    seed: int,
    servers: int = 3,
    replicas: int = 3,
    nodes: int = 12,
    journal_shards: int = 1,
    console: Console | None = None,
) -> ChaosReport:
    console = console or Console(stderr=True)
    rng = random.Random(seed)
    report = ChaosReport(tasks=tasks, seed=seed)
    specs = _specs(tasks, rng)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hub-chaos-") as tmp:
        base = Path(tmp)
        (base / "exec").mkdir()
        env = dict(os.environ) | {
            "CHAOS_DIR": str(base / "exec"),
            "HUB_STREAM_REPLICAS": str(min(servers, 3)),
            "HUB_ACK_WAIT_S": "6",
            "HUB_HEARTBEAT_S": "1",
            "HUB_NODE_GRACE_S": "1",
            "HUB_MAX_ATTEMPTS": "50",
            "HUB_RETRY_BACKOFF_S": "[0.2]",
            "HUB_JOURNAL_SHARDS": str(journal_shards),
        }
        async with NatsCluster(base / "nats", servers=servers) as cluster:
            rig = _Rig(base, cluster, env)
            try:
                console.print(f"chaos: {servers} nats-servers, {replicas} replicas, {nodes} nodes")
                await rig.start(replicas, nodes)
                await _load(rig, rng, specs, kills, console)
                await _settle(rig, rng, specs, console, report)
                report.messages_left, report.journal_buckets = await _streams_left(cluster)
                _count_executions(base / "exec", report, rig)
            finally:
                await rig.stop()
            report.kills = sum(rig.kills.values())
            report.kills_by_kind = dict(rig.kills)
    report.wall_s = round(time.monotonic() - began, 1)
    return report


async def _load(
    rig: _Rig, rng: random.Random, specs: list[_Spec], kills: int, console: Console
) -> None:
    """Submit everything while the controller kills; at least one of each kind of victim."""
    kinds = ["node", "replica", "nats"][: max(kills, 0)]
    rng.shuffle(kinds)
    kinds += [rng.choice(["node", "node", "replica", "nats"]) for _ in range(kills - len(kinds))]
    done = asyncio.Event()

    async def submit_all() -> None:
        for spec in specs:
            payload = json.dumps({"seconds": spec.seconds, "lines": spec.lines}).encode()
            await _call(
                rig, rng, "submit", "chaos", payload, priority=spec.priority, task_id=spec.task_id
            )
        done.set()

    async def controller() -> None:
        gap = max(0.5, 0.2 * len(specs) / max(kills, 1) / 10)
        for kind in kinds:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * gap)
            await rig.kill(kind, rng, console)

    await asyncio.gather(submit_all(), controller())


async def _settle(
    rig: _Rig, rng: random.Random, specs: list[_Spec], console: Console, report: ChaosReport
) -> None:
    """Wait until every task is terminal (bounded), then check each one's journal."""
    s = Settings()
    pending = {spec.task_id: spec for spec in specs}
    deadline = time.monotonic() + 120 + 2 * len(specs) * 0.01
    while pending and time.monotonic() < deadline:
        batch = list(pending)[:64]
        results = await asyncio.gather(
            *(_call(rig, rng, "wait", t, 5.0) for t in batch), return_exceptions=True
        )
        for task_id, response in zip(batch, results, strict=True):
            if isinstance(response, BaseException):
                continue
            if status_name(response.task.status) in TERMINAL:
                pending.pop(task_id)
        console.print(f"  settling: {len(pending)} tasks not finished")
    report.lost = len(pending)
    for spec in specs:
        if spec.task_id in pending:
            continue
        task = await _call(rig, rng, "get", spec.task_id, include_output=True)
        status = status_name(task.status)
        if status != "succeeded":
            report.not_succeeded += 1
        wins = sum(1 for h in task.history if h.outcome == "succeeded")
        if wins > 1:
            report.double_results += 1
        if status == "succeeded":
            want = HeadTail().append(
                expected_output(spec.task_id, spec.lines),
                s.journal_head_bytes,
                s.journal_tail_bytes,
            )
            got = task.stdout
            if (got.head, got.tail, got.total_bytes) != (want.head, want.tail, want.total):
                report.journal_mismatches += 1
                log.warning("journal mismatch task=%s", spec.task_id)
        rig.attempts[spec.task_id] = task.attempt


async def _streams_left(cluster: NatsCluster) -> tuple[int, int]:
    """(messages left in the work queues, journal buckets the replicas made)."""
    async with cluster.connection() as nc:
        js = nc.jetstream(timeout=10)
        total = 0
        for priority in Priority:
            info = await js.stream_info(subjects.stream_name(priority))
            total += info.state.messages
        names = [info.config.name for info in await js.streams_info()]
    return total, sum(1 for n in names if n and n.startswith(f"KV_{subjects.JOURNAL_BUCKET}"))


def _count_executions(exec_dir: Path, report: ChaosReport, rig: _Rig) -> None:
    runs: Counter[str] = Counter()
    for path in exec_dir.glob("exec-*.log"):
        for line in path.read_text().splitlines():
            task_id, _ = line.split()
            runs[task_id] += 1
    report.duplicate_executions = sum(n - 1 for n in runs.values() if n > 1)
    report.unexplained_duplicates = sum(
        1 for task_id, n in runs.items() if n > rig.attempts.get(task_id, 0)
    )


async def chaos_command(tasks: int, kills: int, seed: int, shards: int, as_json: bool) -> int:
    console = Console(stderr=as_json)
    report = await run_chaos(
        tasks=tasks, kills=kills, seed=seed, journal_shards=shards, console=console
    )
    console.print(
        f"tasks={report.tasks} kills={report.kills} {report.kills_by_kind} lost={report.lost} "
        f"double_results={report.double_results} "
        f"duplicate_executions={report.duplicate_executions} "
        f"(unexplained {report.unexplained_duplicates}) "
        f"journal_mismatches={report.journal_mismatches} not_succeeded={report.not_succeeded} "
        f"messages_left={report.messages_left} journal_buckets={report.journal_buckets} "
        f"wall={report.wall_s}s seed={report.seed}"
    )
    if as_json:
        print(json.dumps(asdict(report)))  # noqa: T201
    return 0 if report.ok else 1
