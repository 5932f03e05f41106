"""Pure translation between protobuf messages and the hub's model; validation on the way in."""

from __future__ import annotations

from hub.buffers import HeadTail
from hub.config import Settings
from hub.errors import InvalidTask
from hub.model import AttemptInfo, Priority, Route, Status, TaskRecord, TaskSpec, route_of
from hub.queue import DeadLetter
from hub.v1 import common_pb2 as pb
from hub.v1 import tasks_pb2

__all__ = (
    "buffer_from_pb",
    "buffer_to_pb",
    "dead_to_pb",
    "expired_task",
    "priority_from_pb",
    "priority_name",
    "priority_to_pb",
    "record_to_pb",
    "route_from_pb",
    "spec_from_pb",
    "status_name",
)


def priority_from_pb(value: int) -> Priority:
    """Proto enums are 1-based (0 is "unspecified", which means normal)."""
    if value == pb.PRIORITY_UNSPECIFIED:
        return Priority.NORMAL
    if value not in pb.Priority.values():
        raise InvalidTask(f"unknown priority {value}")
    return Priority(value - 1)


#: The proto enum value of each model enum member (same names; proto numbers are 1-based).
_PRIORITY_PB: dict[Priority, pb.Priority] = {p: getattr(pb, p.name) for p in Priority}
_STATUS_PB: dict[Status, pb.Status] = {s: getattr(pb, s.name) for s in Status}


def priority_to_pb(priority: Priority) -> pb.Priority:
    return _PRIORITY_PB[priority]


def route_from_pb(route: pb.Route) -> Route:
    return route_of(route.node_id, tuple(route.capabilities))


def spec_from_pb(request: tasks_pb2.SubmitRequest) -> TaskSpec:
    """A SubmitRequest as a TaskSpec (validated later against the hub's limits)."""
    return TaskSpec(
        kind=request.kind,
        payload=request.payload,
        priority=priority_from_pb(request.priority),
        route=route_from_pb(request.route),
        id=request.task_id,
        max_attempts=request.max_attempts,
        timeout_s=request.timeout_s,
    )


def _attempt(info: AttemptInfo) -> pb.Attempt:
    return pb.Attempt(
        attempt=info.attempt,
        node_id=info.node,
        started_at=info.started_at,
        ended_at=info.ended_at,
        outcome=info.outcome,
        error=info.error,
    )


def buffer_to_pb(buffer: HeadTail) -> pb.Buffer:
    return pb.Buffer(
        head=buffer.head,
        tail=buffer.tail,
        total_bytes=buffer.total,
        dropped_bytes=buffer.dropped,
        attempt=buffer.attempt,
    )


def buffer_from_pb(buffer: pb.Buffer, attempt: int, settings: Settings) -> HeadTail:
    """A node's head+tail of its output, checked against the hub's own trimming rules."""
    head_max, tail_max = settings.journal_head_bytes, settings.journal_tail_bytes
    kept = len(buffer.head) + len(buffer.tail)
    if (
        len(buffer.head) > head_max
        or len(buffer.tail) > tail_max
        or buffer.total_bytes < kept
        or (
            buffer.total_bytes > kept
            and (len(buffer.head), len(buffer.tail)) != (head_max, tail_max)
        )
    ):
        raise InvalidTask(
            f"output buffer does not follow head {head_max} + tail {tail_max} trimming"
        )
    return HeadTail(buffer.head, buffer.tail, buffer.total_bytes, attempt)


def status_name(value: int) -> str:
    """A proto Status as the model's name ("succeeded"), for people and JSON."""
    name = pb.Status.Name(value)
    return Status[name].value if name in Status.__members__ else "unspecified"


def priority_name(value: int) -> str:
    return priority_from_pb(value).label


def record_to_pb(
    record: TaskRecord, stdout: HeadTail | None = None, thoughts: HeadTail | None = None
) -> pb.Task:
    task = pb.Task(
        task_id=record.id,
        kind=record.kind,
        priority=priority_to_pb(record.priority),
        route=pb.Route(node_id=record.route.node, capabilities=sorted(record.route.capabilities)),
        status=_STATUS_PB[record.status],
        node_id=record.node,
        attempt=record.attempt,
        tries=record.tries,
        max_attempts=record.max_attempts,
        generation=record.generation,
        result=record.result,
        error=record.error,
        created_at=record.created_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
        lease_deadline=record.lease_deadline,
        history=[_attempt(h) for h in record.history],
        timeout_s=record.timeout_s,
        payload_bytes=record.payload_bytes,
    )
    if stdout is not None:
        task.stdout.CopyFrom(buffer_to_pb(stdout))
    if thoughts is not None:
        task.thoughts.CopyFrom(buffer_to_pb(thoughts))
    return task


def expired_task(task_id: str) -> pb.Task:
    """What is left of a task past its result TTL: its id and that it expired."""
    return pb.Task(task_id=task_id, status=_STATUS_PB[Status.EXPIRED], error="result expired")


def dead_to_pb(letter: DeadLetter) -> tasks_pb2.DeadTask:
    return tasks_pb2.DeadTask(
        task_id=letter.task_id,
        kind=letter.kind,
        error=letter.error,
        generation=letter.generation,
        history=[_attempt(AttemptInfo(**h)) for h in letter.history],  # type: ignore[arg-type]
        dead_at=letter.dead_at,
        payload_bytes=len(letter.payload),
    )
