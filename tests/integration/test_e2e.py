"""The hub end to end over real gRPC and a real nats-server (issue 4, "Done when").

Two replicas share one NATS server; nodes (the ``hub.node`` SDK) attach to either; agents (the
``hub.client`` SDK) submit on one replica and wait or watch on the other. Replicas are stateless,
so a caller can carry on through another replica, even after the first has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from typing import Any

import pytest
from grpchub import STEP_S, GrpcHub, addr, until, wait_done
from hubtest import published

from hub import pool as pool_module
from hub.client import ClientError
from hub.grpc.convert import priority_to_pb
from hub.model import Priority
from hub.nats import subjects
from hub.node import TaskContext
from hub.v1 import common_pb2

pytestmark = pytest.mark.timeout(60)

ROUTES: dict[str, dict[str, Any]] = {
    "any": {},
    "node-a": {"node": "node-a"},
    "node-b": {"node": "node-b"},
    "cap-gpu": {"require": ["gpu"]},
}


def reporter(node_id: str):
    async def handler(ctx: TaskContext) -> Any:
        ctx.thought(f"{node_id} thinking about {ctx.task_id}")
        ctx.stdout(f"{node_id} ran {ctx.task_id}\n")
        return {"node": node_id, "payload": ctx.payload.decode()}

    return handler


@pytest.mark.parametrize("shards", [1, 3], ids=["one-journal-bucket", "three-journal-buckets"])
async def test_two_replicas_every_priority_and_route_completed(
    e2e_hub: GrpcHub, shards: int
) -> None:
    a = await e2e_hub.replica(journal_shards=shards)
    b = await e2e_hub.replica(journal_shards=shards)
    await e2e_hub.node(addr(a), "node-a", {"echo": reporter("node-a")}, slots=2)
    await e2e_hub.node(
        addr(b), "node-b", {"echo": reporter("node-b")}, slots=2, capabilities=["gpu", "ssd"]
    )
    clients = [e2e_hub.client(a), e2e_hub.client(b)]

    submitted = []
    for i, (priority, (route, kwargs)) in enumerate(itertools.product(Priority, ROUTES.items())):
        on, other = clients[i % 2], clients[(i + 1) % 2]
        payload = f"{priority.label}/{route}"
        response = await on.submit("echo", payload.encode(), priority=priority, **kwargs)
        assert response.created
        assert response.task.status == common_pb2.QUEUED
        assert response.task.priority == priority_to_pb(priority)
        submitted.append((response.task.task_id, priority, route, payload, other))
    assert len(submitted) == len(Priority) * len(ROUTES) == 16

    ran_on = set()
    for task_id, priority, route, payload, other in submitted:
        task = await wait_done(other, task_id)  # waited on the replica it was not submitted to
        assert task.status == common_pb2.SUCCEEDED, task
        assert task.priority == priority_to_pb(priority)
        assert task.attempt == 1 and task.tries == 1
        assert json.loads(task.result) == {"node": task.node_id, "payload": payload}
        if route == "node-a":
            assert task.node_id == "node-a"
            assert task.route.node_id == "node-a"
        elif route in ("node-b", "cap-gpu"):
            assert task.node_id == "node-b"
        ran_on.add(task.node_id)
        assert task.stdout.head == f"{task.node_id} ran {task_id}\n".encode()
        assert task.thoughts.head == f"{task.node_id} thinking about {task_id}".encode()
        assert [h.outcome for h in task.history] == ["succeeded"]
    assert ran_on == {"node-a", "node-b"}
    # Every message was acknowledged: nothing left in any work queue.
    assert await e2e_hub.stream_messages(a) == 0
    # Each task's three keys (record, stdout, thoughts) are in the bucket its id hashes to.
    js, keys = a.nc.jetstream(), [0] * shards
    for task_id, *_ in submitted:
        keys[subjects.journal_shard(subjects.record_key(task_id), shards)] += 3
    for shard in range(shards):
        info = await js.stream_info(f"KV_{subjects.journal_bucket(shard)}")
        assert info.state.messages == keys[shard]


async def test_wait_on_replica_b_for_a_task_submitted_on_a_after_a_is_gone(
    e2e_hub: GrpcHub,
) -> None:
    a, b = await e2e_hub.replica(), await e2e_hub.replica()
    started, release = asyncio.Event(), asyncio.Event()

    async def gated(ctx: TaskContext) -> bytes:
        started.set()
        await release.wait()
        return b"finished " + ctx.payload

    await e2e_hub.node(addr(b), "worker", {"gated": gated})
    on_a, on_b = e2e_hub.client(a), e2e_hub.client(b)
    task_id = (await on_a.submit("gated", b"job-1")).task.task_id
    async with asyncio.timeout(STEP_S):
        await started.wait()

    waiter = asyncio.create_task(on_b.wait(task_id, STEP_S))
    await e2e_hub.stop_replica(a)
    with pytest.raises(ClientError) as gone:
        await on_a.get(task_id)
    assert gone.value.code == "UNAVAILABLE"
    assert not waiter.done()  # the task is still running: Wait on B is waiting

    release.set()
    async with asyncio.timeout(STEP_S):
        response = await waiter
    assert response.done
    assert response.task.status == common_pb2.SUCCEEDED
    assert response.task.result == b"finished job-1"
    assert response.task.node_id == "worker"


async def test_wait_on_an_unknown_task_is_not_found_at_once(e2e_hub: GrpcHub) -> None:
    client = e2e_hub.client(await e2e_hub.replica())
    started = time.monotonic()
    with pytest.raises(ClientError) as err:
        await client.wait("no-such-task", 30.0)
    assert err.value.code == "NOT_FOUND"
    assert "no-such-task" in err.value.message
    assert time.monotonic() - started < 2.0  # not after the 30 s wait


async def test_dispatch_goes_on_after_a_round_that_failed_unexpectedly(
    e2e_hub: GrpcHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in one dispatch round (here: fetch raising what no NATS call raises) is logged,
    and the next round runs; a replica that stopped dispatching would still report SERVING."""
    replica = await e2e_hub.replica()
    fetch, rounds = replica.pool.fetch, 0

    def fails_first(takers: Any) -> Any:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("a bug")
        return fetch(takers)

    monkeypatch.setattr(replica.pool, "fetch", fails_first)
    await e2e_hub.node(addr(replica), "worker", {"echo": reporter("worker")})
    done = await e2e_hub.client(replica).submit("echo", b"still served", wait_s=STEP_S)
    assert done.done and done.task.status == common_pb2.SUCCEEDED
    assert rounds >= 2


async def test_a_busy_nodes_own_route_is_not_pulled_at_every_rescan(
    e2e_hub: GrpcHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node running a task routed to it, with a slot to spare: its route's subject holds
    that task, and the rescans (twice a second) know the node holds it, so they do not pull
    the route each time (with thousands of busy nodes, thousands of empty pulls)."""
    monkeypatch.setattr(pool_module, "RESCAN_S", 0.0)  # every round is a rescan
    replica = await e2e_hub.replica()
    release = asyncio.Event()

    async def held_until_released(ctx: TaskContext) -> str:
        await release.wait()
        return "done"

    await e2e_hub.node(addr(replica), "node-a", {"hold": held_until_released}, slots=2)
    client = e2e_hub.client(replica)
    task_id = (await client.submit("hold", b"", node="node-a")).task.task_id

    async def running() -> bool:
        return (await client.get(task_id)).status == common_pb2.RUNNING

    await until(running, timeout_s=STEP_S)
    async with published(replica.pool.nc, "$JS.API.CONSUMER.MSG.NEXT.>") as pulls:
        for _ in range(3):  # three rounds, each a rescan
            assert await replica.nodes.dispatch_once() == 0
    release.set()
    assert (await wait_done(client, task_id)).status == common_pb2.SUCCEEDED
    assert pulls == []


async def test_a_wake_up_with_nothing_to_pull_lists_no_takers(
    e2e_hub: GrpcHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most wake-ups of the dispatch loop are a slot freed or an offer made, with nothing rung
    and no rescan due. Listing the takers is a pass over every attached node (about 1 µs
    each), so such a round ends before it; a stored task still starts one."""
    replica = await e2e_hub.replica()
    await e2e_hub.node(addr(replica), "worker", {"echo": reporter("worker")})
    client = e2e_hub.client(replica)
    assert (await client.submit("echo", b"first", wait_s=STEP_S)).done
    monkeypatch.setattr(pool_module, "RESCAN_S", 3600.0)

    async def settled() -> bool:
        """The first task's rounds are over, and so is the second look an empty rung pull
        schedules (RECHECK_S, 2 ms): nothing due now, nor a moment later."""
        if replica.pool.due():
            return False
        await asyncio.sleep(0.05)
        return not replica.pool.due()

    await until(settled, timeout_s=STEP_S)
    fetch, fetches = replica.pool.fetch, 0

    def counted(takers: Any) -> Any:
        nonlocal fetches
        fetches += 1
        return fetch(takers)

    monkeypatch.setattr(replica.pool, "fetch", counted)
    for _ in range(5):  # as the dispatch loop runs them on a wake-up
        assert await replica.nodes.dispatch_once() == 0
    assert fetches == 0
    done = await client.submit("echo", b"second", wait_s=STEP_S)
    assert done.done and done.task.status == common_pb2.SUCCEEDED
    assert fetches >= 1


async def test_wait_on_a_task_past_its_result_ttl_says_expired(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica(result_ttl_s=2.0)
    await e2e_hub.node(addr(replica), "worker", {"echo": reporter("worker")})
    client = e2e_hub.client(replica)
    task_id = (await client.submit("echo", b"soon forgotten")).task.task_id
    assert (await wait_done(client, task_id)).status == common_pb2.SUCCEEDED

    async def expired() -> bool:
        return (await client.get(task_id)).status == common_pb2.EXPIRED

    await until(expired, timeout_s=10.0)
    started = time.monotonic()
    response = await client.wait(task_id, 30.0)
    assert time.monotonic() - started < 2.0
    assert response.done
    assert response.task.task_id == task_id
    assert response.task.status == common_pb2.EXPIRED
    assert response.task.result == b""


async def test_watch_shows_stdout_as_written_and_resumes_from_an_offset(
    e2e_hub: GrpcHub,
) -> None:
    a, b = await e2e_hub.replica(), await e2e_hub.replica()
    lines = [b"step one\n", b"step two\n", b"step three: \xff\x00 raw bytes\n"]
    seen_line = [asyncio.Event() for _ in lines]

    async def talker(ctx: TaskContext) -> bytes:
        for line, seen in zip(lines, seen_line, strict=True):
            ctx.stdout(line)
            # Goes on only once the watcher has this line: the task cannot end before the
            # watcher saw all of its output, so what it saw was streamed, not read at the end.
            async with asyncio.timeout(STEP_S):
                await seen.wait()
        return b"spoke"

    await e2e_hub.node(addr(a), "talker", {"talk": talker})
    task_id = (await e2e_hub.client(a).submit("talk")).task.task_id
    watcher = e2e_hub.client(b)

    seen, statuses = bytearray(), []
    async with asyncio.timeout(STEP_S * 2), contextlib.aclosing(watcher.watch(task_id)) as events:
        async for event in events:
            if event.WhichOneof("event") == "task":
                statuses.append(event.task.status)
                continue
            chunk = event.output
            if chunk.stream != "stdout":
                continue
            assert chunk.offset == len(seen) and chunk.skipped == 0
            seen += chunk.data
            for i, flag in enumerate(seen_line):
                if len(seen) >= len(b"".join(lines[: i + 1])):
                    flag.set()
    assert bytes(seen) == b"".join(lines)
    assert statuses[-1] == common_pb2.SUCCEEDED  # the stream ended with the terminal record
    assert common_pb2.RUNNING in statuses

    full = b"".join(lines)
    offset = len(lines[0]) + 3
    chunks, last_status = [], None
    async with (
        asyncio.timeout(STEP_S),
        contextlib.aclosing(watcher.watch(task_id, stdout_offset=offset)) as events,
    ):
        async for event in events:
            if event.WhichOneof("event") == "task":
                last_status = event.task.status
            elif event.output.stream == "stdout":
                chunks.append(event.output)
    assert last_status == common_pb2.SUCCEEDED
    assert chunks, "no stdout after the offset"
    assert chunks[0].offset == offset
    assert b"".join(c.data for c in chunks) == full[offset:]


async def test_watch_of_an_unknown_task_is_not_found(e2e_hub: GrpcHub) -> None:
    client = e2e_hub.client(await e2e_hub.replica())
    with pytest.raises(ClientError) as err:
        async with asyncio.timeout(STEP_S), contextlib.aclosing(client.watch("nope")) as events:
            async for _ in events:
                pass
    assert err.value.code == "NOT_FOUND"


async def test_a_handler_past_the_tasks_timeout_fails_the_attempt(e2e_hub: GrpcHub) -> None:
    """``timeout_s`` bounds the handler on the node; without one, the handler is not bounded."""
    replica = await e2e_hub.replica(max_attempts=1)

    async def slow(ctx: TaskContext) -> bytes:
        await asyncio.sleep(float(ctx.payload))
        return b"finished"

    await e2e_hub.node(addr(replica), "n1", {"slow": slow}, slots=2)
    client = e2e_hub.client(replica)
    bounded = await client.submit("slow", b"30", timeout_s=0.3, wait_s=STEP_S)
    unbounded = await client.submit("slow", b"0.5", wait_s=STEP_S)
    assert bounded.done and bounded.task.status != common_pb2.SUCCEEDED
    assert "timed out after 0.3 s" in bounded.task.error
    assert unbounded.done and unbounded.task.result == b"finished"
