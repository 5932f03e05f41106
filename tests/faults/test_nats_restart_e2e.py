"""SIGKILL and restart of the (single) nats-server mid-run, end to end (issue 6, "Done when").

The library-level variant is test_nats_restart.py; here everything is a real process: one
nats-server (``sync: always``), two replica processes and three node processes. Tasks are
submitted over gRPC through both replicas while the test SIGKILLs the server (by the PID it
started) and brings it back on the same store and port. Submits that meet the outage are
repeated with the same task id (idempotent). Every task must end succeeded with exactly one
successful attempt and its whole output, and no work queue may still hold a message.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
from hubtest import NATS_PY_RECONNECT_LEAK, eventually
from procrig import ProcRig, all_terminal, retrying, statuses

from hub.buffers import HeadTail
from hub.config import Settings
from hub.dev.chaos_tasks import expected_output
from hub.model import Priority
from hub.nats import subjects
from hub.nats.server import EmbeddedNats
from hub.v1 import common_pb2

pytestmark = [NATS_PY_RECONNECT_LEAK, pytest.mark.slow, pytest.mark.timeout(150)]

TASKS = 120
KILL_AFTER = 40  # submitted tasks before the kill: work queued, running and finished


@pytest.mark.parametrize("shards", [1, 3], ids=["one-journal-bucket", "three-journal-buckets"])
async def test_nats_restart_mid_run_loses_nothing_end_to_end(
    tmp_path: Path,
    nats_server: EmbeddedNats,
    restart_nats: Callable[[EmbeddedNats], Awaitable[EmbeddedNats]],
    shards: int,
) -> None:
    rng = random.Random(6)
    specs = {
        f"e2e-{i:03d}": (rng.choice(list(Priority)), rng.choice([0.0, 0.1, 0.5, 1.5]), lines)
        for i, lines in enumerate(rng.choice([0, 3, 40, 600]) for _ in range(TASKS))
    }
    rig = ProcRig(
        tmp_path,
        nats_server.url,
        HUB_ACK_WAIT_S="10",
        HUB_MAX_ATTEMPTS="10",
        HUB_JOURNAL_SHARDS=str(shards),
    )
    try:
        replicas = [await rig.replica(f"replica-{i}") for i in (1, 2)]
        addrs = [addr for _, addr in replicas]
        for i in range(3):
            await rig.node(f"node-{i}", addrs[i % 2 :] + addrs[: i % 2], slots=4).start()
        clients = [rig.client(addr) for addr in addrs]

        killed = asyncio.Event()

        async def submit_all() -> None:
            for n, (task_id, (priority, seconds, lines)) in enumerate(specs.items()):
                if n == KILL_AFTER:
                    killed.set()
                payload = json.dumps({"seconds": seconds, "lines": lines}).encode()
                client = clients[n % 2]
                await retrying(
                    lambda c=client, t=task_id, p=payload, pr=priority: c.submit(
                        "chaos", p, priority=pr, task_id=t
                    )
                )
                await asyncio.sleep(0.02)

        async def kill_and_restart() -> float:
            await killed.wait()
            # mid-run: some tasks finished (once the nodes, separate processes, have attached:
            # on a loaded machine that can take longer than the first submits), some queued or
            # running on a node
            first = list(specs)[:KILL_AFTER]

            async def some_finished() -> dict[str, int]:
                now = await statuses(clients[0], first)
                return now if common_pb2.SUCCEEDED in now.values() else {}

            before = await eventually(some_finished, timeout_s=30)
            assert {common_pb2.QUEUED, common_pb2.RUNNING} & set(before.values()), before
            began = time.monotonic()
            await restart_nats(nats_server)
            return time.monotonic() - began

        _, outage = await asyncio.gather(submit_all(), kill_and_restart())
        assert outage < 20

        tasks = await retrying(lambda: all_terminal(clients[0], list(specs), timeout_s=60))
        s = Settings()
        runs = rig.executions()
        for task_id, (_, _, lines) in specs.items():
            task = tasks[task_id]
            assert task.status == common_pb2.SUCCEEDED, task
            assert [h.outcome for h in task.history].count("succeeded") == 1, task
            # at least once; a second run only for an attempt that lost its lease
            assert 1 <= runs[task_id] <= task.attempt, (runs[task_id], task)
            want = HeadTail().append(
                expected_output(task_id, lines), s.journal_head_bytes, s.journal_tail_bytes
            )
            got = task.stdout
            assert (got.head, got.tail, got.total_bytes) == (want.head, want.tail, want.total)

        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            for priority in Priority:
                info = await js.stream_info(subjects.stream_name(priority))
                assert info.state.messages == 0, (priority, info.state)
            records = 0  # every task's record, each in the bucket its id hashes to
            for shard in range(shards):
                bucket = subjects.journal_bucket(shard)
                held = await js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.task.*")
                records += len(held.state.subjects or {})
                assert {s.split(".", 2)[2] for s in held.state.subjects or {}} == {
                    f"task.{t}"
                    for t in specs
                    if subjects.journal_shard(f"task.{t}", shards) == shard
                }
            assert records == TASKS
        finally:
            await nc.close()
    finally:
        await rig.close()
