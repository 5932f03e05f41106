from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    CRITICAL: _ClassVar[Priority]
    HIGH: _ClassVar[Priority]
    NORMAL: _ClassVar[Priority]
    LOW: _ClassVar[Priority]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    QUEUED: _ClassVar[Status]
    CLAIMED: _ClassVar[Status]
    RUNNING: _ClassVar[Status]
    SUCCEEDED: _ClassVar[Status]
    FAILED: _ClassVar[Status]
    CANCELLED: _ClassVar[Status]
    DEAD: _ClassVar[Status]
    EXPIRED: _ClassVar[Status]
PRIORITY_UNSPECIFIED: Priority
CRITICAL: Priority
HIGH: Priority
NORMAL: Priority
LOW: Priority
STATUS_UNSPECIFIED: Status
QUEUED: Status
CLAIMED: Status
RUNNING: Status
SUCCEEDED: Status
FAILED: Status
CANCELLED: Status
DEAD: Status
EXPIRED: Status

class Route(_message.Message):
    __slots__ = ("node_id", "capabilities")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class Buffer(_message.Message):
    __slots__ = ("head", "tail", "total_bytes", "dropped_bytes", "attempt")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    head: bytes
    tail: bytes
    total_bytes: int
    dropped_bytes: int
    attempt: int
    def __init__(self, head: _Optional[bytes] = ..., tail: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., dropped_bytes: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("attempt", "node_id", "started_at", "ended_at", "outcome", "error")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    node_id: str
    started_at: float
    ended_at: float
    outcome: str
    error: str
    def __init__(self, attempt: _Optional[int] = ..., node_id: _Optional[str] = ..., started_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., outcome: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "kind", "priority", "route", "status", "node_id", "attempt", "tries", "max_attempts", "generation", "result", "error", "created_at", "updated_at", "finished_at", "lease_deadline", "history", "stdout", "thoughts", "timeout_s", "payload_bytes")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    LEASE_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    THOUGHTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    priority: Priority
    route: Route
    status: Status
    node_id: str
    attempt: int
    tries: int
    max_attempts: int
    generation: int
    result: bytes
    error: str
    created_at: float
    updated_at: float
    finished_at: float
    lease_deadline: float
    history: _containers.RepeatedCompositeFieldContainer[Attempt]
    stdout: Buffer
    thoughts: Buffer
    timeout_s: float
    payload_bytes: int
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., priority: _Optional[_Union[Priority, str]] = ..., route: _Optional[_Union[Route, _Mapping]] = ..., status: _Optional[_Union[Status, str]] = ..., node_id: _Optional[str] = ..., attempt: _Optional[int] = ..., tries: _Optional[int] = ..., max_attempts: _Optional[int] = ..., generation: _Optional[int] = ..., result: _Optional[bytes] = ..., error: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., lease_deadline: _Optional[float] = ..., history: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., stdout: _Optional[_Union[Buffer, _Mapping]] = ..., thoughts: _Optional[_Union[Buffer, _Mapping]] = ..., timeout_s: _Optional[float] = ..., payload_bytes: _Optional[int] = ...) -> None: ...
