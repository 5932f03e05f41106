"""The journal in KV: readable records, byte-exact head+tail buffers, wait and watch."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time

import pytest
from hubtest import Core, eventually, take_one

from hub.buffers import HeadTail
from hub.errors import PayloadTooLarge, StaleAttempt, TaskExpired, TaskNotFound
from hub.journal import Journal, WatchEvent
from hub.model import Status, TaskSpec
from hub.pool import Grant


async def running_task(core: Core, task_id: str = "t1") -> Grant:
    await core.pool.submit(TaskSpec(kind="echo", payload=b"p", id=task_id))
    grant = await take_one(core.pool, "n1", timeout_s=5)
    await core.pool.begin(task_id, grant.record.attempt, "n1")
    return grant


def reference(stream: bytes, head_max: int, tail_max: int) -> tuple[bytes, bytes]:
    return stream[:head_max], stream[head_max:][-tail_max:]


# -- buffers ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_appended_chunks_are_stored_byte_exact(hub_core: Core, seed: int) -> None:
    """Many chunks (arbitrary bytes, some not UTF-8) through Journal.append, with and without
    pauses around the coalescing window: the stored head and tail equal the reference."""
    rng = random.Random(seed)
    grant = await running_task(hub_core)
    attempt = grant.record.attempt
    s = hub_core.settings
    stream = bytearray()
    for i in range(300):
        chunk = rng.randbytes(rng.randint(0, 40)) if i % 3 else f"line {i}\n".encode()
        stream += chunk
        hub_core.journal.append("t1", "stdout", attempt, chunk)
        if rng.random() < 0.3:
            await asyncio.sleep(rng.choice([0, 0.001, 0.004, 0.006]))
    await hub_core.journal.flush("t1")
    buffer, _ = await hub_core.journal.read_buffer("t1", "stdout")
    head, tail = reference(bytes(stream), s.journal_head_bytes, s.journal_tail_bytes)
    assert buffer.total == len(stream)
    assert buffer.head == head
    assert buffer.tail == tail
    assert buffer.dropped == len(stream) - len(head) - len(tail)
    assert buffer.attempt == attempt
    # a fresh replica reads the same bytes
    assert (await hub_core.journal.read_buffer("t1", "stdout"))[0] == buffer


async def test_output_is_complete_when_the_result_is_visible(make_core) -> None:
    """complete() writes every appended chunk before the terminal record, so a waiter that sees
    the result also sees all the output, even with a flush in flight."""
    core = await make_core(append_coalesce_ms=0.0)
    grant = await running_task(core)
    stream = b""
    for i in range(200):
        chunk = f"{i:04d}|".encode()
        stream += chunk
        core.journal.append("t1", "thoughts", grant.record.attempt, chunk)
        if i % 10 == 0:
            await asyncio.sleep(0)
    await core.pool.complete("t1", grant.record.attempt, b"done")
    buffer, _ = await core.journal.read_buffer("t1", "thoughts")
    s = core.settings
    assert buffer.total == len(stream)
    assert (buffer.head, buffer.tail) == reference(
        stream, s.journal_head_bytes, s.journal_tail_bytes
    )


async def test_buffer_json_is_readable(hub_core: Core) -> None:
    grant = await running_task(hub_core)
    hub_core.journal.append("t1", "stdout", grant.record.attempt, b"hello world\n")
    await hub_core.journal.flush("t1")
    reply = await hub_core.nc.request(
        "$JS.API.DIRECT.GET.KV_hub_journal.$KV.hub_journal.task.t1.stdout", b"", timeout=3
    )
    data = json.loads(reply.data)
    assert data == {
        "head": "hello world\n",
        "tail": "",
        "total_bytes": 12,
        "dropped_bytes": 0,
        "attempt": grant.record.attempt,
    }


async def test_a_stale_attempts_output_never_lands(make_core) -> None:
    core = await make_core(ack_wait_s=1.0)
    first = await running_task(core)
    second = await take_one(core.pool, "n2", timeout_s=5)  # first lease ran out
    assert second.record.attempt == first.record.attempt + 1
    with pytest.raises(StaleAttempt):
        core.journal.append("t1", "stdout", first.record.attempt, b"zombie")
    other = await make_core()  # a replica that has not cached the record
    other.journal.append("t1", "stdout", first.record.attempt, b"zombie")
    with pytest.raises(StaleAttempt):
        await other.journal.flush("t1")  # refused when checked against the journal
    core.journal.append("t1", "stdout", second.record.attempt, b"fresh")
    await core.journal.flush("t1")
    buffer, _ = await core.journal.read_buffer("t1", "stdout")
    assert (buffer.head, buffer.attempt) == (b"fresh", second.record.attempt)


async def test_append_refuses_oversized_chunks(hub_core: Core) -> None:
    grant = await running_task(hub_core)
    with pytest.raises(PayloadTooLarge):
        hub_core.journal.append(
            "t1", "stdout", grant.record.attempt, b"x" * (hub_core.settings.max_payload_bytes + 1)
        )


# -- wait ---------------------------------------------------------------------------------


async def test_wait_on_a_finished_task_returns_at_once(hub_core: Core) -> None:
    grant = await running_task(hub_core)
    await hub_core.pool.complete("t1", grant.record.attempt, b"42")
    started = time.monotonic()
    record = await hub_core.journal.wait("t1", timeout_s=30)
    assert time.monotonic() - started < 1
    assert record.status is Status.SUCCEEDED and record.result == b"42"


async def test_wait_on_an_unknown_task_fails_at_once(hub_core: Core) -> None:
    started = time.monotonic()
    with pytest.raises(TaskNotFound):
        await hub_core.journal.wait("never-submitted", timeout_s=30)
    assert time.monotonic() - started < 1


async def test_wait_wakes_on_the_result_from_another_replica(hub_core: Core, make_core) -> None:
    grant = await running_task(hub_core)
    other = await make_core()
    waiter = asyncio.create_task(other.journal.wait("t1", timeout_s=30))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    started = time.monotonic()
    await hub_core.pool.complete("t1", grant.record.attempt, b"r")
    async with asyncio.timeout(3):
        record = await waiter
    assert record.status is Status.SUCCEEDED and time.monotonic() - started < 1


async def test_wait_returns_the_record_at_the_deadline(hub_core: Core) -> None:
    await hub_core.pool.submit(TaskSpec(kind="echo", id="t1"))
    started = time.monotonic()
    record = await hub_core.journal.wait("t1", timeout_s=0.3)
    assert record.status is Status.QUEUED
    assert 0.25 < time.monotonic() - started < 2


@pytest.mark.parametrize("writer", ["this replica", "another replica"])
async def test_a_wait_past_its_deadline_answers_the_newest_step(
    hub_core: Core, make_core, writer: str
) -> None:
    """Waiters wake only for what ends a wait; the steps between still show at the deadline."""
    await hub_core.journal.start()
    await hub_core.pool.submit(TaskSpec(kind="echo", payload=b"p", id="t1"))
    waiter = asyncio.create_task(hub_core.journal.wait("t1", timeout_s=1.0))
    await asyncio.sleep(0.1)
    other = hub_core if writer == "this replica" else await make_core()
    grant = await take_one(other.pool, "n1", timeout_s=5)
    await other.pool.begin("t1", grant.record.attempt, "n1")
    async with asyncio.timeout(5):
        record = await waiter
    assert (record.status, record.node) == (Status.RUNNING, "n1")


async def test_wait_on_an_expired_result(make_core) -> None:
    """After the result TTL the key holds an expiry marker: TaskExpired, not TaskNotFound."""
    core = await make_core(result_ttl_s=2.0)  # readable for 2 s, then a marker for 2 s
    grant = await running_task(core)
    await core.pool.complete("t1", grant.record.attempt, b"r")
    assert (await core.journal.wait("t1", 5)).status is Status.SUCCEEDED

    async def expired() -> bool:
        try:
            await core.journal.get("t1")
        except TaskExpired:
            return True
        return False

    await eventually(expired, timeout_s=6, interval_s=0.1)
    started = time.monotonic()
    with pytest.raises(TaskExpired):
        await core.journal.wait("t1", timeout_s=30)
    assert time.monotonic() - started < 1


async def test_waiters_and_watchers_create_no_jetstream_consumers(hub_core: Core) -> None:
    """The trap: a KV watch per waiter is a JetStream consumer each. Wait and watch ride the
    bucket's republished feed instead, so many of them leave the server's state alone."""
    grant = await running_task(hub_core)
    waiters = [asyncio.create_task(hub_core.journal.wait("t1", timeout_s=30)) for _ in range(20)]

    async def watch() -> list[WatchEvent]:
        return [e async for e in hub_core.journal.watch("t1")]

    watchers = [asyncio.create_task(watch()) for _ in range(10)]
    await asyncio.sleep(0.3)
    info = await hub_core.js.stream_info("KV_hub_journal")
    assert info.state.consumer_count == 0
    await hub_core.pool.complete("t1", grant.record.attempt, b"r")
    async with asyncio.timeout(5):
        records = await asyncio.gather(*waiters)
        streams = await asyncio.gather(*watchers)
    assert all(r.status is Status.SUCCEEDED for r in records)
    assert all(events[-1].record.status is Status.SUCCEEDED for events in streams)


# -- watch --------------------------------------------------------------------------------


async def test_watch_follows_records_and_output_until_the_end(hub_core: Core, make_core) -> None:
    await hub_core.pool.submit(TaskSpec(kind="echo", id="t1"))
    watcher = await make_core()
    events: list[WatchEvent] = []
    first = asyncio.Event()

    async def watch() -> None:
        async for event in watcher.journal.watch("t1"):
            events.append(event)
            first.set()

    task = asyncio.create_task(watch())
    async with asyncio.timeout(3):
        await first.wait()
    grant = await take_one(hub_core.pool, "n1", timeout_s=5)
    attempt = grant.record.attempt
    stream = b""
    for i in range(30):
        chunk = f"out {i}\n".encode()
        stream += chunk
        hub_core.journal.append("t1", "stdout", attempt, chunk)
        await asyncio.sleep(0.01)
    hub_core.journal.append("t1", "thoughts", attempt, b"thinking")
    await hub_core.pool.complete("t1", attempt, b"result")
    async with asyncio.timeout(5):
        await task
    records = [e.record for e in events if e.kind == "record"]
    assert all(a != b for a, b in itertools.pairwise(records)), "a record event repeated"
    statuses = [r.status for r in records]
    assert statuses[0] is Status.QUEUED and statuses[-1] is Status.SUCCEEDED
    assert Status.CLAIMED in statuses
    out = [e for e in events if e.kind == "stdout"]
    got = b"".join(e.data for e in out)
    skipped = sum(e.skipped for e in out)
    assert len(got) + skipped == len(stream)
    s = hub_core.settings
    head, tail = reference(stream, s.journal_head_bytes, s.journal_tail_bytes)
    assert got.startswith(head) and got.endswith(tail)
    if not skipped:
        assert got == stream
    assert b"".join(e.data for e in events if e.kind == "thoughts") == b"thinking"


async def test_watch_resumes_from_offsets(hub_core: Core) -> None:
    grant = await running_task(hub_core)
    hub_core.journal.append("t1", "stdout", grant.record.attempt, b"0123456789")
    await hub_core.pool.complete("t1", grant.record.attempt, b"r")
    events = [e async for e in hub_core.journal.watch("t1", offsets={"stdout": 6})]
    assert [e.kind for e in events] == ["record", "stdout"]  # a finished task: once, then done
    assert events[0].record.status is Status.SUCCEEDED
    assert (events[1].data, events[1].offset, events[1].skipped) == (b"6789", 6, 0)


async def test_watch_unknown_task(hub_core: Core) -> None:
    with pytest.raises(TaskNotFound):
        async for _ in hub_core.journal.watch("nope"):
            pass


# -- the node's own head+tail, sent with the result ----------------------------------------


async def test_result_outputs_repair_lost_chunks(hub_core: Core) -> None:
    """Chunks lost on their way (a replica died with them) are made good by the head+tail the
    node sends with its result: the journal ends byte-exact."""
    s = hub_core.settings
    grant = await running_task(hub_core)
    attempt = grant.record.attempt
    chunks = [bytes([i % 251]) * 1000 for i in range(60)]
    node_copy = HeadTail(attempt=attempt)
    for i, chunk in enumerate(chunks):
        node_copy = node_copy.append(chunk, s.journal_head_bytes, s.journal_tail_bytes)
        if i % 3:  # every third chunk never reaches the journal
            hub_core.journal.append("t1", "stdout", attempt, chunk)
    await hub_core.journal.flush("t1")
    partial, _ = await hub_core.journal.read_buffer("t1", "stdout")
    assert partial.total < node_copy.total
    await hub_core.pool.complete("t1", attempt, b"ok", "n1", {"stdout": node_copy})
    stored, _ = await hub_core.journal.read_buffer("t1", "stdout")
    assert stored == node_copy
    whole = b"".join(chunks)
    assert stored.head == whole[: s.journal_head_bytes]
    assert stored.tail == whole[-s.journal_tail_bytes :]


async def test_stale_result_outputs_change_nothing(hub_core: Core) -> None:
    grant = await running_task(hub_core)
    attempt = grant.record.attempt
    hub_core.journal.append("t1", "stdout", attempt, b"real output")
    await hub_core.journal.flush("t1")
    before = await hub_core.journal.read_buffer("t1", "stdout")
    forged = HeadTail(b"forged", b"", 6, attempt - 1)
    with pytest.raises(StaleAttempt):
        await hub_core.pool.complete("t1", attempt - 1, b"x", "n1", {"stdout": forged})
    assert await hub_core.journal.read_buffer("t1", "stdout") == before


# -- the replica's feed of committed record writes ------------------------------------------


class CountingReads:
    """Counts the journal's reads from the server (the round trips the feed should save)."""

    def __init__(self, journal: Journal) -> None:
        self.count = 0
        inner = journal._read

        async def counted(key: str) -> tuple[bytes | None, int]:
            self.count += 1
            return await inner(key)

        journal._read = counted


async def test_waits_on_tasks_the_feed_follows_take_no_round_trip(make_core) -> None:
    """A replica's feed keeps its copy of every record current: waiting on a task written
    since the feed started (here by another replica) reads nothing from the server, and
    still sees the result the other replica writes."""
    a, b = await make_core(), await make_core()
    await a.journal.start()
    await b.pool.submit(TaskSpec(kind="echo", payload=b"p", id="fed"))
    grant = await take_one(b.pool, "n1", timeout_s=5)
    reads = CountingReads(a.journal)
    async with asyncio.timeout(5):
        waiter = asyncio.create_task(a.journal.wait("fed", 5))
        await asyncio.sleep(0.05)
        await b.pool.complete("fed", grant.record.attempt, b"done", "n1")
        record = await waiter
    assert (record.status, record.result) == (Status.SUCCEEDED, b"done")
    assert reads.count == 0


async def test_after_a_break_in_the_feed_waits_read_the_server(make_core) -> None:
    """After a reconnect (or a dropped feed message) nothing cached is taken as current."""
    a, b = await make_core(), await make_core()
    await a.journal.start()
    await b.pool.submit(TaskSpec(kind="echo", payload=b"p", id="gap"))

    async def known() -> bool:
        return a.journal.records.get("gap", current=True) is not None

    await eventually(known, timeout_s=5)
    a.journal.reconnected()
    reads = CountingReads(a.journal)
    record = await a.journal.wait("gap", 0.1)
    assert record.status is Status.QUEUED
    assert reads.count == 1
