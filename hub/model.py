"""The task's data: priorities, routes, statuses, the spec an agent submits and the journal record.

Everything here is a frozen value with a JSON codec; the journal stores these as readable JSON so
that ``nats kv get hub_journal task.<id>`` shows a person what happened.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import functools
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self, TypeVar

import orjson

from hub.errors import InvalidTask, PayloadTooLarge

__all__ = (
    "ACTIVE",
    "TERMINAL",
    "AttemptInfo",
    "Priority",
    "Route",
    "Status",
    "TaskRecord",
    "TaskSpec",
    "decode_bytes",
    "encode_bytes",
    "evolve",
    "new_task_id",
    "route_of",
    "validate_node_id",
    "validate_task_id",
)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CAP = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_KIND = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
MAX_CAPABILITIES = 8
MAX_HISTORY = 20


class Priority(enum.IntEnum):
    """Lower value is served first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise InvalidTask(f"priority {value} is not one of 0..3") from None
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(p.label for p in cls)
            raise InvalidTask(f"priority {value!r} is not one of {names}") from None


class Status(enum.StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"
    EXPIRED = "expired"


ACTIVE = frozenset({Status.CLAIMED, Status.RUNNING})
TERMINAL = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.DEAD, Status.EXPIRED}
)


def validate_node_id(node_id: str) -> str:
    if not _TOKEN.match(node_id or ""):
        raise InvalidTask(f"node id {node_id!r} must be 1-64 of A-Z a-z 0-9 _ -")
    return node_id


def validate_task_id(task_id: str) -> str:
    """A task id names NATS subjects and KV keys: an empty one, a dot or a wildcard (``*``,
    ``>``) would read or purge other tasks' data."""
    if not _TOKEN.match(task_id or ""):
        raise InvalidTask(f"task id {task_id!r} must be 1-64 of A-Z a-z 0-9 _ -")
    return task_id


def new_task_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Route:
    """Who may run a task: any node, exactly one node, or nodes with all these capabilities."""

    node: str = ""
    capabilities: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.node and self.capabilities:
            raise InvalidTask("a route names a node or capabilities, not both")
        if self.node:
            validate_node_id(self.node)
        if len(self.capabilities) > MAX_CAPABILITIES:
            raise InvalidTask(f"at most {MAX_CAPABILITIES} required capabilities")
        for cap in self.capabilities:
            if not _CAP.match(cap):
                raise InvalidTask(f"capability {cap!r} must match {_CAP.pattern}")

    @property
    def kind(self) -> str:
        return "node" if self.node else "cap" if self.capabilities else "any"

    def can_run_on(self, node_id: str, capabilities: frozenset[str]) -> bool:
        if self.node:
            return self.node == node_id
        return self.capabilities <= capabilities

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "capabilities": sorted(self.capabilities)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Route:
        return route_of(data.get("node", ""), tuple(data.get("capabilities", ())))


@functools.lru_cache(maxsize=1024)
def route_of(node: str, capabilities: tuple[str, ...]) -> Route:
    """Routes repeat across records and requests (most are "any"): validate and build each
    one once."""
    return Route(node=node, capabilities=frozenset(capabilities))


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What an agent submits; validated on construction so nothing malformed reaches NATS."""

    kind: str
    payload: bytes = b""
    priority: Priority = Priority.NORMAL
    route: Route = field(default_factory=Route)
    id: str = ""
    max_attempts: int = 0
    timeout_s: float = 0.0

    def validated(self, max_payload_bytes: int, default_attempts: int) -> TaskSpec:
        """Return the spec with defaults filled in, or raise InvalidTask naming the field."""
        task_id = self.id or new_task_id()
        if not _TOKEN.match(task_id):
            raise InvalidTask(f"task id {task_id!r} must be 1-64 of A-Z a-z 0-9 _ -")
        if not _KIND.match(self.kind or ""):
            raise InvalidTask(f"kind {self.kind!r} must be 1-64 of A-Z a-z 0-9 _ . : / -")
        if len(self.payload) > max_payload_bytes:
            raise PayloadTooLarge("payload", len(self.payload), max_payload_bytes)
        if not 0 <= self.max_attempts <= 1000:
            raise InvalidTask("max_attempts must be between 1 and 1000 (0 = the default)")
        if not 0 <= self.timeout_s <= 7 * 86400:
            raise InvalidTask("timeout_s must be between 0 and 7 days (0 = none)")
        return evolve(
            self,
            id=task_id,
            priority=Priority.parse(self.priority),
            max_attempts=self.max_attempts or default_attempts,
        )


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One line of a task's attempt history (kept in the record and carried into the DLQ)."""

    attempt: int
    node: str
    started_at: float
    ended_at: float = 0.0
    outcome: str = ""
    error: str = ""


_V = TypeVar("_V")

if TYPE_CHECKING:  # (so that mypy checks each call's field names and types as for replace)
    from dataclasses import replace as evolve
else:

    def evolve(value: _V, /, **changes: Any) -> _V:
        """``dataclasses.replace`` for the frozen, slotted values of this module, in 40 % of
        its time (5 against 13 us here): it skips the per-field walk and ``__init__``, which
        none of these validates in (``Route``, which does, is never evolved). A record is
        copied at every journal write, a task's history entry at its end."""
        cls = type(value)
        new = object.__new__(cls)
        used = 0
        for name in cls.__slots__:
            if name in changes:
                used += 1
                object.__setattr__(new, name, changes[name])
            else:
                object.__setattr__(new, name, getattr(value, name))
        if used != len(changes):
            unknown = sorted(set(changes) - set(cls.__slots__))
            raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
        return new


def encode_bytes(data: bytes) -> str:
    """Bytes as JSON text: readable UTF-8 where possible, exact always (bad bytes escape)."""
    return data.decode("utf-8", "surrogateescape")


def decode_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """The journal's record of one task: ``task.<id>`` in ``hub_journal``.

    ``attempt`` is the fencing epoch: it only grows, across redeliveries and DLQ replays.
    ``tries`` counts attempts within the current generation (what ``max_attempts`` bounds);
    ``generation`` grows with each replay and is part of the message id, so a replay inside the
    dedupe window is not dropped as a duplicate.
    """

    id: str
    kind: str
    priority: Priority
    route: Route
    status: Status
    created_at: float
    updated_at: float
    max_attempts: int
    timeout_s: float = 0.0
    payload_bytes: int = 0
    generation: int = 1
    queued_at: float = 0.0
    attempt: int = 0
    tries: int = 0
    deliveries: int = 0
    seq: int = 0
    node: str = ""
    ack_subject: str = ""
    lease_deadline: float = 0.0
    claimed_at: float = 0.0
    finished_at: float = 0.0
    result: bytes = b""
    error: str = ""
    history: tuple[AttemptInfo, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_json(self) -> bytes:
        # (field names listed once, below the class: dataclasses.fields() and asdict() per
        # call were a tenth of encoding a record, which every journal write does; orjson
        # encodes in a tenth of the standard library's time and decodes in a quarter)
        data = {name: getattr(self, name) for name in _RECORD_FIELDS}
        data["priority"] = self.priority.label
        data["route"] = self.route.to_json()
        data["status"] = self.status.value
        data["result"], data["result_encoding"] = _result_text(self.result)
        data["history"] = [{n: getattr(h, n) for n in _ATTEMPT_FIELDS} for h in self.history]
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> Self:
        data = orjson.loads(raw)
        data["priority"] = Priority.parse(data["priority"])
        data["route"] = Route.from_json(data["route"])
        data["status"] = Status(data["status"])
        data["result"] = _result_bytes(data.get("result", ""), data.get("result_encoding", "utf-8"))
        data["history"] = tuple(AttemptInfo(**h) for h in data.get("history", ()))
        return cls(**{k: v for k, v in data.items() if k in _RECORD_FIELD_SET})


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord))
_RECORD_FIELD_SET = frozenset(_RECORD_FIELDS)
_ATTEMPT_FIELDS = tuple(f.name for f in dataclasses.fields(AttemptInfo))


def _result_text(result: bytes) -> tuple[str, str]:
    """A result as JSON text: UTF-8 when it is (readable), base64 otherwise (compact, exact)."""
    try:
        return result.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(result).decode(), "base64"


def _result_bytes(text: str, encoding: str) -> bytes:
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            raise InvalidTask("journal record has a corrupt base64 result") from None
    return text.encode()
