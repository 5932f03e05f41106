"""Connect to NATS (embedded or external) with reconnects that never give up."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats
import nats.errors
from nats.aio.client import Client as NATS

from hub.config import Settings
from hub.errors import Unavailable

__all__ = ("connect",)

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]


async def connect(
    urls: list[str],
    settings: Settings,
    *,
    name: str = "hub",
    on_reconnect: Callback | None = None,
) -> NATS:
    """A client that reconnects for ever; ``on_reconnect`` re-creates what a restart loses."""

    async def error_cb(exc: Exception) -> None:
        # The hub's subscriptions are read inline (hub.nats.inline): none has a queue to drop
        # a message from, so a slow consumer here is nats-server's, which disconnects it.
        log.debug("nats error: %s", exc)

    async def disconnected_cb() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats disconnected")

    async def reconnected_cb() -> None:
        log.warning("nats reconnected url=%s", nc.connected_url.netloc if nc.connected_url else "")
        if on_reconnect is not None:
            await on_reconnect()

    try:
        nc = await nats.connect(
            servers=urls,
            name=name,
            connect_timeout=settings.connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            allow_reconnect=True,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
        )
    except Exception as exc:
        raise Unavailable(f"cannot connect to NATS at {', '.join(urls)}: {exc}") from exc
    return nc
