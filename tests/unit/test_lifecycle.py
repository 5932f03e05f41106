"""The task state machine as pure functions: every transition, every refusal, no I/O."""

from __future__ import annotations

import dataclasses

import pytest

from hub import lifecycle
from hub.errors import AlreadyFinished, InvalidTask, NotTaskOwner, StaleAttempt, WrongState
from hub.lifecycle import Verdict
from hub.model import Priority, Route, Status, TaskRecord, TaskSpec

NOW = 1_000.0
ACK = "$JS.ACK.HUB_TASKS_NORMAL.any.1.7.7.1700000000000000000.0"


def queued(max_attempts: int = 3) -> TaskRecord:
    spec = TaskSpec(kind="echo", payload=b"abc", max_attempts=max_attempts, id="t1")
    return lifecycle.submitted(spec.validated(1024, 5), NOW)


def claimed(
    record: TaskRecord | None = None, *, seq: int = 7, node: str = "n1", **kw
) -> TaskRecord:
    record = record or queued()
    args = {"seq": seq, "deliveries": 1, "generation": record.generation, "ack_subject": ACK}
    args |= kw
    return lifecycle.claim(record, node=node, lease_s=30, now=NOW + 1, **args)


def test_submitted_record() -> None:
    r = queued()
    assert (r.status, r.attempt, r.tries, r.generation) == (Status.QUEUED, 0, 0, 1)
    assert r.payload_bytes == 3 and r.queued_at == NOW and r.priority is Priority.NORMAL
    with pytest.raises(InvalidTask):
        lifecycle.submitted(TaskSpec(kind="echo"), NOW)  # not validated: no id


def test_claim_records_holder_attempt_lease_and_ack_subject() -> None:
    r = claimed()
    assert r.status is Status.CLAIMED
    assert (r.node, r.attempt, r.tries, r.deliveries, r.seq) == ("n1", 1, 1, 1, 7)
    assert r.ack_subject == ACK and r.lease_deadline == NOW + 31
    assert [(h.attempt, h.node, h.ended_at) for h in r.history] == [(1, "n1", 0.0)]
    running = claimed(running=True)
    assert running.status is Status.RUNNING


def test_redelivery_bumps_the_epoch_and_closes_the_lapsed_attempt() -> None:
    first = claimed()
    second = lifecycle.claim(
        first,
        node="n2",
        seq=7,
        deliveries=2,
        generation=1,
        ack_subject=ACK,
        lease_s=30,
        now=NOW + 50,
    )
    assert (second.attempt, second.tries, second.node, second.deliveries) == (2, 2, "n2", 2)
    assert second.history[0].outcome == "lease expired" and second.history[0].ended_at == NOW + 50
    assert second.history[1].attempt == 2 and not second.history[1].ended_at


def test_fence_refuses_stale_attempts_and_other_nodes() -> None:
    r = claimed()
    lifecycle.fence(r, 1)
    lifecycle.fence(r, 1, "n1")
    with pytest.raises(StaleAttempt) as info:
        lifecycle.fence(r, 0)
    assert (info.value.attempt, info.value.current) == (0, 1)
    with pytest.raises(StaleAttempt):
        lifecycle.fence(r, 2)
    with pytest.raises(NotTaskOwner):
        lifecycle.fence(r, 1, "n2")
    with pytest.raises(StaleAttempt):
        lifecycle.fence(queued(), 0)  # nothing is held while queued
    done = lifecycle.succeed(r, 1, b"ok", NOW + 2)
    with pytest.raises(AlreadyFinished):
        lifecycle.fence(done, 1)
    with pytest.raises(StaleAttempt):
        lifecycle.fence(done, 0)


@pytest.mark.parametrize(
    "op",
    [
        lambda r, a: lifecycle.start(r, a, NOW),
        lambda r, a: lifecycle.extend(r, a, 30, NOW),
        lambda r, a: lifecycle.succeed(r, a, b"x", NOW),
        lambda r, a: lifecycle.fail(r, a, "boom", NOW, retry=True),
        lambda r, a: lifecycle.release(r, a, NOW, reason="bye", counts=True),
    ],
    ids=["start", "extend", "succeed", "fail", "release"],
)
def test_every_attempt_operation_is_fenced(op) -> None:
    first = claimed()
    second = claimed(first, deliveries=2)
    with pytest.raises(StaleAttempt):
        op(second, 1)
    op(second, 2)  # the current holder is fine


def test_start_and_extend() -> None:
    r = lifecycle.start(claimed(), 1, NOW + 2)
    assert r.status is Status.RUNNING
    assert lifecycle.start(r, 1, NOW + 3) is r  # idempotent
    e = lifecycle.extend(r, 1, 30, NOW + 10)
    assert e.lease_deadline == NOW + 40 and e.status is Status.RUNNING


def test_succeed_is_first_result_wins() -> None:
    r = lifecycle.succeed(claimed(), 1, b"result", NOW + 5)
    assert (r.status, r.result, r.finished_at, r.lease_deadline) == (
        Status.SUCCEEDED,
        b"result",
        NOW + 5,
        0.0,
    )
    assert r.history[-1].outcome == "succeeded" and r.history[-1].ended_at == NOW + 5
    with pytest.raises(AlreadyFinished):
        lifecycle.succeed(r, 1, b"second", NOW + 6)
    with pytest.raises(AlreadyFinished):
        lifecycle.fail(r, 1, "late", NOW + 6, retry=False)


def test_fail_retries_then_dies_and_permanent_failure() -> None:
    r = claimed(queued(max_attempts=2))
    again = lifecycle.fail(r, 1, "boom", NOW + 2, retry=True)
    assert again.status is Status.QUEUED and again.error == "boom" and again.node == ""
    assert again.history[-1].outcome == "failed" and again.history[-1].error == "boom"
    r2 = claimed(again, deliveries=2)
    dead = lifecycle.fail(r2, 2, "boom again", NOW + 3, retry=True)
    assert dead.status is Status.DEAD and dead.error == "boom again"
    assert [h.outcome for h in dead.history] == ["failed", "failed"]
    permanent = lifecycle.fail(claimed(), 1, "bad input", NOW + 2, retry=False)
    assert permanent.status is Status.FAILED and permanent.terminal


def test_release_counts_or_gives_the_try_back() -> None:
    r = claimed()
    polite = lifecycle.release(r, 1, NOW + 2, reason="draining", counts=False)
    assert polite.status is Status.QUEUED and polite.tries == 0
    lost = lifecycle.release(r, 1, NOW + 2, reason="node lost", counts=True)
    assert lost.tries == 1 and lost.history[-1].outcome == "released"


def test_cancel() -> None:
    assert lifecycle.cancel(queued(), NOW).status is Status.CANCELLED
    c = lifecycle.cancel(claimed(), NOW + 3)
    assert c.status is Status.CANCELLED and c.history[-1].outcome == "cancelled"
    with pytest.raises(AlreadyFinished):
        lifecycle.cancel(c, NOW + 4)


def test_expire_only_unclaimed_tasks_past_their_ttl() -> None:
    r = queued()
    with pytest.raises(WrongState):
        lifecycle.expire(r, NOW + 5, ttl_s=10)  # not yet due
    e = lifecycle.expire(r, NOW + 10, ttl_s=10)
    assert e.status is Status.EXPIRED and e.terminal
    with pytest.raises(WrongState):
        lifecycle.expire(claimed(), NOW + 100, ttl_s=10)  # running on
    released = lifecycle.release(claimed(), 1, NOW + 2, reason="lost", counts=True)
    with pytest.raises(WrongState):
        lifecycle.expire(released, NOW + 100, ttl_s=10)  # was claimed in this generation
    drained = lifecycle.release(claimed(), 1, NOW + 2, reason="drain", counts=False)
    assert drained.tries == 0
    with pytest.raises(WrongState):
        lifecycle.expire(drained, NOW + 100, ttl_s=10)  # its try was given back, still claimed
    replayed = lifecycle.replay(lifecycle.dead(claimed(), NOW + 3, "x"), NOW + 4)
    assert lifecycle.expire(replayed, NOW + 14, ttl_s=10).status is Status.EXPIRED


def test_dead_and_replay_start_a_new_generation() -> None:
    d = lifecycle.dead(claimed(), NOW + 5, "gave up")
    assert d.status is Status.DEAD and d.error == "gave up"
    with pytest.raises(AlreadyFinished):
        lifecycle.dead(d, NOW + 6, "again")
    with pytest.raises(WrongState):
        lifecycle.replay(claimed(), NOW)
    r = lifecycle.replay(d, NOW + 10)
    assert (r.status, r.generation, r.tries, r.attempt, r.seq) == (Status.QUEUED, 2, 0, 1, 0)
    assert r.queued_at == NOW + 10 and r.error == "" and r.ack_subject == ""
    # The old holder (attempt 1) stays fenced, before and after the new claim.
    with pytest.raises(StaleAttempt):
        lifecycle.fence(r, 1)
    again = claimed(r, seq=9, generation=2)
    assert (again.attempt, again.generation, again.tries) == (2, 2, 1)
    with pytest.raises(StaleAttempt):
        lifecycle.fence(again, 1)


def test_judge_delivery() -> None:
    q = queued(max_attempts=2)
    assert lifecycle.judge_delivery(q, 7, 1) is Verdict.CLAIM
    assert lifecycle.judge_delivery(q, 7, 0) is Verdict.DROP  # older generation
    c = claimed(q)
    assert lifecycle.judge_delivery(c, 7, 1) is Verdict.CLAIM  # redelivery of the held message
    assert lifecycle.judge_delivery(c, 8, 1) is Verdict.DROP  # a second copy while active
    assert lifecycle.judge_delivery(c, 8, 2) is Verdict.CLAIM  # newer generation: catch up
    used = claimed(c, deliveries=2)
    assert lifecycle.judge_delivery(used, 7, 1) is Verdict.DEAD  # tries used up
    done = lifecycle.succeed(c, 1, b"", NOW)
    assert lifecycle.judge_delivery(done, 7, 1) is Verdict.DROP
    dead = lifecycle.dead(c, NOW, "x")
    assert lifecycle.judge_delivery(dead, 7, 1) is Verdict.DEAD  # finish a cut-short move
    with pytest.raises(WrongState):
        claimed(done)


def test_history_is_bounded() -> None:
    r = queued(max_attempts=100)
    for d in range(1, 40):
        r = claimed(r, deliveries=d)
    assert len(r.history) == 20 and r.history[-1].attempt == 39 and r.attempt == 39


def test_claim_for_directed_route_keeps_route() -> None:
    spec = TaskSpec(kind="k", route=Route(node="n9"), id="t2").validated(10, 1)
    r = lifecycle.submitted(spec, NOW)
    assert claimed(r, node="n9").route == Route(node="n9")
    assert dataclasses.replace(r) == r
