"""Translate nats-py exceptions into HubError at one boundary."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import nats.errors
import nats.js.errors

from hub.errors import Unavailable

__all__ = ("WRONG_LAST_SEQUENCE", "is_wrong_last_sequence", "nats_errors", "retrying")

log = logging.getLogger(__name__)

#: Long enough to ride out a leader election (4-9 s measured on a loopback cluster).
RETRY_BUDGET_S = 15.0
RETRY_FIRST_S = 0.05
RETRY_MAX_DELAY_S = 1.0

T = TypeVar("T")

WRONG_LAST_SEQUENCE = 10071

_UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    TimeoutError,
)


def is_wrong_last_sequence(exc: BaseException) -> bool:
    """A compare-and-set that lost: another writer changed the key first."""
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == WRONG_LAST_SEQUENCE


def _unavailable(what: str, exc: BaseException) -> Unavailable:
    return Unavailable(f"NATS did not answer ({what}): {type(exc).__name__}")


@contextlib.contextmanager
def nats_errors(what: str) -> Iterator[None]:
    """Raise Unavailable (retryable, a clear message) for anything that means NATS is away."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise _unavailable(what, exc) from exc


async def retrying(
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    closed: Callable[[], bool] = lambda: False,
    budget_s: float = RETRY_BUDGET_S,
) -> T:
    """``call()`` until NATS answers, with backoff, for up to ``budget_s``.

    Only unavailability is retried (no responders, timeouts, a reconnect in progress: what a
    leader election or a server restart looks like); an answer, even an error, is final, and a
    closed connection (``closed()``) is a shutdown, not retried. Callers retry only calls that
    are safe to repeat: idempotent by message id, by compare-and-set, or by nature (acks).
    """
    delay = RETRY_FIRST_S
    deadline = time.monotonic() + budget_s
    while True:
        try:  # (not nats_errors(): a context manager per call was a tenth of this, per request)
            return await call()
        except _UNAVAILABLE as exc:
            if closed() or time.monotonic() + delay > deadline:
                raise _unavailable(what, exc) from exc
            log.debug("%s: %s; retrying in %.2f s", what, type(exc).__name__, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_DELAY_S)
