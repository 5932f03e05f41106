"""Request/reply for the hot path: journal writes, task publishes and confirmed acks.

Every task costs the replica several awaited NATS requests, and nats-py's ``request()`` spends
more Python CPU on each than nats-server does: a random token from ``os.urandom`` per call, a
done-callback, ``asyncio.wait_for`` with its extra future, and for JetStream a ``PubAck``
dataclass built by reflection. Here one wildcard inbox carries every reply (read inline, see
``hub.nats.inline``), tokens come from a counter, one sweep bounds every wait (a timer per
request cost 3 us to arm and cancel, five times a task), and a publish ack is read as plain
JSON. The errors raised are nats-py's own, so ``hub.nats.errors`` treats them as it treats
nats-py's.
"""

from __future__ import annotations

import asyncio
import itertools

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from hub.nats.inline import subscribe_inline

__all__ = ("Requests",)


#: How often waiting requests are checked against their deadlines: a request times out up to
#: this late, which no caller can tell from a slow answer.
SWEEP_S = 0.05


class Requests:
    """Requests over one connection; the inbox subscription is made on first use (and nats-py
    renews it after a reconnect)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._prefix = ""
        self._waiting: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        self._tokens = itertools.count()
        self._subscribing = asyncio.Lock()
        self._sweep: asyncio.TimerHandle | None = None

    async def _subscribe(self) -> None:
        async with self._subscribing:
            if not self._prefix:
                prefix = self.nc.new_inbox() + "."
                await subscribe_inline(self.nc, prefix + "*", self._reply)
                self._prefix = prefix

    def _reply(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(msg)

    def _expire(self) -> None:
        """Fail the requests past their deadline; re-armed while any are waiting."""
        now = asyncio.get_running_loop().time()
        for token, (future, deadline) in list(self._waiting.items()):
            if deadline <= now:
                del self._waiting[token]
                if not future.done():
                    future.set_exception(nats.errors.TimeoutError())
        self._sweep = None
        if self._waiting:
            self._sweep = asyncio.get_running_loop().call_later(SWEEP_S, self._expire)

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout_s: float,
        headers: dict[str, str] | None = None,
    ) -> Msg:
        if not self._prefix:
            await self._subscribe()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = (future, loop.time() + timeout_s)
        if self._sweep is None:
            self._sweep = loop.call_later(min(SWEEP_S, timeout_s), self._expire)
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            msg = await future
        finally:
            self._waiting.pop(token, None)
        if msg.headers and msg.headers.get("Status") == "503":
            raise nats.errors.NoRespondersError
        return msg

    async def publish(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout_s: float,
        headers: dict[str, str] | None = None,
    ) -> int:
        """A JetStream publish: the stream sequence it was stored at (or, for a duplicate
        message id, the original's), or the stream's error as nats-py raises it."""
        try:
            msg = await self.request(subject, payload, timeout_s=timeout_s, headers=headers)
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        answer = orjson.loads(msg.data)
        if "error" in answer:
            nats.js.errors.APIError.from_error(answer["error"])  # raises
        return int(answer["seq"])

    async def stream_subjects(
        self, stream: str, filter_subject: str, *, timeout_s: float
    ) -> dict[str, int]:
        """The subjects under ``filter_subject`` that hold messages in ``stream``, with their
        counts, from stream-info requests (a page of up to 100,000 subjects each): no consumer.

        For a bucket's keys this replaces nats-py's ``KeyValue.keys()``, whose watcher can
        answer "no keys" while the keys are in flight to it (nats-io/nats.py#842). A key's
        delete marker is a message too: such a key is listed, and reads as deleted.
        """
        out: dict[str, int] = {}
        while True:
            body = orjson.dumps({"subjects_filter": filter_subject, "offset": len(out)})
            msg = await self.request(f"$JS.API.STREAM.INFO.{stream}", body, timeout_s=timeout_s)
            answer = orjson.loads(msg.data)
            if "error" in answer:
                nats.js.errors.APIError.from_error(answer["error"])  # raises
            page = (answer.get("state") or {}).get("subjects") or {}
            out |= page
            if not page or len(out) >= answer.get("total", 0):
                return out
