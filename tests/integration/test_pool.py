"""The work pool against a real nats-server: priorities, leases, fencing, the DLQ, idempotent
submit, concurrent takers, the doorbell, the task TTL, routing, first-result-wins and bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import nats.js.errors
import pytest
from hubtest import Core, eventually, published, take_all, take_one

from hub import pool as pool_module
from hub import queue as queue_module
from hub.errors import (
    AlreadyFinished,
    HubError,
    InvalidTask,
    LimitReached,
    PayloadTooLarge,
    StaleAttempt,
    TaskNotFound,
    WrongState,
)
from hub.model import Priority, Route, Status, TaskSpec
from hub.nats import subjects
from hub.nats import topology as topology_module
from hub.scheduling import Taker


async def submit(core: Core, task_id: str, **kwargs) -> None:
    kwargs.setdefault("kind", "echo")
    kwargs.setdefault("payload", task_id.encode())
    await core.pool.submit(TaskSpec(id=task_id, **kwargs))


async def snapshot(core: Core, task_id: str) -> tuple:
    """The record and its revision, read fresh from the bucket."""
    return await core.journal.read(task_id, fresh=True)


# -- priorities -----------------------------------------------------------------------------


async def test_priority_order(make_core) -> None:
    core = await make_core(starvation_limit=1000)
    for i in range(3):
        for priority in ("low", "normal", "high", "critical"):
            await submit(core, f"{priority}-{i}", priority=priority)
    taken = [g.record.id for g in await take_all(core.pool, "n1", 12, timeout_s=10, slots=1)]
    assert taken == [f"{p}-{i}" for p in ("critical", "high", "normal", "low") for i in range(3)]


async def test_priority_order_in_one_batch(make_core) -> None:
    core = await make_core(starvation_limit=1000)
    for priority in ("low", "normal", "high", "critical"):
        await submit(core, priority, priority=priority)
    grants = await core.pool.take("n1", slots=3)
    assert [g.record.id for g in grants] == ["critical", "high", "normal"]
    counts = await core.pool.counts()  # no hoarding: only what the slots could take was pulled
    assert counts.queued["low"] == 1 and counts.in_flight == 3


async def test_an_empty_take_does_not_wait_out_fetch_timeouts(hub_core: Core) -> None:
    await hub_core.pool.take("n1", frozenset({"gpu"}), slots=4)  # consumers created
    started = time.monotonic()
    for _ in range(20):
        assert await hub_core.pool.take("n1", frozenset({"gpu"}), slots=4) == []
    assert (time.monotonic() - started) / 20 < 0.1  # a no-wait sweep, not 4 fetch timeouts


async def test_low_is_not_starved_by_sustained_critical_load(make_core) -> None:
    limit = 4
    core = await make_core(starvation_limit=limit)
    await submit(core, "low-0", priority="low")
    for i in range(5):
        await submit(core, f"crit-{i}", priority="critical")
    order = []
    for i in range(limit + 4):
        grant = await take_one(core.pool, "n1", timeout_s=5, slots=1)
        order.append(grant.record.id)
        await core.pool.complete(grant.record.id, grant.record.attempt, b"")
        await submit(core, f"crit-more-{i}", priority="critical")  # critical never runs dry
        if grant.record.id == "low-0":
            break
    assert "low-0" in order, order
    assert order.index("low-0") <= limit + 3, order
    assert order[0].startswith("crit"), order  # still strict while nothing starves


# -- leases ---------------------------------------------------------------------------------


async def test_unextended_claim_comes_back_after_the_visibility_timeout(hub_core: Core) -> None:
    await submit(hub_core, "t1")
    first = await take_one(hub_core.pool, "n1", timeout_s=5)
    claimed_at = time.monotonic()
    assert (first.record.attempt, first.record.deliveries, first.record.node) == (1, 1, "n1")
    assert await hub_core.pool.take("n2") == []  # held
    second = await take_one(hub_core.pool, "n2", timeout_s=hub_core.settings.ack_wait_s + 5)
    assert time.monotonic() - claimed_at >= hub_core.settings.ack_wait_s * 0.8
    r = second.record
    assert (r.id, r.attempt, r.deliveries, r.node, r.status) == ("t1", 2, 2, "n2", Status.CLAIMED)
    assert second.payload == b"t1"
    assert [(h.attempt, h.node, h.outcome) for h in r.history] == [
        (1, "n1", "lease expired"),
        (2, "n2", ""),
    ]


async def test_extended_claim_does_not_come_back(hub_core: Core) -> None:
    await submit(hub_core, "t1")
    grant = await take_one(hub_core.pool, "n1", timeout_s=5)
    await hub_core.pool.begin("t1", 1, "n1")
    ack_wait = hub_core.settings.ack_wait_s
    deadline = time.monotonic() + 3 * ack_wait
    beats = 0
    while time.monotonic() < deadline:
        record = await hub_core.pool.extend("t1", grant.record.attempt, "n1")
        beats += 1
        assert record.lease_deadline > time.time()
        assert await hub_core.pool.take("n2") == [], "an extended task was handed out again"
        await asyncio.sleep(ack_wait / 4)
    assert beats >= 8
    done = await hub_core.pool.complete("t1", grant.record.attempt, b"ok", "n1")
    assert done.status is Status.SUCCEEDED and done.attempt == 1
    assert await hub_core.stream_messages() == 0


async def test_stale_attempt_is_refused_and_changes_nothing(hub_core: Core, make_core) -> None:
    await submit(hub_core, "t1")
    old = await take_one(hub_core.pool, "n1", timeout_s=5)
    new = await take_one(hub_core.pool, "n2", timeout_s=hub_core.settings.ack_wait_s + 5)
    assert new.record.attempt == old.record.attempt + 1
    before = await snapshot(hub_core, "t1")
    other = await make_core()  # a replica that never saw the task
    for pool in (hub_core.pool, other.pool):
        stale = old.record.attempt
        calls = [
            pool.extend("t1", stale),
            pool.begin("t1", stale),
            pool.complete("t1", stale, b"zombie"),
            pool.fail("t1", stale, "zombie failed"),
            pool.fail("t1", stale, "zombie failed", retry=False),
            pool.release("t1", stale, reason="zombie", counts=False),
        ]
        for call in calls:
            with pytest.raises(StaleAttempt) as info:
                await call
            assert (info.value.attempt, info.value.current) == (stale, new.record.attempt)
    assert await snapshot(hub_core, "t1") == before
    assert await hub_core.stream_messages() == 1  # no stale ack removed the message
    # the new holder is unaffected: its lease was not shortened and it can finish
    done = await hub_core.pool.complete("t1", new.record.attempt, b"real", "n2")
    assert (done.status, done.result, done.node) == (Status.SUCCEEDED, b"real", "n2")
    assert await hub_core.stream_messages() == 0


async def test_another_nodes_call_is_refused(hub_core: Core) -> None:
    from hub.errors import NotTaskOwner

    await submit(hub_core, "t1")
    grant = await take_one(hub_core.pool, "n1", timeout_s=5)
    with pytest.raises(NotTaskOwner):
        await hub_core.pool.complete("t1", grant.record.attempt, b"x", "n2")
    assert (await hub_core.journal.get("t1")).status is Status.CLAIMED


async def test_release_hands_back_at_once(hub_core: Core) -> None:
    await submit(hub_core, "t1")
    grant = await take_one(hub_core.pool, "n1", timeout_s=5)
    released = await hub_core.pool.release("t1", grant.record.attempt, reason="drain", counts=False)
    assert released.status is Status.QUEUED and released.tries == 0
    started = time.monotonic()
    again = await take_one(hub_core.pool, "n2", timeout_s=3)
    assert time.monotonic() - started < hub_core.settings.ack_wait_s
    assert (again.record.attempt, again.record.tries) == (2, 1)


async def test_failed_attempt_is_retried_after_the_backoff(make_core) -> None:
    core = await make_core(retry_backoff_s=(1.0,))
    await submit(core, "t1")
    grant = await take_one(core.pool, "n1", timeout_s=5)
    failed_at = time.monotonic()
    record = await core.pool.fail("t1", grant.record.attempt, "flaky")
    assert record.status is Status.QUEUED and record.error == "flaky"
    again = await take_one(core.pool, "n1", timeout_s=5)
    assert time.monotonic() - failed_at >= 0.8
    assert again.record.attempt == 2 and again.record.history[0].outcome == "failed"


# -- dead letters and replay ----------------------------------------------------------------


async def test_max_attempts_moves_the_task_to_the_dlq(hub_core: Core) -> None:
    await submit(hub_core, "t1", max_attempts=2, payload=b"the payload")
    for attempt in (1, 2):
        grant = await take_one(hub_core.pool, f"n{attempt}", timeout_s=5)
        assert grant.record.attempt == attempt
        record = await hub_core.pool.fail("t1", attempt, f"boom {attempt}")
    assert record.status is Status.DEAD
    letter = await hub_core.queue.dead_letter("t1")
    assert letter is not None
    assert (letter.task_id, letter.kind, letter.payload, letter.generation) == (
        "t1",
        "echo",
        b"the payload",
        1,
    )
    assert letter.error == "boom 2"
    assert [(h["attempt"], h["node"], h["outcome"], h["error"]) for h in letter.history] == [
        (1, "n1", "failed", "boom 1"),
        (2, "n2", "failed", "boom 2"),
    ]
    assert await hub_core.stream_messages() == 0  # removed from the work queue
    assert await hub_core.pool.take("n3") == []
    counts = await hub_core.pool.counts()
    assert counts.dead == 1 and counts.in_flight == 0 and counts.queued["normal"] == 0


async def test_lapsed_leases_use_up_attempts_into_the_dlq(make_core) -> None:
    """A task that crashes every node it touches (nobody fails it, leases just lapse) still
    reaches the DLQ, and does not stay behind in the work queue."""
    core = await make_core(ack_wait_s=1.0)
    await submit(core, "t1", max_attempts=2)
    await take_one(core.pool, "n1", timeout_s=5)
    await take_one(core.pool, "n2", timeout_s=5)

    async def buried() -> bool:
        assert await core.pool.take("n3") == []
        return await core.queue.dead_letter("t1") is not None

    await eventually(buried, timeout_s=5, interval_s=0.1)
    record = await core.journal.get("t1")
    assert record.status is Status.DEAD and record.tries == 2
    assert [h.outcome for h in record.history] == ["lease expired", "dead"]
    assert await core.stream_messages() == 0


async def test_replay_inside_the_dedupe_window_and_old_holder_stays_fenced(
    hub_core: Core,
) -> None:
    assert hub_core.settings.dedupe_window_s >= 60  # the whole test runs inside the window
    await submit(hub_core, "t1", max_attempts=1)
    grant = await take_one(hub_core.pool, "n1", timeout_s=5)
    dead = await hub_core.pool.fail("t1", grant.record.attempt, "boom")
    assert dead.status is Status.DEAD and await hub_core.queue.dead_letter("t1") is not None

    replayed = await hub_core.pool.replay("t1")
    assert (replayed.status, replayed.generation, replayed.tries) == (Status.QUEUED, 2, 0)
    assert await hub_core.queue.dead_letter("t1") is None
    assert await hub_core.stream_messages() == 1  # not dropped as a duplicate
    with pytest.raises(WrongState):
        await hub_core.pool.replay("t1")  # not dead any more

    again = await take_one(hub_core.pool, "n2", timeout_s=5)
    assert (again.record.attempt, again.record.generation) == (2, 2)
    assert again.payload == b"t1"
    before = await snapshot(hub_core, "t1")
    with pytest.raises(StaleAttempt):
        await hub_core.pool.complete("t1", grant.record.attempt, b"zombie")
    with pytest.raises(StaleAttempt):
        await hub_core.pool.extend("t1", grant.record.attempt)
    assert await snapshot(hub_core, "t1") == before
    done = await hub_core.pool.complete("t1", again.record.attempt, b"second life")
    assert done.status is Status.SUCCEEDED and done.result == b"second life"
    assert await hub_core.stream_messages() == 0


async def test_replay_of_a_task_that_is_not_dead(hub_core: Core) -> None:
    await submit(hub_core, "t1")
    with pytest.raises(WrongState):
        await hub_core.pool.replay("t1")


# -- submit ---------------------------------------------------------------------------------


async def test_submit_is_idempotent_on_the_task_id(hub_core: Core) -> None:
    first, created = await hub_core.pool.submit(TaskSpec(kind="echo", payload=b"a", id="t1"))
    again, created_again = await hub_core.pool.submit(TaskSpec(kind="echo", payload=b"a", id="t1"))
    assert created and not created_again
    assert again == first
    assert await hub_core.all_task_messages() == 1
    assert await hub_core.journal_messages() == 1


async def test_submit_is_idempotent_after_the_dedupe_window(make_core) -> None:
    core = await make_core(dedupe_window_s=1.0)
    await submit(core, "before")
    await submit(core, "t1")
    await submit(core, "after")  # the same subject: t1's message is found by its header
    await asyncio.sleep(1.5)  # past JetStream's duplicate window: only the journal remembers
    _, created = await core.pool.submit(TaskSpec(kind="echo", payload=b"t1", id="t1"))
    assert not created
    assert await core.all_task_messages() == 3
    for task_id in ("before", "after"):
        await core.pool.cancel(task_id)
    grant = await take_one(core.pool, "n1", timeout_s=5)
    assert grant.record.id == "t1"
    await core.pool.complete("t1", grant.record.attempt, b"once")
    # a resubmit of a finished task neither re-runs nor re-queues it
    record, created = await core.pool.submit(TaskSpec(kind="echo", payload=b"t1", id="t1"))
    assert not created and record.status is Status.SUCCEEDED
    await asyncio.sleep(0.2)
    assert await core.pool.take("n1", slots=5) == []
    record = await core.journal.get("t1")
    assert record.attempt == 1 and len(record.history) == 1  # exactly one execution
    assert await core.all_task_messages() == 0


@pytest.mark.parametrize("past_window", [False, True])
async def test_resubmit_republishes_a_lost_publish(make_core, past_window: bool) -> None:
    """A submit whose publish never landed (the record exists, the message does not) is
    repaired by retrying the submit with the same id, also past the dedupe window, among
    other tasks' messages on the same subject."""
    from hub import lifecycle

    core = await make_core(dedupe_window_s=1.0)
    await submit(core, "before")
    spec = TaskSpec(kind="echo", payload=b"p", id="t1").validated(1024, 3)
    await core.journal.create(lifecycle.submitted(spec, time.time()))  # crash before publish
    await submit(core, "after")
    assert await core.all_task_messages() == 2
    if past_window:
        await asyncio.sleep(1.5)
    _, created = await core.pool.submit(TaskSpec(kind="echo", payload=b"p", id="t1"))
    assert not created and await core.all_task_messages() == 3
    grants = [await take_one(core.pool, "n1", timeout_s=5) for _ in range(3)]
    assert {g.record.id: g.payload for g in grants}["t1"] == b"p"


async def test_a_first_claim_needs_no_journal_read(hub_core: Core, make_core) -> None:
    """The record rides in the message as submitted, with its revision: a replica that no
    longer holds it (a deep backlog evicts it) claims without reading the journal, and a
    record changed since fails that compare-and-set and is read as usual."""
    other = await make_core()
    await submit(hub_core, "t1")
    await submit(hub_core, "t2")
    await hub_core.journal.update("t2", lambda r: dataclasses.replace(r, updated_at=r.queued_at))
    reads: list[str] = []
    read = other.journal._read

    async def counting(key: str) -> tuple[bytes | None, int]:
        reads.append(key)
        return await read(key)

    other.journal._read = counting  # type: ignore[method-assign]
    for task_id in ("t1", "t2"):
        other.journal.records.forget(task_id)  # as if evicted

    grants = await other.pool.take("n1", slots=2)
    assert [(g.record.id, g.record.attempt) for g in grants] == [("t1", 1), ("t2", 1)]
    assert reads == ["task.t2"]  # only the record that changed since it was published
    for task_id in ("t1", "t2"):
        assert (await hub_core.journal.get(task_id)).node == "n1"


# -- concurrent takers ----------------------------------------------------------------------


async def test_two_takers_never_get_the_same_task(hub_core: Core, make_core) -> None:
    other = await make_core()
    ids = [f"t{i:03d}" for i in range(200)]
    for start in range(0, len(ids), 50):
        await asyncio.gather(*(submit(hub_core, i) for i in ids[start : start + 50]))
    got: dict[str, list[str]] = {"a": [], "b": []}

    async def taker(core: Core, name: str) -> None:
        deadline = time.monotonic() + 30
        while len(got["a"]) + len(got["b"]) < len(ids) and time.monotonic() < deadline:
            grants = await core.pool.take(name, slots=7)
            got[name].extend(g.record.id for g in grants)
            for g in grants:
                assert g.record.node == name and g.record.attempt == 1
            await asyncio.sleep(0)

    await asyncio.gather(taker(hub_core, "a"), taker(other, "b"))
    a, b = set(got["a"]), set(got["b"])
    assert not a & b
    assert len(a) == len(got["a"]) and len(b) == len(got["b"])
    assert a | b == set(ids)
    assert a and b  # both really took part


# -- the doorbell ---------------------------------------------------------------------------


async def _rung(core: Core) -> None:
    """Wait (bounded) until the replica's doorbell has rung, then clear it."""

    async def probe() -> bool:
        return core.pool.bell.is_set()

    await eventually(probe, timeout_s=5, interval_s=0.01)
    core.pool.bell.clear()


async def test_a_rung_route_that_came_back_empty_is_pulled_once_more(
    hub_core: Core, make_core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A doorbell can reach a replica before its task is visible to the consumer, and the pull
    it starts then finds nothing. Here another replica holds the task while the pull runs and
    hands it back with no doorbell: only the second look finds it (not the rescan)."""
    monkeypatch.setattr(pool_module, "RESCAN_S", 3600.0)
    monkeypatch.setattr(pool_module, "RECHECK_S", 1.0)  # room to hand the task back before it
    other = await make_core()
    assert await other.pool.take("b") == []  # its first round's full rescan, done
    await submit(hub_core, "t1")
    await _rung(other)
    grant = await take_one(hub_core.pool, "a", timeout_s=5)
    assert await other.pool.take("b") == []  # rung, but the task is out
    await hub_core.pool.release("t1", grant.record.attempt, reason="drain", counts=False)
    again = await take_one(other.pool, "b", timeout_s=5)
    assert again.record.id == "t1" and again.record.node == "b"


async def test_a_lone_ring_costs_two_pulls_not_a_pull_every_recheck(
    hub_core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "RESCAN_S", 3600.0)
    assert await hub_core.pool.take("n1") == []  # the first round's full rescan
    async with published(hub_core.nc, "$JS.API.CONSUMER.MSG.NEXT.>") as pulls:
        await hub_core.nc.publish("hub.bell.normal.any", b"")  # a ring with nothing behind it
        await _rung(hub_core)
        assert await hub_core.pool.take("n1") == []  # the ring's pull, empty
        await _rung(hub_core)  # the recheck rings (bounded wait)
        assert await hub_core.pool.take("n1") == []  # the recheck's pull, empty too
        # A further recheck would ring RECHECK_S after that pull: give it twenty times as long.
        await asyncio.sleep(pool_module.RECHECK_S * 20)
        assert not hub_core.pool.bell.is_set()
        assert await hub_core.pool.take("n1") == []
    name = subjects.ConsumerName(Priority.NORMAL, Route())
    # the ring's pull and one recheck, both of the rung route
    assert pulls == [f"$JS.API.CONSUMER.MSG.NEXT.{name.stream}.{name.durable}"] * 2


async def test_a_task_is_handed_on_before_the_rest_of_its_rounds_pulls(
    hub_core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round may pull several routes, a round trip each: a task its first pull finds goes to
    its node at once, not after the round's last pull."""
    pulls = 0
    pull = hub_core.queue.pull

    async def counted(name: subjects.ConsumerName, batch: int) -> list:
        nonlocal pulls
        pulls += 1
        return await pull(name, batch)

    monkeypatch.setattr(hub_core.queue, "pull", counted)
    await submit(hub_core, "urgent", priority=Priority.CRITICAL)
    await submit(hub_core, "later", priority=Priority.LOW)
    handed: list[tuple[str, str, int]] = []
    async for node, delivery in hub_core.pool.fetch([Taker("n1", free=2)]):  # a rescan
        handed.append((node, delivery.task_id, pulls))
    assert handed == [("n1", "urgent", 1), ("n1", "later", 2)]  # urgent before LOW's pull


# -- task TTL -------------------------------------------------------------------------------


async def test_task_ttl_expires_unclaimed_tasks_only(make_core) -> None:
    core = await make_core(task_ttl_s=1.0, ack_wait_s=2.0)
    await submit(core, "claimed")
    await submit(core, "unclaimed")
    grant = await take_one(core.pool, "n1", timeout_s=5, slots=1)
    assert grant.record.id == "claimed"
    assert await core.pool.sweep_expired() == 0  # nothing is due yet
    await asyncio.sleep(1.2)  # past the task TTL, within the lease

    assert await core.pool.sweep_expired() == 1
    expired = await core.journal.get("unclaimed")
    assert expired.status is Status.EXPIRED and expired.error
    assert await core.stream_messages() == 1  # removed from the work queue; "claimed" stays
    assert (await core.journal.wait("unclaimed", 5)).status is Status.EXPIRED
    running = await core.journal.get("claimed")
    assert running.status is Status.CLAIMED

    # its holder crashes (never extends): it is redelivered after ack_wait, not expired
    again = await take_one(core.pool, "n2", timeout_s=core.settings.ack_wait_s + 5)
    assert (again.record.id, again.record.attempt) == ("claimed", 2)
    assert await core.pool.sweep_expired() == 0
    done = await core.pool.complete("claimed", 2, b"ok")
    assert done.status is Status.SUCCEEDED
    assert await core.stream_messages() == 0


async def test_task_ttl_spares_a_task_handed_back_politely(make_core) -> None:
    """A drain gives the try back, but the task was claimed: it is not 'unclaimed' for the TTL."""
    core = await make_core(task_ttl_s=1.0)
    await submit(core, "t1")
    grant = await take_one(core.pool, "n1", timeout_s=5)
    await asyncio.sleep(1.2)  # past the task TTL while it runs
    released = await core.pool.release("t1", grant.record.attempt, reason="drain", counts=False)
    assert released.tries == 0
    assert await core.pool.sweep_expired() == 0
    again = await take_one(core.pool, "n2", timeout_s=5)
    assert again.record.attempt == 2 and again.record.status is Status.CLAIMED


async def test_sweep_removes_old_messages_no_delivery_would_run(make_core) -> None:
    """A cancelled task's message the cancel did not find (here a copy stored after it), and a
    second copy of a task stored by a re-submit past the dedupe window, leave the stream at the
    TTL without counting as expired; the task that is still waiting expires."""
    core = await make_core(task_ttl_s=1.0)
    await submit(core, "cancelled", route=Route(node="ghost"))
    await submit(core, "waiting", route=Route(node="ghost"))
    await core.pool.cancel("cancelled")
    assert await core.stream_messages() == 1  # the cancel found and removed its message
    for task_id in ("cancelled", "waiting"):
        record = await core.journal.get(task_id)
        await core.queue.publish(dataclasses.replace(record, generation=0), b"stale")
    assert await core.stream_messages() == 3
    await asyncio.sleep(1.2)

    assert await core.pool.sweep_expired() == 1
    assert await core.stream_messages() == 0
    assert (await core.journal.get("waiting")).status is Status.EXPIRED
    assert (await core.journal.get("cancelled")).status is Status.CANCELLED


# -- routing --------------------------------------------------------------------------------


async def test_node_directed_routing(hub_core: Core) -> None:
    await submit(hub_core, "for-n2", route=Route(node="n2"))
    for _ in range(3):
        assert await hub_core.pool.take("n1", slots=5) == []
    grant = await take_one(hub_core.pool, "n2", timeout_s=5)
    assert grant.record.id == "for-n2" and grant.record.node == "n2"
    # a directed node still takes work meant for anyone
    await submit(hub_core, "for-anyone")
    assert (await take_one(hub_core.pool, "n2", timeout_s=5)).record.id == "for-anyone"


async def test_capability_routing(hub_core: Core, make_core) -> None:
    await submit(hub_core, "gpu-task", route=Route(capabilities=frozenset({"gpu", "cuda"})))
    replica = await make_core()  # learns of the route from the stream's consumers
    for pool in (hub_core.pool, replica.pool):
        assert await pool.take("plain", slots=5) == []
        assert await pool.take("half", frozenset({"gpu"}), slots=5) == []
        assert await pool.take("other", frozenset({"cpu", "cuda"}), slots=5) == []
    grant = await take_one(
        replica.pool, "big", timeout_s=5, capabilities=frozenset({"gpu", "cuda", "ram64"})
    )
    assert grant.record.id == "gpu-task" and grant.record.node == "big"
    assert grant.record.route == Route(capabilities=frozenset({"gpu", "cuda"}))


@pytest.mark.parametrize("how", ["idle", "removed"])
@pytest.mark.parametrize(
    ("route", "taker"),
    [(Route(capabilities=frozenset({"gpu"})), "big"), (Route(node="n2"), "n2")],
    ids=["capabilities", "node"],
)
async def test_a_route_whose_consumer_went_gets_a_new_one(
    hub_core: Core, monkeypatch: pytest.MonkeyPatch, route: Route, taker: str, how: str
) -> None:
    """A capability or node route's consumer goes after a day without pulls (its inactive
    threshold, here a second), or when an operator removes it; a replica that made it before
    must make it again. Pulling the old one only answers "no responders": the route's tasks
    would stay queued for good."""
    monkeypatch.setattr(topology_module, "IDLE_CONSUMER_S", 1.0)
    capabilities = route.capabilities or frozenset()
    await submit(hub_core, "first", route=route)
    grant = await take_one(hub_core.pool, taker, timeout_s=5, capabilities=capabilities)
    await hub_core.pool.complete(grant.record.id, grant.record.attempt, b"")
    js, name = hub_core.nc.jetstream(), subjects.consumer_for(Priority.NORMAL, route)
    if how == "removed":
        await js.delete_consumer(name.stream, name.durable)

    async def gone() -> bool:
        try:
            await js.consumer_info(name.stream, name.durable)
        except nats.js.errors.NotFoundError:
            return True
        return False

    await eventually(gone, timeout_s=10, interval_s=0.2)
    await submit(hub_core, "second", route=route)
    grant = await take_one(hub_core.pool, taker, timeout_s=5, capabilities=capabilities)
    assert grant.record.id == "second" and grant.record.node == taker
    assert (await js.consumer_info(name.stream, name.durable)).config.filter_subject == (
        name.filter_subject
    )


async def test_the_pullers_of_routes_no_longer_pulled_are_dropped(
    hub_core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route's pull goes through its own inbox subscription. Nodes that come and go under new
    ids (pods) left one per priority on every replica that pulled their route, for good."""
    monkeypatch.setattr(queue_module, "PULLER_IDLE_S", 0.5)
    subscriptions = hub_core.nc._subs  # (nats-py's table of the connection's subscriptions)
    for node in ("gone-1", "gone-2", "gone-3"):
        await submit(hub_core, f"for-{node}", route=Route(node=node))
        grant = await take_one(hub_core.pool, node, timeout_s=5)
        await hub_core.pool.complete(grant.record.id, grant.record.attempt, b"")
    routes = {durable for _, durable in hub_core.queue._pullers}
    assert {"node_gone-1", "node_gone-2", "node_gone-3"} <= routes
    before = len(subscriptions)
    await asyncio.sleep(0.6)
    await submit(hub_core, "for-new", route=Route(node="new"))
    grant = await take_one(hub_core.pool, "new", timeout_s=5)  # a new route: a new puller
    assert grant.record.id == "for-new"
    routes = {durable for _, durable in hub_core.queue._pullers}
    assert "node_new" in routes and not {"node_gone-1", "node_gone-2", "node_gone-3"} & routes

    async def unsubscribed() -> bool:  # (the unsubscribes run in the background)
        return len(subscriptions) <= before - 2

    await eventually(unsubscribed, timeout_s=5)


async def test_a_rescan_finds_a_capability_route_that_rang_no_bell_here(
    hub_core: Core, make_core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capability route this replica never heard rung (it was cut off, say) is read off the
    subjects its stream holds messages on, at the next rescan."""
    monkeypatch.setattr(pool_module, "RESCAN_S", 0.0)  # every round is a rescan
    monkeypatch.setattr(pool_module.Pool, "_ring", lambda self, msg: None)  # deaf to the bell
    gpu = frozenset({"gpu"})
    replica = await make_core()
    assert await replica.pool.take("big", gpu) == []
    await submit(hub_core, "gpu-task", route=Route(capabilities=gpu))
    grant = await take_one(replica.pool, "big", timeout_s=5, capabilities=gpu)
    assert grant.record.id == "gpu-task"


async def test_a_rescan_pulls_only_the_routes_that_hold_messages(
    hub_core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each node has a route on every priority: a rescan that pulled them all would cost a
    round trip per node and priority, every RESCAN_S, with nothing to find."""
    monkeypatch.setattr(pool_module, "RESCAN_S", 0.0)
    takers = [Taker(f"n{i}") for i in range(5)]
    for taker in takers:  # each node's route gets its consumer
        assert await hub_core.pool.take(taker.node) == []
    await submit(hub_core, "for-n3", route=Route(node="n3"), priority=Priority.LOW)
    async with published(hub_core.nc, "$JS.API.CONSUMER.MSG.NEXT.>") as pulls:
        handed = [delivery.task_id async for _, delivery in hub_core.pool.fetch(takers)]
    assert handed == ["for-n3"]
    low = subjects.ConsumerName(Priority.LOW, Route(node="n3"))
    assert pulls == [f"$JS.API.CONSUMER.MSG.NEXT.{low.stream}.{low.durable}"]


async def test_a_rescan_does_not_pull_a_busy_nodes_route_that_holds_only_its_own_tasks(
    hub_core: Core, make_core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task routed to a node stays in its route's subject while the node runs it, so the
    subject alone would have every rescan pull every busy node's route, with nothing to find.
    What the node holds is subtracted; a task more than that is pulled."""
    monkeypatch.setattr(pool_module, "RESCAN_S", 0.0)  # every round is a rescan
    monkeypatch.setattr(pool_module, "RECHECK_S", 3600.0)  # no second look during the test
    await submit(hub_core, "a", route=Route(node="n3"))
    grants = await hub_core.pool.take("n3", slots=2)  # (a short batch: the route is drained)
    assert [g.record.id for g in grants] == ["a"]  # in flight to n3 from now on
    n3 = subjects.ConsumerName(Priority.NORMAL, Route(node="n3"))
    pull_n3 = f"$JS.API.CONSUMER.MSG.NEXT.{n3.stream}.{n3.durable}"
    busy = Taker("n3", free=1, own=lambda: {Priority.NORMAL: 1})
    async with published(hub_core.nc, "$JS.API.CONSUMER.MSG.NEXT.>") as pulls:
        assert [d async for _, d in hub_core.pool.fetch([busy])] == []
    assert pulls == []
    async with published(hub_core.nc, "$JS.API.CONSUMER.MSG.NEXT.>") as pulls:
        assert [d async for _, d in hub_core.pool.fetch([Taker("n3", free=1)])] == []
    assert pulls == [pull_n3]  # (not knowing what n3 holds: the route is pulled, as before)
    # A second task for n3 that this replica will not hear rung: another replica takes it
    # (the ring's pull here finds nothing) and hands it back.
    other = await make_core()
    await submit(hub_core, "b", route=Route(node="n3"))
    await _rung(hub_core)
    grant = await take_one(other.pool, "n3", timeout_s=5)
    assert [d async for _, d in hub_core.pool.fetch([busy])] == []
    await other.pool.release("b", grant.record.attempt, reason="drain", counts=False)
    handed = [d.task_id async for _, d in hub_core.pool.fetch([busy])]
    assert handed == ["b"]  # two messages in the subject, one held by n3: the other is pulled


async def test_a_node_past_the_streams_consumer_limit_still_gets_work(
    make_core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mesh with more nodes than a priority stream may hold consumers: a node whose own
    route cannot get one is still served from the routes it can run, and a submit that needs a
    new route is refused with the setting to raise. Nothing else stops."""
    monkeypatch.setattr(pool_module, "RESCAN_S", 0.0)  # every round is a rescan
    core = await make_core(max_stream_consumers=3)  # "any" and two nodes' routes
    for node in ("n1", "n2"):
        await submit(core, f"for-{node}", route=Route(node=node))
        assert [g.record.id for g in await core.pool.take(node)] == [f"for-{node}"]
    await submit(core, "for-n3", route=Route(node="n3"))  # a route the stream has no room for
    await submit(core, "t1")
    with pytest.raises(LimitReached, match="HUB_MAX_STREAM_CONSUMERS"):
        await submit(core, "gpu-task", route=Route(capabilities=frozenset({"gpu"})))
    with pytest.raises(TaskNotFound):
        await core.journal.get("gpu-task")  # refused before anything was recorded
    grant = await take_one(core.pool, "n3", timeout_s=5)
    assert grant.record.id == "t1" and grant.record.node == "n3"
    assert await core.pool.take("n3") == []  # another round: "for-n3" stays where it is
    # the refusal is remembered: later rounds do not ask for that consumer again each time
    async with published(core.nc, "$JS.API.CONSUMER.>") as asked:
        for _ in range(3):
            assert await core.pool.take("n3") == []
    assert not [s for s in asked if "CREATE" in s and s.endswith(".node_n3")]


# -- first result wins ----------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
async def test_first_result_wins_under_concurrent_completions(
    hub_core: Core, make_core, round_: int
) -> None:
    other = await make_core()
    await submit(hub_core, "t1")
    grant = await take_one(hub_core.pool, "n1", timeout_s=5)
    attempt = grant.record.attempt
    calls = {
        "a1": hub_core.pool.complete("t1", attempt, b"a1"),
        "a2": hub_core.pool.complete("t1", attempt, b"a2"),
        "a-fail": hub_core.pool.fail("t1", attempt, "a failed", retry=False),
        "b1": other.pool.complete("t1", attempt, b"b1"),
        "b2": other.pool.complete("t1", attempt, b"b2"),
        "b-fail": other.pool.fail("t1", attempt, "b failed", retry=False),
    }
    results = dict(
        zip(calls, await asyncio.gather(*calls.values(), return_exceptions=True), strict=True)
    )
    winners = {k: v for k, v in results.items() if not isinstance(v, BaseException)}
    assert len(winners) == 1, results
    for name, outcome in results.items():
        if name not in winners:
            assert isinstance(outcome, AlreadyFinished), (name, outcome)
    ((name, won),) = winners.items()
    record, revision = await snapshot(hub_core, "t1")
    assert record == won
    if name.endswith("fail"):
        assert record.status is Status.FAILED and record.error == f"{name[0]} failed"
    else:
        assert record.status is Status.SUCCEEDED and record.result == name.encode()
    # a duplicate afterwards changes nothing either
    with pytest.raises(AlreadyFinished):
        await other.pool.complete("t1", attempt, b"late")
    assert await snapshot(hub_core, "t1") == (record, revision)
    assert await hub_core.stream_messages() == 0


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_queued_and_running_tasks(hub_core: Core) -> None:
    await submit(hub_core, "running")
    grant = await take_one(hub_core.pool, "n1", timeout_s=5)
    await submit(hub_core, "queued")
    before, after = await hub_core.pool.cancel("queued")
    assert before.status is Status.QUEUED and after.status is Status.CANCELLED
    before, after = await hub_core.pool.cancel("running")
    assert before.status is Status.CLAIMED and after.status is Status.CANCELLED
    with pytest.raises(AlreadyFinished):
        await hub_core.pool.complete("running", grant.record.attempt, b"too late")
    with pytest.raises(AlreadyFinished):
        await hub_core.pool.cancel("queued")
    # Never delivered, yet found among its route's messages and removed at once.
    assert await hub_core.stream_messages() == 0
    assert await hub_core.pool.take("n2", slots=5) == []


async def test_cancel_finds_its_message_among_its_routes(hub_core: Core) -> None:
    """Every task of a route shares its subject: cancel picks out its own message by the task
    id in its headers, and removes that one only."""
    others = [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(30)]
    for task_id in others[:30]:
        await submit(hub_core, task_id)
    await submit(hub_core, "target")
    for task_id in others[30:]:
        await submit(hub_core, task_id)
    await hub_core.pool.cancel("target")
    assert await hub_core.stream_messages() == len(others)
    taken: list[str] = []
    for _ in range(50):
        taken += [g.record.id for g in await hub_core.pool.take("n1", slots=64)]
        if len(taken) >= len(others):
            break
        await asyncio.sleep(0.05)
    assert sorted(taken) == sorted(others)


async def test_cancel_of_a_handed_back_task_removes_its_message_at_once(hub_core: Core) -> None:
    """Once delivered, the journal knows the message's sequence: cancel deletes that message."""
    await submit(hub_core, "back")
    await submit(hub_core, "other")
    grant = await take_one(hub_core.pool, "n1", timeout_s=5, slots=1)
    await hub_core.pool.release(grant.record.id, grant.record.attempt, reason="drain", counts=False)
    assert await hub_core.stream_messages() == 2
    await hub_core.pool.cancel(grant.record.id)
    assert await hub_core.stream_messages() == 1
    assert not await hub_core.queue.remove(Priority.NORMAL, grant.record.seq)  # gone already
    left = await take_one(hub_core.pool, "n2", timeout_s=5)
    assert left.record.id != grant.record.id


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (TaskSpec(kind="echo", id="bad id"), InvalidTask),
        (TaskSpec(kind="echo", id="a.b"), InvalidTask),
        (TaskSpec(kind="echo", id="x" * 65), InvalidTask),
        (TaskSpec(kind=""), InvalidTask),
        (TaskSpec(kind="no spaces"), InvalidTask),
        (TaskSpec(kind="echo", priority="urgent"), InvalidTask),  # type: ignore[arg-type]
        (TaskSpec(kind="echo", priority=7), InvalidTask),  # type: ignore[arg-type]
        (TaskSpec(kind="echo", max_attempts=-2), InvalidTask),
        (TaskSpec(kind="echo", payload=b"x" * (64 * 1024 + 1)), PayloadTooLarge),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_written(
    hub_core: Core, spec: TaskSpec, error: type[HubError]
) -> None:
    with pytest.raises(error):
        await hub_core.pool.submit(spec)
    assert await hub_core.all_task_messages() == 0
    assert await hub_core.journal_messages() == 0


@pytest.mark.parametrize(
    "route",
    [
        {"capabilities": frozenset({"GPU"})},
        {"capabilities": frozenset({"a_b"})},
        {"node": "bad node"},
        {"node": "n1", "capabilities": frozenset({"gpu"})},
    ],
)
async def test_bad_routes_are_refused_and_nothing_is_written(hub_core: Core, route: dict) -> None:
    with pytest.raises(InvalidTask):
        await hub_core.pool.submit(TaskSpec(kind="echo", route=Route(**route)))
    assert await hub_core.all_task_messages() == 0
    assert await hub_core.journal_messages() == 0


@pytest.mark.parametrize("bad", ["", "*", ">", "a.b", "a b", "t1.stdout"])
async def test_bad_task_ids_are_refused_at_once_everywhere(hub_core: Core, bad: str) -> None:
    """Not a 15 s retry against a subject nobody answers, and never a wildcard read of another
    task's record (``*`` would match ``task.t1``)."""
    await submit(hub_core, "t1", max_attempts=1)
    grant = await take_one(hub_core.pool, "n1", timeout_s=5)
    await hub_core.pool.fail("t1", grant.record.attempt, "boom")  # t1 is in the DLQ
    before = await snapshot(hub_core, "t1")
    journal, pool = hub_core.journal, hub_core.pool
    calls = {
        "get": lambda: journal.get(bad),
        "wait": lambda: journal.wait(bad, 30),
        "watch": lambda: anext(aiter(journal.watch(bad))),
        "buffer": lambda: journal.read_buffer(bad, "stdout"),
        "cancel": lambda: pool.cancel(bad),
        "replay": lambda: pool.replay(bad),
        "complete": lambda: pool.complete(bad, 1, b"x"),
    }
    if bad:  # purge_dead("") is "purge them all"
        calls["purge_dead"] = lambda: pool.purge_dead(bad)
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(InvalidTask):
            await call()
        assert time.monotonic() - started < 1, name
    assert await snapshot(hub_core, "t1") == before
    assert await hub_core.queue.dead_letter("t1") is not None


async def test_oversized_result_is_refused_and_changes_nothing(hub_core: Core) -> None:
    await submit(hub_core, "t1")
    grant = await take_one(hub_core.pool, "n1", timeout_s=5)
    before = await snapshot(hub_core, "t1")
    with pytest.raises(PayloadTooLarge):
        await hub_core.pool.complete("t1", grant.record.attempt, b"x" * (64 * 1024 + 1))
    assert await snapshot(hub_core, "t1") == before
    assert await hub_core.stream_messages() == 1


async def test_counts(hub_core: Core) -> None:
    await submit(hub_core, "h", priority="high")
    await submit(hub_core, "l1", priority="low")
    await submit(hub_core, "l2", priority="low")
    await take_one(hub_core.pool, "n1", timeout_s=5)  # takes "h"
    counts = await hub_core.pool.counts()
    assert counts.queued == {"critical": 0, "high": 0, "normal": 0, "low": 2}
    assert counts.in_flight == 1 and counts.dead == 0
    assert counts.oldest_age_s["low"] >= 0 and counts.oldest_age_s["critical"] == 0
    assert subjects.stream_name(Priority.LOW) == "HUB_TASKS_LOW"
