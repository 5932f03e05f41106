from hub.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitRequest(_message.Message):
    __slots__ = ("task_id", "kind", "payload", "priority", "route", "max_attempts", "timeout_s", "wait_s")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    payload: bytes
    priority: _common_pb2.Priority
    route: _common_pb2.Route
    max_attempts: int
    timeout_s: float
    wait_s: float
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., payload: _Optional[bytes] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., route: _Optional[_Union[_common_pb2.Route, _Mapping]] = ..., max_attempts: _Optional[int] = ..., timeout_s: _Optional[float] = ..., wait_s: _Optional[float] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("task", "created", "done")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    created: bool
    done: bool
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., created: _Optional[bool] = ..., done: _Optional[bool] = ...) -> None: ...

class SubmitCall(_message.Message):
    __slots__ = ("ref", "request")
    REF_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    ref: int
    request: SubmitRequest
    def __init__(self, ref: _Optional[int] = ..., request: _Optional[_Union[SubmitRequest, _Mapping]] = ...) -> None: ...

class SubmitCalls(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[SubmitCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[SubmitCall, _Mapping]]] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("ref", "response", "code", "message")
    REF_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ref: int
    response: SubmitResponse
    code: str
    message: str
    def __init__(self, ref: _Optional[int] = ..., response: _Optional[_Union[SubmitResponse, _Mapping]] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SubmitReplies(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[SubmitReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[SubmitReply, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("task_id", "include_output")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    include_output: bool
    def __init__(self, task_id: _Optional[str] = ..., include_output: _Optional[bool] = ...) -> None: ...

class WaitRequest(_message.Message):
    __slots__ = ("task_id", "timeout_s", "include_output")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    timeout_s: float
    include_output: bool
    def __init__(self, task_id: _Optional[str] = ..., timeout_s: _Optional[float] = ..., include_output: _Optional[bool] = ...) -> None: ...

class WaitResponse(_message.Message):
    __slots__ = ("task", "done")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    done: bool
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., done: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("task_id", "stdout_offset", "thoughts_offset")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STDOUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    THOUGHTS_OFFSET_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    stdout_offset: int
    thoughts_offset: int
    def __init__(self, task_id: _Optional[str] = ..., stdout_offset: _Optional[int] = ..., thoughts_offset: _Optional[int] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("stream", "data", "offset", "skipped", "attempt")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    stream: str
    data: bytes
    offset: int
    skipped: int
    attempt: int
    def __init__(self, stream: _Optional[str] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ..., skipped: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("task", "output")
    TASK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    task: _common_pb2.Task
    output: OutputChunk
    def __init__(self, task: _Optional[_Union[_common_pb2.Task, _Mapping]] = ..., output: _Optional[_Union[OutputChunk, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class PoolRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolCounts(_message.Message):
    __slots__ = ("queued", "oldest_age_s", "in_flight", "dead")
    class QueuedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class OldestAgeSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_AGE_S_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    queued: _containers.ScalarMap[str, int]
    oldest_age_s: _containers.ScalarMap[str, float]
    in_flight: int
    dead: int
    def __init__(self, queued: _Optional[_Mapping[str, int]] = ..., oldest_age_s: _Optional[_Mapping[str, float]] = ..., in_flight: _Optional[int] = ..., dead: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "capabilities", "slots", "free", "replica", "seen_at", "tasks")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    free: int
    replica: str
    seen_at: float
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., free: _Optional[int] = ..., replica: _Optional[str] = ..., seen_at: _Optional[float] = ..., tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class DeadTask(_message.Message):
    __slots__ = ("task_id", "kind", "error", "generation", "history", "dead_at", "payload_bytes")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    DEAD_AT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    error: str
    generation: int
    history: _containers.RepeatedCompositeFieldContainer[_common_pb2.Attempt]
    dead_at: float
    payload_bytes: int
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., error: _Optional[str] = ..., generation: _Optional[int] = ..., history: _Optional[_Iterable[_Union[_common_pb2.Attempt, _Mapping]]] = ..., dead_at: _Optional[float] = ..., payload_bytes: _Optional[int] = ...) -> None: ...

class ListDeadRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListDeadResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[DeadTask]
    def __init__(self, tasks: _Optional[_Iterable[_Union[DeadTask, _Mapping]]] = ...) -> None: ...

class ReplayRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class PurgeDeadRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class PurgeDeadResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...
