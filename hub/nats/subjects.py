"""Every NATS name the hub uses, spelled once, and pure helpers to build and parse them.

Operators, scripts and the ``nats`` CLI depend on these names (see DESIGN.md "Public surface").
Tasks are stored on ``hub.tasks.<priority>.<route>``: per-route subjects let work-queue consumers
have disjoint filters, and one subject per route (not per task) keeps nats-server's cost per
fetch flat however deep the backlog (with a subject per task, fetch+ack cost doubled at 100k
queued). The task id travels in a header; one queued message is removed by its sequence.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from hub.errors import InvalidTask
from hub.model import Priority, Route, validate_task_id

__all__ = (
    "DLQ_STREAM",
    "HEADER_GENERATION",
    "HEADER_KIND",
    "HEADER_MSG_ID",
    "HEADER_RECORD",
    "HEADER_TASK",
    "JOURNAL_BUCKET",
    "NODES_BUCKET",
    "AckInfo",
    "bell_subject",
    "buffer_key",
    "cancel_subject",
    "consumer_for",
    "dlq_subject",
    "journal_bucket",
    "journal_feed_subject",
    "journal_shard",
    "lock_key",
    "msg_id",
    "node_key",
    "parse_ack",
    "parse_task_subject",
    "record_key",
    "stream_name",
    "task_subject",
)

PREFIX = "hub"
DLQ_STREAM = "HUB_DLQ"
JOURNAL_BUCKET = "hub_journal"
NODES_BUCKET = "hub_nodes"
STREAMS = tuple(f"HUB_TASKS_{p.name}" for p in Priority)

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_TASK = "Hub-Task"
HEADER_KIND = "Hub-Kind"
HEADER_GENERATION = "Hub-Generation"
#: ``<revision> <record JSON>`` of the record as submitted: a first claim needs no journal read.
HEADER_RECORD = "Hub-Record"
HEADER_ERROR = "Hub-Error"


def stream_name(priority: Priority) -> str:
    return f"HUB_TASKS_{priority.name}"


def stream_subjects(priority: Priority) -> str:
    return f"{PREFIX}.tasks.{priority.label}.>"


def bell_subject(priority: Priority | None = None) -> str:
    """Where a stream republishes (headers only) each stored task: the dispatcher's doorbell."""
    return f"{PREFIX}.bell.{'*' if priority is None else priority.label}.>"


def _route_tokens(route: Route) -> str:
    if route.node:
        return f"node.{route.node}"
    if route.capabilities:
        return "cap." + "_".join(sorted(route.capabilities))
    return "any"


def task_subject(priority: Priority, route: Route) -> str:
    return f"{PREFIX}.tasks.{priority.label}.{_route_tokens(route)}"


def parse_task_subject(subject: str) -> tuple[Priority, Route]:
    """Inverse of task_subject; also accepts the doorbell form (``hub.bell.…``)."""
    parts = subject.split(".")
    if len(parts) < 4 or parts[0] != PREFIX or parts[1] not in ("tasks", "bell"):
        raise InvalidTask(f"not a task subject: {subject!r}")
    priority = Priority.parse(parts[2])
    kind, rest = parts[3], parts[4:]
    if kind == "any" and not rest:
        return priority, Route()
    if kind == "node" and len(rest) == 1:
        return priority, Route(node=rest[0])
    if kind == "cap" and len(rest) == 1:
        return priority, Route(capabilities=frozenset(rest[0].split("_")))
    raise InvalidTask(f"not a task subject: {subject!r}")


@dataclass(frozen=True, slots=True)
class ConsumerName:
    """A durable pull consumer on one priority stream, for one route."""

    priority: Priority
    route: Route

    @property
    def stream(self) -> str:
        return stream_name(self.priority)

    @property
    def durable(self) -> str:
        if self.route.node:
            return f"node_{self.route.node}"
        if self.route.capabilities:
            return "cap_" + "_".join(sorted(self.route.capabilities))
        return "any"

    @property
    def filter_subject(self) -> str:
        return task_subject(self.priority, self.route)


def consumer_for(priority: Priority, route: Route) -> ConsumerName:
    return ConsumerName(priority, route)


def msg_id(task_id: str, generation: int) -> str:
    """Per-generation message id: a DLQ replay inside the dedupe window is not a duplicate."""
    return f"{task_id}.{generation}"


def dlq_subject(task_id: str) -> str:
    return f"{PREFIX}.dlq.{task_id}"


def record_key(task_id: str) -> str:
    """The journal key of a task's record; InvalidTask for an id that is not one (a wildcard
    id would read another task's record)."""
    return f"task.{validate_task_id(task_id)}"


def buffer_key(task_id: str, name: str) -> str:
    validate_task_id(task_id)
    if name not in ("stdout", "thoughts"):
        raise InvalidTask(f"unknown buffer {name!r}; expected stdout or thoughts")
    return f"task.{task_id}.{name}"


def journal_bucket(shard: int) -> str:
    """Shard 0 is ``hub_journal`` itself, so a journal of one shard (the default) keeps the
    name operators and the ``nats`` CLI know."""
    return JOURNAL_BUCKET if shard == 0 else f"{JOURNAL_BUCKET}_{shard}"


def journal_shard(key: str, shards: int) -> int:
    """The shard of a journal key (``task.<id>[.<buffer>]``), by its task id, so a task's
    record and buffers share one bucket. With sync always, nats-server fsyncs each stream's
    writes one after another, so more buckets take more writes a second (docs/benchmarks.md,
    P2). The mapping is part of the stored layout: records written under one would not be
    found under another."""
    if shards == 1:
        return 0
    return zlib.crc32(key.split(".", 2)[1].encode()) % shards


def journal_feed_subject(key: str = ">") -> str:
    """Every journal bucket republishes each committed write here, with its revision."""
    return f"{PREFIX}.journal.{key}"


def cancel_subject(task_id: str) -> str:
    """Core (not stored) notice that a task was cancelled, for the replica holding its node."""
    return f"{PREFIX}.cancel.{task_id}"


def node_key(node_id: str) -> str:
    return f"node.{node_id}"


def lock_key(job: str) -> str:
    return f"lock.{job}"


@dataclass(frozen=True, slots=True)
class AckInfo:
    stream: str
    consumer: str
    deliveries: int
    stream_seq: int


def parse_ack(subject: str) -> AckInfo:
    """Parse a JetStream ack subject (v1 with 9 tokens, v2 with domain and account hash)."""
    parts = subject.split(".")
    if parts[:2] != ["$JS", "ACK"]:
        raise InvalidTask(f"not an ack subject: {subject!r}")
    if len(parts) == 9:
        stream, consumer, delivered, sseq = parts[2:6]
    elif len(parts) >= 11:
        stream, consumer, delivered, sseq = parts[4:8]
    else:
        raise InvalidTask(f"not an ack subject: {subject!r}")
    try:
        return AckInfo(stream, consumer, int(delivered), int(sseq))
    except ValueError:
        raise InvalidTask(f"not an ack subject: {subject!r}") from None
