"""The node protocol over real gRPC, message by message (``RawNode``) and through the SDK.

What is proved here: a stale attempt's result, heartbeat, output and hand-back are refused and
change nothing (DESIGN invariant 2); a node acts only on its own tasks (invariant 7); a node
whose stream ends re-attaches through another replica and keeps its task; a cancelled task's
later result is refused (invariant 3).
"""

from __future__ import annotations

import asyncio

import pytest
from grpchub import STEP_S, GrpcHub, addr, until, wait_done

from hub.buffers import HeadTail
from hub.node import TaskContext
from hub.v1 import common_pb2
from hub.v1 import nodes_pb2 as pb

pytestmark = pytest.mark.timeout(60)


def refs(task_refs: object) -> list[tuple[str, int]]:
    return [(r.task_id, r.attempt) for r in task_refs]  # type: ignore[attr-defined]


async def test_stale_attempt_is_fenced_and_changes_nothing(e2e_hub: GrpcHub) -> None:
    a, b = await e2e_hub.replica(), await e2e_hub.replica()
    client = e2e_hub.client(a)
    old = await e2e_hub.raw_node(a, "old")
    task_id = (await client.submit("job", b"payload")).task.task_id
    first = await old.offer_and_claim(task_id)
    assert (first.attempt, first.payload) == (1, b"payload")

    # "old" never heartbeats: its lease (ack_wait_s) lapses, the task is delivered again, and
    # a node on the other replica claims it as attempt 2.
    new = await e2e_hub.raw_node(b, "new")
    second = await new.offer_and_claim(task_id)
    assert second.attempt == 2
    before = await client.get(task_id, include_output=True)
    assert before.status == common_pb2.RUNNING
    assert (before.node_id, before.attempt) == ("new", 2)

    # The old holder speaks for attempt 1: every message is refused, or stops it.
    stale = pb.TaskRef(task_id=task_id, attempt=1)
    old.send(output=pb.Output(task_id=task_id, attempt=1, stream="stdout", data=b"stale out\n"))
    old.send(heartbeat=pb.Heartbeat(running=[stale], free_slots=0))
    result_ref = old.send(result=pb.Result(task_id=task_id, attempt=1, ok=True, result=b"stale"))
    hand_ref = old.send(hand_back=pb.HandBack(task_id=task_id, attempt=1, reason="stale"))
    cancel = (await old.expect("cancel", lambda c: c.task_id == task_id)).cancel
    assert cancel.attempt == 1 and "stale" in cancel.reason
    for ref in (result_ref, hand_ref):
        refused = (await old.expect("refused", lambda r, ref=ref: r.ref == ref)).refused
        assert refused.task_id == task_id
        assert refused.code == "FAILED_PRECONDITION", refused
        assert "attempt 1 is stale" in refused.message
    after = await e2e_hub.client(b).get(task_id, include_output=True)
    assert after == before  # the journal is unchanged: record and buffers
    assert after.stdout.total_bytes == 0

    # The current holder finishes normally; the stale output never landed.
    new.send(output=pb.Output(task_id=task_id, attempt=2, stream="stdout", data=b"fresh out\n"))
    done_ref = new.send(result=pb.Result(task_id=task_id, attempt=2, ok=True, result=b"fresh"))
    assert (await new.expect("done", lambda d: d.ref == done_ref)).done.task_id == task_id
    task = await wait_done(client, task_id)
    assert task.status == common_pb2.SUCCEEDED and task.result == b"fresh"
    assert (task.node_id, task.attempt, task.tries) == ("new", 2, 2)
    assert task.stdout.head == b"fresh out\n" and task.stdout.total_bytes == 10
    assert [(h.attempt, h.node_id, h.outcome) for h in task.history] == [
        (1, "old", "lease expired"),
        (2, "new", "succeeded"),
    ]
    assert await e2e_hub.stream_messages(a) == 0

    # A late duplicate from the old holder still changes nothing (first result wins).
    late = old.send(result=pb.Result(task_id=task_id, attempt=1, ok=False, error="late"))
    refused = (await old.expect("refused", lambda r: r.ref == late)).refused
    assert refused.code == "FAILED_PRECONDITION"
    assert await client.get(task_id, include_output=True) == task


async def test_a_node_acts_only_on_its_own_tasks(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    client = e2e_hub.client(replica)
    holder = await e2e_hub.raw_node(replica, "holder")
    task_id = (await client.submit("job")).task.task_id
    grant = await holder.offer_and_claim(task_id)
    before = await client.get(task_id, include_output=True)

    intruder = await e2e_hub.raw_node(replica, "intruder")
    sent = [
        intruder.send(
            result=pb.Result(task_id=task_id, attempt=grant.attempt, ok=True, result=b"mine")
        ),
        intruder.send(hand_back=pb.HandBack(task_id=task_id, attempt=grant.attempt)),
    ]
    for ref in sent:
        refused = (await intruder.expect("refused", lambda r, ref=ref: r.ref == ref)).refused
        assert refused.code == "PERMISSION_DENIED", refused
    beat = pb.Heartbeat(running=[pb.TaskRef(task_id=task_id, attempt=grant.attempt)])
    intruder.send(heartbeat=beat)
    assert (await intruder.expect("cancel")).cancel.task_id == task_id
    assert await client.get(task_id, include_output=True) == before

    ref = holder.send(result=pb.Result(task_id=task_id, attempt=grant.attempt, ok=True))
    await holder.expect("done", lambda d: d.ref == ref)
    task = await wait_done(client, task_id)
    assert task.status == common_pb2.SUCCEEDED and task.node_id == "holder"


async def test_claims_and_messages_out_of_order_are_refused(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    client = e2e_hub.client(replica)
    raw = await e2e_hub.raw_node(replica, "n1", slots=2)
    assert raw.welcome is not None
    assert raw.welcome.heartbeat_s == pytest.approx(0.3)
    assert raw.welcome.lease_s == pytest.approx(1.5)

    raw.send(claim=pb.Claim(task_id="never-offered"))
    deny = (await raw.expect("deny")).deny
    assert deny.task_id == "never-offered" and "no open offer" in deny.reason

    ref = raw.send(hello=pb.Hello(node_id="n1", slots=1))
    refused = (await raw.expect("refused", lambda r: r.ref == ref)).refused
    assert refused.code == "INVALID_ARGUMENT" and "hello" in refused.message

    ref = raw.send(result=pb.Result(task_id="unknown-task", attempt=1, ok=True))
    assert (await raw.expect("refused", lambda r: r.ref == ref)).refused.code == "NOT_FOUND"

    # The stream still works after all that: the node is offered, claims and finishes a task.
    task_id = (await client.submit("job")).task.task_id
    grant = await raw.offer_and_claim(task_id)
    ref = raw.send(result=pb.Result(task_id=task_id, attempt=grant.attempt, ok=True))
    await raw.expect("done", lambda d: d.ref == ref)
    assert (await wait_done(client, task_id)).status == common_pb2.SUCCEEDED


async def test_a_declined_offer_goes_to_another_node(e2e_hub: GrpcHub) -> None:
    a, b = await e2e_hub.replica(), await e2e_hub.replica()
    client = e2e_hub.client(a)
    picky = await e2e_hub.raw_node(a, "picky")
    task_id = (await client.submit("job")).task.task_id
    await picky.expect("offer", lambda o: o.task_id == task_id)
    other = await e2e_hub.raw_node(b, "other")
    picky.send(decline=pb.Decline(task_id=task_id))
    grant = await other.offer_and_claim(task_id)
    assert grant.attempt == 1  # an offer declined is no attempt
    ref = other.send(result=pb.Result(task_id=task_id, attempt=1, ok=True, result=b"ok"))
    await other.expect("done", lambda d: d.ref == ref)
    task = await wait_done(client, task_id)
    assert task.node_id == "other" and task.tries == 1


async def test_cancelled_running_task_its_later_result_is_refused(e2e_hub: GrpcHub) -> None:
    a, b = await e2e_hub.replica(), await e2e_hub.replica()
    raw = await e2e_hub.raw_node(a, "worker")
    client = e2e_hub.client(b)
    task_id = (await client.submit("job")).task.task_id
    grant = await raw.offer_and_claim(task_id)

    assert (await client.cancel(task_id)).status == common_pb2.CANCELLED
    cancel = (await raw.expect("cancel", lambda c: c.task_id == task_id)).cancel
    assert cancel.attempt == grant.attempt and cancel.reason == "cancelled"
    before = await client.get(task_id, include_output=True)

    raw.send(output=pb.Output(task_id=task_id, attempt=1, stream="stdout", data=b"too late\n"))
    ref = raw.send(result=pb.Result(task_id=task_id, attempt=1, ok=True, result=b"too late"))
    refused = (await raw.expect("refused", lambda r: r.ref == ref)).refused
    assert refused.code == "FAILED_PRECONDITION" and "cancelled" in refused.message
    after = await client.get(task_id, include_output=True)
    assert after == before
    assert after.status == common_pb2.CANCELLED and after.result == b""
    assert after.stdout.total_bytes == 0
    assert await e2e_hub.stream_messages(a) == 0


async def test_raw_reattach_through_another_replica_within_grace(e2e_hub: GrpcHub) -> None:
    a, b = await e2e_hub.replica(), await e2e_hub.replica()
    client = e2e_hub.client(a)
    first = await e2e_hub.raw_node(a, "mover")
    task_id = (await client.submit("job")).task.task_id
    grant = await first.offer_and_claim(task_id)
    await first.close()  # the stream ends: A starts the re-attach grace (node_grace_s)

    again = await e2e_hub.raw_node(b, "mover", running=[(task_id, grant.attempt)])
    assert again.welcome is not None
    assert refs(again.welcome.kept) == [(task_id, 1)] and not again.welcome.lost
    # Outlive A's grace (0.5 s) and the lease (1.5 s): re-attaching extended the lease, and
    # heartbeats through B keep extending it; the grace must not hand the task back.
    for _ in range(8):
        again.send(heartbeat=pb.Heartbeat(running=[pb.TaskRef(task_id=task_id, attempt=1)]))
        await asyncio.sleep(0.3)
    assert "cancel" not in again.kinds()
    ref = again.send(result=pb.Result(task_id=task_id, attempt=1, ok=True, result=b"kept"))
    await again.expect("done", lambda d: d.ref == ref)
    task = await wait_done(client, task_id)
    assert task.status == common_pb2.SUCCEEDED and task.result == b"kept"
    assert (task.attempt, task.tries, len(task.history)) == (1, 1, 1)


async def test_reattach_with_a_stale_attempt_is_told_lost(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    client = e2e_hub.client(replica)
    first = await e2e_hub.raw_node(replica, "n1")
    task_id = (await client.submit("job")).task.task_id
    await first.offer_and_claim(task_id)
    await first.close()
    again = await e2e_hub.raw_node(replica, "n1", running=[(task_id, 7), ("no-such-task", 1)])
    assert again.welcome is not None
    assert not again.welcome.kept
    assert set(refs(again.welcome.lost)) == {("no-such-task", 1), (task_id, 7)}


@pytest.mark.parametrize("drain", [True, False], ids=["drain", "abrupt"])
async def test_sdk_node_reattaches_through_the_other_replica_and_keeps_its_task(
    e2e_hub: GrpcHub, drain: bool
) -> None:
    a, b = await e2e_hub.replica(), await e2e_hub.replica()
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    async def long_job(ctx: TaskContext) -> bytes:
        runs.append(ctx.attempt)
        ctx.stdout(b"before the move\n")
        started.set()
        async with asyncio.timeout(STEP_S * 2):
            await release.wait()
        ctx.stdout(b"after the move\n")
        return b"moved and finished"

    node = await e2e_hub.node([addr(a), addr(b)], "mover", {"long": long_job})
    assert node.replica_id == a.id
    client = e2e_hub.client(b)
    task_id = (await client.submit("long")).task.task_id
    async with asyncio.timeout(STEP_S):
        await started.wait()

    await e2e_hub.stop_replica(a, drain=drain)

    async def on_b() -> bool:
        return node.connected.is_set() and node.replica_id == b.id

    await until(on_b)
    # Outlive the lease (1.5 s): only heartbeats through B keep the task the node's.
    await asyncio.sleep(2.0)
    task = await client.get(task_id)
    assert (task.status, task.node_id, task.attempt) == (common_pb2.RUNNING, "mover", 1)
    release.set()
    task = await wait_done(client, task_id)
    assert task.status == common_pb2.SUCCEEDED and task.result == b"moved and finished"
    assert (task.attempt, task.tries) == (1, 1)
    assert [(h.attempt, h.outcome) for h in task.history] == [(1, "succeeded")]
    assert runs == [1]  # executed once: no redelivery
    assert task.stdout.head == b"before the move\nafter the move\n"


async def test_output_as_a_head_tail_view_lands_exactly_and_a_bad_view_is_refused(
    e2e_hub: GrpcHub,
) -> None:
    """A congested node sends a head+tail view of its unsent output instead of every byte:
    the journal ends byte for byte as if every byte had come. A view that does not fit the
    hub's limits is refused and changes nothing."""
    a = await e2e_hub.replica()
    raw = await e2e_hub.raw_node(a, "folder")
    client = e2e_hub.client(a)
    task_id = (await client.submit("job")).task.task_id
    await raw.offer_and_claim(task_id)
    assert raw.welcome is not None
    limits = (raw.welcome.journal_head_bytes, raw.welcome.journal_tail_bytes)
    stream = bytes(range(256)) * (sum(limits) // 256 + 40)  # well past head+tail
    view = HeadTail().append(stream, *limits)
    assert view.dropped > 0

    def output(data: bytes, dropped: int = 0, tail: bytes = b"") -> pb.Output:
        return pb.Output(
            task_id=task_id, attempt=1, stream="stdout", data=data, dropped=dropped, tail=tail
        )

    raw.send(output=output(b"start:"))
    raw.send(output=output(view.head, view.dropped, view.tail))
    bad_views = (
        output(b"x", -5, b"y"),  # fewer bytes than it holds
        output(b"h" * (limits[0] + 1), 1, b"t"),  # a head past the hub's
        output(b"h", 1, b"t" * (limits[1] + 1)),  # a tail past the hub's
    )
    for bad in bad_views:
        ref = raw.send(output=bad)
        refused = (await raw.expect("refused", lambda r, ref=ref: r.ref == ref)).refused
        assert refused.code == "INVALID_ARGUMENT", refused
    done = raw.send(result=pb.Result(task_id=task_id, attempt=1, ok=True, result=b"ok"))
    await raw.expect("done", lambda d: d.ref == done)
    task = await wait_done(client, task_id)
    expected = HeadTail().append(b"start:" + stream, *limits)
    assert (task.stdout.head, task.stdout.tail) == (expected.head, expected.tail)
    assert (task.stdout.total_bytes, task.stdout.dropped_bytes) == (
        expected.total,
        expected.dropped,
    )
