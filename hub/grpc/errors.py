"""HubError -> gRPC status, in one table; nothing else in the facade chooses a status code."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from hub import errors

__all__ = ("CODES", "code_for", "grpc_errors", "grpc_stream_errors", "status_for")

log = logging.getLogger(__name__)

CODES: dict[type[errors.HubError], grpc.StatusCode] = {
    errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.InvalidTask: grpc.StatusCode.INVALID_ARGUMENT,
    errors.DuplicateTask: grpc.StatusCode.ALREADY_EXISTS,
    errors.TaskNotFound: grpc.StatusCode.NOT_FOUND,
    errors.TaskExpired: grpc.StatusCode.NOT_FOUND,
    errors.StaleAttempt: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AlreadyFinished: grpc.StatusCode.FAILED_PRECONDITION,
    errors.WrongState: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotTaskOwner: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.LimitReached: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Conflict: grpc.StatusCode.ABORTED,
}


def code_for(exc: BaseException) -> grpc.StatusCode:
    """The most specific mapping along the exception's class hierarchy; INTERNAL otherwise."""
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return grpc.StatusCode.INTERNAL


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and details a client sees for ``exc``; an internal error is logged here and
    reaches the client without its traceback."""
    if isinstance(exc, errors.HubError):
        return code_for(exc), str(exc)
    log.exception("internal error", exc_info=exc)
    return code_for(exc), "internal error (logged by the hub)"


R = TypeVar("R")
Handler = Callable[..., Awaitable[R]]


def grpc_errors(handler: Handler[R]) -> Handler[R]:
    """Abort a unary call with the mapped status; never a traceback to the client."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await context.abort(*status_for(exc))
            raise AssertionError("unreachable") from exc

    return wrapped


def grpc_stream_errors(
    handler: Callable[..., AsyncIterator[R]],
) -> Callable[..., AsyncIterator[R]]:
    """The same for server-streaming calls (async generators)."""

    @functools.wraps(handler)
    async def wrapped(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in handler(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await context.abort(*status_for(exc))

    return wrapped
