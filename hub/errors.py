"""The hub's exceptions: one root, leaves named for the condition; no grpc or nats imports.

::

    HubError
    ├── InvalidSettings      start-up configuration is wrong
    ├── InvalidTask          a request is malformed (bad id, kind, priority, route, ...)
    │   └── PayloadTooLarge
    ├── DuplicateTask        a task id already names a different task
    ├── TaskNotFound
    ├── TaskExpired          the task expired unclaimed, or its result outlived the result TTL
    ├── StaleAttempt         an attempt number that is no longer the task's current one (fencing)
    ├── AlreadyFinished      the task already has a terminal result (first result wins)
    ├── WrongState           the operation does not apply in the task's current state
    ├── NotTaskOwner         a node acting on a task it does not hold
    ├── Unauthenticated
    ├── Unavailable          NATS (or the hub) cannot be reached right now
    ├── LimitReached         a JetStream limit the hub sets (a HUB_* setting) refused a new object
    ├── ServerFailed         the embedded nats-server could not start or died
    ├── Conflict             internal: a compare-and-set lost a race; retried, never shown
    └── ConsumerGone         internal: a route's consumer was removed; made again, never shown
"""

from __future__ import annotations

__all__ = (
    "AlreadyFinished",
    "Conflict",
    "ConsumerGone",
    "DuplicateTask",
    "HubError",
    "InvalidSettings",
    "InvalidTask",
    "LimitReached",
    "NotTaskOwner",
    "PayloadTooLarge",
    "ServerFailed",
    "StaleAttempt",
    "TaskExpired",
    "TaskNotFound",
    "Unauthenticated",
    "Unavailable",
    "WrongState",
)


class HubError(Exception):
    """Root of every error the hub raises on purpose."""


class InvalidSettings(HubError):
    """Raised when settings fail validation; the message names each bad ``HUB_*`` setting."""


class InvalidTask(HubError):
    """Raised when a request is malformed; nothing was changed."""


class PayloadTooLarge(InvalidTask):
    """Raised when a payload, result or output chunk exceeds its configured size."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes; the limit is {limit} bytes")
        self.size, self.limit = size, limit


class DuplicateTask(HubError):
    """Raised when a submit reuses a task id for a different kind, priority or route."""

    def __init__(self, task_id: str, what: str) -> None:
        super().__init__(f"task id {task_id!r} is already used by a task with another {what}")
        self.task_id = task_id


class TaskNotFound(HubError):
    """Raised when no task has this id (never submitted, or forgotten long ago)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} not found")
        self.task_id = task_id


class TaskExpired(HubError):
    """Raised when a task expired unclaimed or its result is past the result TTL."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id!r} has expired")
        self.task_id = task_id


class StaleAttempt(HubError):
    """Raised when a node speaks for an attempt that was superseded (it has been fenced)."""

    def __init__(self, task_id: str, attempt: int, current: int) -> None:
        super().__init__(
            f"task {task_id!r}: attempt {attempt} is stale (current attempt is {current}); "
            "stop working on it"
        )
        self.task_id, self.attempt, self.current = task_id, attempt, current


class AlreadyFinished(HubError):
    """Raised when a task already has its terminal result; the first one stands."""

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(f"task {task_id!r} already finished as {status}")
        self.task_id, self.status = task_id, status


class WrongState(HubError):
    """Raised when an operation does not apply to the task's current state."""

    def __init__(self, task_id: str, status: str, operation: str) -> None:
        super().__init__(f"cannot {operation} task {task_id!r}: it is {status}")
        self.task_id, self.status = task_id, status


class NotTaskOwner(HubError):
    """Raised when a node acts on a task that another node holds."""

    def __init__(self, task_id: str, node_id: str) -> None:
        super().__init__(f"node {node_id!r} does not hold task {task_id!r}")


class Unauthenticated(HubError):
    """Raised when a caller presents no credentials or wrong ones."""


class Unavailable(HubError):
    """Raised when NATS cannot be reached or does not answer in time; safe to retry."""


class LimitReached(HubError):
    """Raised when JetStream refuses a new object at a limit the hub sets from a setting (the
    consumers of a priority's stream); the message names the ``HUB_*`` setting to raise."""


class ServerFailed(HubError):
    """Raised when the embedded nats-server cannot start or exits."""


class Conflict(HubError):
    """Raised internally when a compare-and-set keeps losing races beyond its retry budget."""


class ConsumerGone(HubError):
    """Raised internally when a pull finds its consumer gone: nats-server removes a node's or
    a capability set's consumer after a day without pulls, or an operator removed it."""
