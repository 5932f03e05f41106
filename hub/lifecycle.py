"""The task state machine as pure functions: each takes a record and returns the next one or raises.

``queued → claimed → running → succeeded | failed | cancelled | dead | expired``

No I/O here. The journal applies these by compare-and-set, so two replicas racing on one task both
compute from the same revision and only one write lands; the loser re-reads and re-decides.
"""

from __future__ import annotations

import enum

from hub.errors import (
    AlreadyFinished,
    DuplicateTask,
    InvalidTask,
    NotTaskOwner,
    StaleAttempt,
    WrongState,
)
from hub.model import MAX_HISTORY, AttemptInfo, Status, TaskRecord, TaskSpec, evolve

__all__ = (
    "Verdict",
    "cancel",
    "claim",
    "dead",
    "expire",
    "extend",
    "fail",
    "fence",
    "judge_delivery",
    "release",
    "replay",
    "same_task",
    "start",
    "submitted",
    "succeed",
)


class Verdict(enum.Enum):
    """What to do with a message the work queue delivered."""

    CLAIM = "claim"
    DROP = "drop"  # the task is finished, cancelled, superseded or a duplicate: ack it away
    DEAD = "dead"  # attempts used up: move to the DLQ (idempotent)


def submitted(spec: TaskSpec, now: float) -> TaskRecord:
    """The first record of a validated spec."""
    if not spec.id:
        raise InvalidTask("spec must be validated before it is recorded")
    return TaskRecord(
        id=spec.id,
        kind=spec.kind,
        priority=spec.priority,
        route=spec.route,
        status=Status.QUEUED,
        created_at=now,
        updated_at=now,
        queued_at=now,
        max_attempts=spec.max_attempts,
        timeout_s=spec.timeout_s,
        payload_bytes=len(spec.payload),
    )


def same_task(record: TaskRecord, spec: TaskSpec) -> None:
    """A repeated submit must describe the same task; reusing an id for another is an error."""
    for what, old, new in (
        ("kind", record.kind, spec.kind),
        ("priority", record.priority, spec.priority),
        ("route", record.route, spec.route),
        ("payload size", record.payload_bytes, len(spec.payload)),
    ):
        if old != new:
            raise DuplicateTask(record.id, what)


def judge_delivery(record: TaskRecord, seq: int, generation: int) -> Verdict:
    """Decide a delivery before claiming it.

    A message from an older generation, for a finished task, or a second copy of an active
    task (a re-submit beyond the dedupe window stores a new message) is dropped. A message from
    a newer generation means a replay was published before the journal caught up: claim it.
    """
    if generation < record.generation:
        return Verdict.DROP
    if generation > record.generation:
        return Verdict.CLAIM
    if record.status is Status.DEAD:
        return Verdict.DEAD  # the move to the DLQ may have been cut short: finish it
    if record.terminal:
        return Verdict.DROP
    if record.active and record.seq and record.seq != seq:
        return Verdict.DROP
    if record.tries >= record.max_attempts:
        return Verdict.DEAD
    return Verdict.CLAIM


def claim(
    record: TaskRecord,
    *,
    node: str,
    seq: int,
    deliveries: int,
    generation: int,
    ack_subject: str,
    lease_s: float,
    now: float,
    running: bool = False,
) -> TaskRecord:
    """Grant the task to ``node`` as a new attempt; a previous holder is fenced by the new epoch.

    ``running=True`` when the node claimed it to start at once (the node protocol), which
    saves the separate ``start`` write.
    """
    if judge_delivery(record, seq, generation) is not Verdict.CLAIM:
        raise WrongState(record.id, record.status, "claim")
    history = record.history
    if generation > record.generation:
        record = evolve(record, generation=generation, tries=0)
    elif record.active:
        history = _close(history, record.attempt, now, "lease expired", "")
    attempt = record.attempt + 1
    return evolve(
        record,
        status=Status.RUNNING if running else Status.CLAIMED,
        node=node,
        attempt=attempt,
        tries=record.tries + 1,
        deliveries=deliveries,
        seq=seq,
        ack_subject=ack_subject,
        lease_deadline=now + lease_s,
        claimed_at=now,
        updated_at=now,
        history=(*history, AttemptInfo(attempt=attempt, node=node, started_at=now))[-MAX_HISTORY:],
    )


def fence(record: TaskRecord, attempt: int, node: str = "") -> None:
    """Refuse anything said for an attempt that is not the current, active one."""
    if record.terminal and attempt == record.attempt:
        raise AlreadyFinished(record.id, record.status)
    if attempt != record.attempt or not record.active:
        raise StaleAttempt(record.id, attempt, record.attempt)
    if node and node != record.node:
        raise NotTaskOwner(record.id, node)


def start(record: TaskRecord, attempt: int, now: float, node: str = "") -> TaskRecord:
    fence(record, attempt, node)
    if record.status is Status.RUNNING:
        return record
    return evolve(record, status=Status.RUNNING, updated_at=now)


def extend(
    record: TaskRecord, attempt: int, lease_s: float, now: float, node: str = ""
) -> TaskRecord:
    fence(record, attempt, node)
    return evolve(record, lease_deadline=now + lease_s, updated_at=now)


def succeed(
    record: TaskRecord, attempt: int, result: bytes, now: float, node: str = ""
) -> TaskRecord:
    """First terminal result wins: a second one for the same attempt raises AlreadyFinished."""
    fence(record, attempt, node)
    return _finish(record, Status.SUCCEEDED, now, result=result, outcome="succeeded")


def fail(
    record: TaskRecord,
    attempt: int,
    error: str,
    now: float,
    *,
    retry: bool,
    node: str = "",
) -> TaskRecord:
    """A failed attempt: back to the queue while tries remain, else dead (to the DLQ).

    ``retry=False`` is a permanent failure (the handler says re-running cannot help): ``failed``.
    """
    fence(record, attempt, node)
    if not retry:
        return _finish(record, Status.FAILED, now, error=error, outcome="failed")
    if record.tries >= record.max_attempts:
        return _finish(record, Status.DEAD, now, error=error, outcome="failed")
    return _requeue(record, now, error, "failed")


def release(
    record: TaskRecord, attempt: int, now: float, *, reason: str, counts: bool, node: str = ""
) -> TaskRecord:
    """Hand the task back to the queue.

    ``counts=False`` (a node draining politely) gives the try back; a lost node counts, so a
    task that crashes every node it touches still reaches the DLQ.
    """
    fence(record, attempt, node)
    if not counts:
        record = evolve(record, tries=max(record.tries - 1, 0))
    return _requeue(record, now, reason, "released")


def cancel(record: TaskRecord, now: float) -> TaskRecord:
    if record.terminal:
        raise AlreadyFinished(record.id, record.status)
    return _finish(record, Status.CANCELLED, now, error="cancelled", outcome="cancelled")


def expire(record: TaskRecord, now: float, ttl_s: float) -> TaskRecord:
    """Only a task never claimed in this generation expires: one claimed just before its TTL
    runs on (and is redelivered after a crash) instead of vanishing mid-run."""
    # ``seq`` is set by a claim and cleared by a replay: a task handed back politely (which
    # gives its try back) was still claimed in this generation.
    if record.status is not Status.QUEUED or record.tries or record.seq:
        raise WrongState(record.id, record.status, "expire")
    if now - record.queued_at < ttl_s:
        raise WrongState(record.id, "not yet due", "expire")
    return _finish(record, Status.EXPIRED, now, error="expired unclaimed", outcome="expired")


def dead(record: TaskRecord, now: float, error: str) -> TaskRecord:
    if record.terminal:
        raise AlreadyFinished(record.id, record.status)
    return _finish(record, Status.DEAD, now, error=error, outcome="dead")


def replay(record: TaskRecord, now: float) -> TaskRecord:
    """A dead task back to the queue as a new generation with a fresh budget of tries."""
    if record.status is not Status.DEAD:
        raise WrongState(record.id, record.status, "replay")
    return evolve(
        record,
        status=Status.QUEUED,
        generation=record.generation + 1,
        tries=0,
        node="",
        ack_subject="",
        seq=0,
        lease_deadline=0.0,
        queued_at=now,
        updated_at=now,
        finished_at=0.0,
        error="",
    )


def _finish(
    record: TaskRecord,
    status: Status,
    now: float,
    *,
    result: bytes = b"",
    error: str = "",
    outcome: str,
) -> TaskRecord:
    history = record.history
    if record.active:
        history = _close(history, record.attempt, now, outcome, error)
    return evolve(
        record,
        status=status,
        result=result,
        error=error,
        finished_at=now,
        updated_at=now,
        lease_deadline=0.0,
        history=history,
    )


def _requeue(record: TaskRecord, now: float, error: str, outcome: str) -> TaskRecord:
    return evolve(
        record,
        status=Status.QUEUED,
        node="",
        lease_deadline=0.0,
        error=error,
        updated_at=now,
        history=_close(record.history, record.attempt, now, outcome, error),
    )


def _close(
    history: tuple[AttemptInfo, ...], attempt: int, now: float, outcome: str, error: str
) -> tuple[AttemptInfo, ...]:
    return tuple(
        evolve(h, ended_at=now, outcome=outcome, error=error)
        if h.attempt == attempt and not h.ended_at
        else h
        for h in history
    )
