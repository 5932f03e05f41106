"""SIGKILL of the (single) nats-server and a restart on the same store and port.

With ``sync: always`` nothing acknowledged may be lost: queued tasks, claimed tasks, finished
records, output buffers and dead letters all come back, the hub's connections reconnect on
their own, and a waiter and a watcher attached before the kill carry on and see the result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from hubtest import NATS_PY_RECONNECT_LEAK, Core, TcpProxy, eventually, take_all, take_one

from hub.journal import WatchEvent
from hub.model import Priority, Status, TaskSpec
from hub.nats.server import EmbeddedNats

pytestmark = NATS_PY_RECONNECT_LEAK


async def restarted(
    server: EmbeddedNats,
    restart_nats: Callable[[EmbeddedNats], Awaitable[EmbeddedNats]],
    *cores: Core,
) -> EmbeddedNats:
    """SIGKILL the server, start it again, and wait until every core has reconnected."""
    for core in cores:
        core.reconnected.clear()
    new = await restart_nats(server)
    async with asyncio.timeout(20):
        for core in cores:
            await core.reconnected.wait()
    return new


async def test_tasks_and_journals_survive_sigkill(nats_server, restart_nats, make_core) -> None:
    core = await make_core(ack_wait_s=2.0, starvation_limit=1000)
    priorities = list(Priority)
    ids = [f"t{i:02d}" for i in range(20)]
    for i, task_id in enumerate(ids):
        await core.pool.submit(
            TaskSpec(
                kind="echo",
                payload=task_id.encode(),
                id=task_id,
                priority=priorities[i % 4],
                max_attempts=1 if task_id == "t19" else 5,
            )
        )
    # t00, t04, t08, ... are critical: take 6 (held, never extended), finish some of them
    held = await take_all(core.pool, "n1", 6, timeout_s=10, slots=6)
    assert len(held) == 6
    finished = held[:2]
    for grant in finished:
        core.journal.append(grant.record.id, "stdout", grant.record.attempt, b"out-" * 100)
        await core.pool.complete(grant.record.id, grant.record.attempt, b"result " + grant.payload)
    dead = held[2]
    await core.pool.fail(dead.record.id, dead.record.attempt, "boom", retry=False)
    holding = {g.record.id for g in held[3:]}
    before = {task_id: await core.journal.get(task_id) for task_id in ids}
    buffers = {
        g.record.id: (await core.journal.read_buffer(g.record.id, "stdout"))[0] for g in finished
    }

    await restarted(nats_server, restart_nats, core)

    # every record reads back exactly as it was
    for task_id in ids:
        assert await core.journal.get(task_id) == before[task_id], task_id
    for task_id, buffer in buffers.items():
        assert (await core.journal.read_buffer(task_id, "stdout"))[0] == buffer
    # every task not finished is still there to be run: the queued ones at once, the held ones
    # after their lease runs out; nothing else comes back
    remaining = {t for t in ids if not before[t].terminal}
    assert holding <= remaining and len(remaining) == 20 - 3
    grants = await take_all(core.pool, "n2", len(remaining), timeout_s=15, slots=20)
    assert {g.record.id for g in grants} == remaining
    for grant in grants:
        assert grant.payload == grant.record.id.encode()
        expected_attempt = 2 if grant.record.id in holding else 1
        assert grant.record.attempt == expected_attempt, grant.record
        await core.pool.complete(grant.record.id, grant.record.attempt, b"ok")
    await asyncio.sleep(0.3)
    assert await core.pool.take("n3", slots=20) == []
    assert await core.all_task_messages() == 0


async def test_dead_letters_and_consumers_survive_sigkill(
    nats_server, restart_nats, make_core
) -> None:
    core = await make_core()
    await core.pool.submit(TaskSpec(kind="echo", payload=b"p", id="d1", max_attempts=1))
    grant = await take_one(core.pool, "n1", timeout_s=5)
    await core.pool.fail("d1", grant.record.attempt, "boom")
    letter = await core.queue.dead_letter("d1")
    assert letter is not None

    await restarted(nats_server, restart_nats, core)

    assert await core.queue.dead_letter("d1") == letter
    replayed = await core.pool.replay("d1")
    assert replayed.generation == 2
    again = await take_one(core.pool, "n1", timeout_s=10)
    assert (again.record.id, again.payload, again.record.generation) == ("d1", b"p", 2)


async def test_waiter_and_watcher_carry_on_across_a_restart(
    nats_server, restart_nats, make_core
) -> None:
    holder = await make_core(ack_wait_s=30.0, heartbeat_s=1.0)  # the lease outlives the outage
    observer = await make_core(ack_wait_s=30.0, heartbeat_s=1.0)
    await holder.pool.submit(TaskSpec(kind="echo", payload=b"p", id="t1"))
    grant = await take_one(holder.pool, "n1", timeout_s=5)
    attempt = grant.record.attempt
    await holder.pool.begin("t1", attempt, "n1")
    holder.journal.append("t1", "stdout", attempt, b"before the kill\n")
    await holder.journal.flush("t1")

    waiter = asyncio.create_task(observer.journal.wait("t1", timeout_s=60))
    events: list[WatchEvent] = []
    seen_before = asyncio.Event()

    async def watch() -> None:
        async for event in observer.journal.watch("t1"):
            events.append(event)
            if event.kind == "stdout":
                seen_before.set()

    watcher = asyncio.create_task(watch())
    async with asyncio.timeout(5):
        await seen_before.wait()
    await asyncio.sleep(0.1)
    assert not waiter.done() and not watcher.done()

    await restarted(nats_server, restart_nats, holder, observer)
    assert not waiter.done() and not watcher.done()

    holder.journal.append("t1", "stdout", attempt, b"after the restart\n")
    await holder.pool.extend("t1", attempt, "n1")
    restarted_at = time.monotonic()
    done = await holder.pool.complete("t1", attempt, b"the result", "n1")
    assert done.status is Status.SUCCEEDED

    async with asyncio.timeout(10):
        record = await waiter
        await watcher
    assert time.monotonic() - restarted_at < 10
    assert record.status is Status.SUCCEEDED and record.result == b"the result"
    final = [e.record for e in events if e.kind == "record"][-1]
    assert final.status is Status.SUCCEEDED and final.result == b"the result"
    out = b"".join(e.data for e in events if e.kind == "stdout")
    assert out == b"before the kill\nafter the restart\n"


async def test_a_waiter_started_during_the_outage_gets_its_answer(
    nats_server, restart_nats, make_core
) -> None:
    """A replica that asks while NATS is down retries through the restart instead of failing."""
    core = await make_core(ack_wait_s=30.0, heartbeat_s=1.0)
    await core.pool.submit(TaskSpec(kind="echo", payload=b"p", id="t1"))
    grant = await take_one(core.pool, "n1", timeout_s=5)
    await core.pool.complete("t1", grant.record.attempt, b"r")

    process = nats_server.process
    assert process is not None
    nats_server.kill()
    async with asyncio.timeout(10):
        await process.wait()
    waiter = asyncio.create_task(core.journal.wait("t1", timeout_s=30))
    await asyncio.sleep(0.5)
    core.reconnected.clear()
    await restart_nats(nats_server)
    async with asyncio.timeout(20):
        record = await waiter
    assert record.status is Status.SUCCEEDED and record.result == b"r"

    async def healthy() -> bool:
        return (await core.journal.get("t1")).result == b"r"

    await eventually(healthy, timeout_s=10)


async def test_a_change_made_while_a_replica_was_cut_off_is_not_missed(
    nats_server, make_core
) -> None:
    """The journal feed is a plain subscription: what was published while this replica was
    disconnected never reaches it. Journal.reconnected() (wired to the connection's reconnect
    callback) makes every waiter and watcher re-read, so none of them waits for ever."""
    proxy = await TcpProxy(nats_server.port).start()
    try:
        holder = await make_core(ack_wait_s=30.0, heartbeat_s=1.0)
        observer = await make_core(url=proxy.url, ack_wait_s=30.0, heartbeat_s=1.0)
        await holder.pool.submit(TaskSpec(kind="echo", payload=b"p", id="t1"))
        grant = await take_one(holder.pool, "n1", timeout_s=5)
        attempt = grant.record.attempt
        waiter = asyncio.create_task(observer.journal.wait("t1", timeout_s=60))
        events: list[WatchEvent] = []
        attached = asyncio.Event()

        async def watch() -> None:
            async for event in observer.journal.watch("t1"):
                events.append(event)
                attached.set()

        watcher = asyncio.create_task(watch())
        async with asyncio.timeout(5):
            await attached.wait()

        observer.reconnected.clear()
        await proxy.cut()

        async def cut_off() -> bool:
            return not observer.nc.is_connected

        await eventually(cut_off, timeout_s=5)
        holder.journal.append("t1", "stdout", attempt, b"while you were away\n")
        await holder.pool.complete("t1", attempt, b"the result", "n1")
        await asyncio.sleep(0.3)  # the committed writes are republished to nobody
        assert not waiter.done() and not watcher.done()

        await proxy.heal()
        async with asyncio.timeout(10):
            await observer.reconnected.wait()
            record = await waiter
            await watcher
        assert record.status is Status.SUCCEEDED and record.result == b"the result"
        assert events[-1].kind == "record" and events[-1].record.status is Status.SUCCEEDED
        out = b"".join(e.data for e in events if e.kind == "stdout")
        assert out == b"while you were away\n"
    finally:
        await proxy.close()
