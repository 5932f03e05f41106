"""Subscriptions whose handler runs as each message is read, not in a task of its own.

nats-py gives each callback subscription a task fed through a queue, so every message costs an
event-loop step before its callback runs. For handlers that only note the message and wake
someone (a request's reply, a doorbell, a journal echo, a pulled task) that step is pure
overhead: at one task in flight a replica took about 9 such steps per task, and 7 more for the
tasks ``Subscription.next_msg`` starts per pulled message.

``subscribe()`` also takes a ``future``: the read loop hands it each message itself (that is how
nats-py's old-style request gets its reply), calling only ``cancelled()`` and
``set_result(msg)``, once per message. ``Inline`` is such an object that calls a plain function
instead. ``tests/integration/test_inline.py`` pins that behaviour against the nats-py in use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ("Handler", "subscribe_inline")

log = logging.getLogger(__name__)

Handler = Callable[[Msg], None]


class Inline:
    """What nats-py calls for each message of a subscription made with ``future=``.

    ``headers=False``: the handler reads no headers, so ``hub.nats.connection.HubClient`` does
    not parse them (a doorbell carries the task message's whole header block).
    """

    __slots__ = ("handler", "headers")

    def __init__(self, handler: Handler, *, headers: bool = True) -> None:
        self.handler, self.headers = handler, headers

    def cancelled(self) -> bool:
        return False

    def set_result(self, msg: Msg) -> None:
        # Raising here would reach nats-py's read loop, which treats it as a broken connection.
        try:
            self.handler(msg)
        except Exception:
            log.exception("handler for %s failed", msg.subject)


async def subscribe_inline(
    nc: NATS, subject: str, handler: Handler, *, headers: bool = True
) -> Subscription:
    """Subscribe with a plain function run by the read loop for each message.

    The handler must not block: it runs between reads of the socket. No queue stands between
    it and the connection, so no message is dropped as a slow consumer's. ``headers=False``
    may leave ``msg.headers`` empty.
    """
    return await nc.subscribe(subject, future=cast(Any, Inline(handler, headers=headers)))
