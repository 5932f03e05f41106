"""Translate nats-py exceptions into HubError at one boundary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import nats.errors
import nats.js.errors

from hub.errors import Unavailable

__all__ = ("WRONG_LAST_SEQUENCE", "is_wrong_last_sequence", "nats_errors")

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


@contextlib.contextmanager
def nats_errors(what: str) -> Iterator[None]:
    """Raise Unavailable (retryable, a clear message) for anything that means NATS is away."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise Unavailable(f"NATS did not answer ({what}): {type(exc).__name__}") from exc
