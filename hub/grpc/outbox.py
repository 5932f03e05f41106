"""The send side of a long-lived gRPC stream: a FIFO whose writer takes everything queued at once.

A grpc.aio stream message costs tens of microseconds of CPU at each end whatever it carries, so
both ends of the node stream send what piled up while they were writing as one batch message
(``NodeBatch`` / ``HubBatch``): under load one write carries many grants or results, and an idle
stream still sends each message the moment it is queued (no added latency). Once a batch held
more than one message, the writer lets the loop turn once before taking the next, so results
finishing in that turn share its write (K=64: 6-15 % less CPU per task in replica, nodes
and agent; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

__all__ = ("BATCH_BYTES", "BATCH_MESSAGES", "Outbox", "messages", "unbatch")

T = TypeVar("T")

#: Bounds on one batch: well under the 16 MiB message limit, and small enough that a batch of
#: output does not hold a result back for long.
BATCH_MESSAGES = 256
BATCH_BYTES = 256 * 1024


class Outbox(Generic[T]):
    """Messages to send, and markers (the end of a session's sends) that are never batched."""

    def __init__(self, is_marker: Callable[[T], bool], size: Callable[[T], int]) -> None:
        self._items: deque[tuple[T, int]] = deque()  # (item, its size, measured once)
        self._ready = asyncio.Event()
        self._is_marker, self._size = is_marker, size
        #: Bytes queued and not yet taken by the writer: what a producer that can wait or
        #: fold (a node's output) checks before adding more.
        self.queued_bytes = 0
        self._busy = False  # the last batch held more than one message

    @staticmethod
    def of_messages() -> Outbox[Any]:
        """Protobuf messages, and ``None`` as the marker that ends the stream."""
        return Outbox[Any](
            is_marker=lambda m: m is None, size=lambda m: 0 if m is None else m.ByteSize()
        )

    def put_nowait(self, item: T) -> None:
        size = self._size(item)
        self._items.append((item, size))
        self.queued_bytes += size
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)

    async def get_batch(self) -> list[T]:
        """A marker alone, or the messages queued up to the next marker (within the bounds)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        if self._busy:
            # The last batch had company: let the rest of this turn of the loop add theirs.
            await asyncio.sleep(0)
        first, size = self._items.popleft()
        if self._is_marker(first):
            return [first]
        batch = [first]
        while self._items and len(batch) < BATCH_MESSAGES and size < BATCH_BYTES:
            item, item_size = self._items[0]
            if self._is_marker(item):
                break
            self._items.popleft()
            batch.append(item)
            size += item_size
        self.queued_bytes -= size
        self._busy = len(batch) > 1
        return batch


def messages(batch: Sequence[T | None]) -> list[T]:
    """A batch that does not start with the ``None`` marker holds no marker at all: a marker
    is only ever returned alone (``get_batch``)."""
    return cast(list[T], batch)


def unbatch(message: Any) -> Sequence[Any]:
    """The messages a received NodeMessage or HubMessage carries (a batch's, or itself)."""
    return message.batch.messages if message.WhichOneof("msg") == "batch" else (message,)
