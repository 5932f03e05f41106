from hub.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskRef(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_id", "capabilities", "slots", "running", "kinds")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    running: _containers.RepeatedCompositeFieldContainer[TaskRef]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., running: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class Decline(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("running", "free_slots")
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    running: _containers.RepeatedCompositeFieldContainer[TaskRef]
    free_slots: int
    def __init__(self, running: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., free_slots: _Optional[int] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("task_id", "attempt", "stream", "data", "dropped", "tail")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    stream: str
    data: bytes
    dropped: int
    tail: bytes
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., stream: _Optional[str] = ..., data: _Optional[bytes] = ..., dropped: _Optional[int] = ..., tail: _Optional[bytes] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("task_id", "attempt", "ok", "result", "error", "retry", "stdout", "thoughts")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    THOUGHTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    ok: bool
    result: bytes
    error: str
    retry: bool
    stdout: _common_pb2.Buffer
    thoughts: _common_pb2.Buffer
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., ok: _Optional[bool] = ..., result: _Optional[bytes] = ..., error: _Optional[str] = ..., retry: _Optional[bool] = ..., stdout: _Optional[_Union[_common_pb2.Buffer, _Mapping]] = ..., thoughts: _Optional[_Union[_common_pb2.Buffer, _Mapping]] = ...) -> None: ...

class HandBack(_message.Message):
    __slots__ = ("task_id", "attempt", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class NodeMessage(_message.Message):
    __slots__ = ("ref", "hello", "claim", "decline", "heartbeat", "output", "result", "hand_back", "batch")
    REF_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    DECLINE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    HAND_BACK_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    ref: int
    hello: Hello
    claim: Claim
    decline: Decline
    heartbeat: Heartbeat
    output: Output
    result: Result
    hand_back: HandBack
    batch: NodeBatch
    def __init__(self, ref: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., claim: _Optional[_Union[Claim, _Mapping]] = ..., decline: _Optional[_Union[Decline, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., hand_back: _Optional[_Union[HandBack, _Mapping]] = ..., batch: _Optional[_Union[NodeBatch, _Mapping]] = ...) -> None: ...

class NodeBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[NodeMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[NodeMessage, _Mapping]]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("replica_id", "heartbeat_s", "lease_s", "kept", "lost", "journal_head_bytes", "journal_tail_bytes")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_S_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_HEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_TAIL_BYTES_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    heartbeat_s: float
    lease_s: float
    kept: _containers.RepeatedCompositeFieldContainer[TaskRef]
    lost: _containers.RepeatedCompositeFieldContainer[TaskRef]
    journal_head_bytes: int
    journal_tail_bytes: int
    def __init__(self, replica_id: _Optional[str] = ..., heartbeat_s: _Optional[float] = ..., lease_s: _Optional[float] = ..., kept: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., lost: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., journal_head_bytes: _Optional[int] = ..., journal_tail_bytes: _Optional[int] = ...) -> None: ...

class Offer(_message.Message):
    __slots__ = ("task_id", "kind", "priority", "payload_bytes")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    priority: _common_pb2.Priority
    payload_bytes: int
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., payload_bytes: _Optional[int] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("task_id", "kind", "payload", "attempt", "lease_deadline", "timeout_s", "priority")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    payload: bytes
    attempt: int
    lease_deadline: float
    timeout_s: float
    priority: _common_pb2.Priority
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., payload: _Optional[bytes] = ..., attempt: _Optional[int] = ..., lease_deadline: _Optional[float] = ..., timeout_s: _Optional[float] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ...) -> None: ...

class Deny(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("task_id", "attempt", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("ref", "task_id")
    REF_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ref: int
    task_id: str
    def __init__(self, ref: _Optional[int] = ..., task_id: _Optional[str] = ...) -> None: ...

class Refused(_message.Message):
    __slots__ = ("ref", "task_id", "code", "message")
    REF_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ref: int
    task_id: str
    code: str
    message: str
    def __init__(self, ref: _Optional[int] = ..., task_id: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class HubMessage(_message.Message):
    __slots__ = ("welcome", "offer", "grant", "deny", "cancel", "done", "refused", "drain", "batch")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    offer: Offer
    grant: Grant
    deny: Deny
    cancel: Cancel
    done: Done
    refused: Refused
    drain: Drain
    batch: HubBatch
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., offer: _Optional[_Union[Offer, _Mapping]] = ..., grant: _Optional[_Union[Grant, _Mapping]] = ..., deny: _Optional[_Union[Deny, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., refused: _Optional[_Union[Refused, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., batch: _Optional[_Union[HubBatch, _Mapping]] = ...) -> None: ...

class HubBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[HubMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[HubMessage, _Mapping]]] = ...) -> None: ...
