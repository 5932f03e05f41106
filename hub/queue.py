"""Task messages in the priority work-queue streams and the dead-letter stream.

Only message-level operations live here (publish, pull, ack, extend, hand back, remove, move to
the DLQ); deciding *whether* to do them is the pool's job, after it checked the journal. An ack
subject is all that is needed to act on a delivery, so any replica can act on any task.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from hub.config import Settings
from hub.errors import ConsumerGone, InvalidTask
from hub.model import Priority, Route, TaskRecord, validate_task_id
from hub.nats import subjects
from hub.nats.errors import RETRY_BUDGET_S, nats_errors, retrying
from hub.nats.inline import subscribe_inline
from hub.nats.requests import Requests
from hub.nats.subjects import ConsumerName

__all__ = ("DeadLetter", "Delivery", "Queue", "Stored")

log = logging.getLogger(__name__)

#: How far from a record's ``queued_at`` its message's store time may be (clock skew).
FIND_SKEW_S = 5.0
FIND_LIMIT = 1000
#: What deleting a message that is gone answers: "no message found" (500 within the stream's
#: range) or "sequence not found" (400 past it).
NO_SUCH_MESSAGE = (10057, 10043)
#: What a pull answers when its consumer does not exist: nobody serves its API subject.
NO_RESPONDERS = "503"
#: A route's puller (and its inbox subscription) not used for this long is dropped when a new
#: one is made: its node left, or its capability set went quiet. A later pull makes another.
PULLER_IDLE_S = 600.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """A task message handed to this replica, not yet claimed by a node."""

    task_id: str
    kind: str
    generation: int
    priority: Priority
    route: Route
    payload: bytes
    ack_subject: str
    seq: int
    deliveries: int
    submitted: tuple[int, bytes] | None = None  # (revision, record JSON) as published


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as stored in a priority stream, read by sequence (not delivered)."""

    seq: int
    task_id: str
    generation: int
    payload: bytes
    stamp: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task in HUB_DLQ: its payload, subject, last error and attempt history."""

    task_id: str
    kind: str
    generation: int
    subject: str
    payload: bytes
    error: str
    history: list[dict[str, object]]
    dead_at: float

    def to_json(self) -> bytes:
        data = {
            "task_id": self.task_id,
            "kind": self.kind,
            "generation": self.generation,
            "subject": self.subject,
            "payload_b64": base64.b64encode(self.payload).decode(),
            "error": self.error,
            "history": self.history,
            "dead_at": self.dead_at,
        }
        return json.dumps(data, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> DeadLetter:
        data = json.loads(raw)
        payload = base64.b64decode(data.pop("payload_b64"))
        return cls(payload=payload, **data)


class _Puller:
    """No-wait pulls from one durable consumer through a dedicated inbox.

    An empty ``fetch()`` waits out its whole timeout; a no-wait pull answers at once with a
    404 status, so an empty priority costs one round trip, not a timeout. The inbox is read
    inline (``hub.nats.inline``): each delivery is appended as it is read, and the pull wakes
    once, when its batch is full or the status says there is no more. A 503 (no responders)
    says the consumer is gone: ConsumerGone, so that the pool makes it again.
    """

    def __init__(self, nc: NATS, name: ConsumerName) -> None:
        self.nc, self.name = nc, name
        self.api = f"$JS.API.CONSUMER.MSG.NEXT.{name.stream}.{name.durable}"
        self.inbox = ""
        self.sub: Subscription | None = None
        self.lock = asyncio.Lock()
        self._batch = 0
        self._got: list[Msg] = []
        self._status = ""
        self._done: asyncio.Future[bool] | None = None
        self.used_at = time.monotonic()

    async def pull(self, batch: int, timeout_s: float) -> list[Msg]:
        async with self.lock:
            if self.sub is None:
                inbox = self.inbox = self.nc.new_inbox()
                self.sub = await subscribe_inline(
                    self.nc, inbox, lambda msg: self._on_msg(inbox, msg)
                )
            loop = asyncio.get_running_loop()
            self._batch, self._got, self._status = batch, [], ""
            self._done = done = loop.create_future()
            timer = loop.call_later(timeout_s, _finish, done)
            request = json.dumps({"batch": batch, "no_wait": True}).encode()
            try:
                await self.nc.publish(self.api, request, reply=self.inbox)
                if not await done:
                    self.drop_inbox()
            except BaseException:  # cancelled mid-pull (a replica stopping)
                self.drop_inbox()
                raise
            finally:
                timer.cancel()
                self._done = None
            if self._status == NO_RESPONDERS:
                raise ConsumerGone(f"consumer {self.name.stream}/{self.name.durable} is gone")
            return self._got

    def _on_msg(self, inbox: str, msg: Msg) -> None:
        done = self._done
        if inbox != self.inbox or done is None or done.done():
            return  # the late answer to a pull cut short: its deliveries come back after ack_wait
        if msg.headers and (status := msg.headers.get("Status")):
            self._status = status
            done.set_result(True)
            return
        self._got.append(msg)
        if len(self._got) >= self._batch:
            done.set_result(True)

    def drop_inbox(self) -> None:
        """Unsubscribe the inbox: after a pull cut short (its answer may still come, so the
        next pull goes through a new inbox and a late reply is not taken for its own), or when
        the puller is dropped."""
        sub, self.sub, self.inbox = self.sub, None, ""
        if sub is not None:
            task = asyncio.ensure_future(_unsubscribe(sub))
            _background.add(task)
            task.add_done_callback(_background.discard)


def _finish(done: asyncio.Future[bool]) -> None:
    """A pull's timer ran out: it ends with what it got (False: cut short)."""
    if not done.done():
        done.set_result(False)


_background: set[asyncio.Future[None]] = set()


async def _unsubscribe(sub: Subscription) -> None:
    with contextlib.suppress(Exception):
        await sub.unsubscribe()


class Queue:
    def __init__(self, nc: NATS, js: JetStreamContext, settings: Settings) -> None:
        self.nc, self.js, self.settings = nc, js, settings
        self.requests = Requests(nc)
        self._pullers: dict[tuple[str, str], _Puller] = {}

    async def publish(
        self, record: TaskRecord, payload: bytes, revision: int = 0, raw: bytes = b""
    ) -> int:
        """Publish the task's message for its current generation; safe to retry.

        The message id is ``<task id>.<generation>``: a retry after a timeout (which may have
        been stored) is a duplicate, while a replay (next generation) is not. With the record's
        ``revision``, the record rides along (``raw``: already encoded), so its first claim
        needs no journal read (with a deep backlog the record has long left every replica's
        cache).
        """
        subject = subjects.task_subject(record.priority, record.route)
        headers = {
            subjects.HEADER_MSG_ID: subjects.msg_id(record.id, record.generation),
            subjects.HEADER_TASK: record.id,
            subjects.HEADER_KIND: record.kind,
            subjects.HEADER_GENERATION: str(record.generation),
        }
        if revision:
            headers[subjects.HEADER_RECORD] = f"{revision} {(raw or record.to_json()).decode()}"
        return await self._publish(subject, payload, headers)

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        """Publish with the same id through timeouts and leader elections (the message id
        makes a repeat of a publish that did land a duplicate, which the stream drops)."""
        timeout_s = self.settings.request_timeout_s
        return await retrying(
            f"publish {subject}",
            lambda: self.requests.publish(subject, payload, timeout_s=timeout_s, headers=headers),
            closed=lambda: self.nc.is_closed,
        )

    async def held_routes(self, priority: Priority) -> dict[Route, int] | None:
        """The routes whose subjects hold messages in a priority's stream (queued, in flight or
        waiting out a delayed nak), with how many; from one stream-info request, None without
        an answer.

        A rescan pulls only these: the others hold nothing, however many nodes have routes.
        """
        try:
            held = await self.requests.stream_subjects(
                subjects.stream_name(priority),
                subjects.stream_subjects(priority),
                timeout_s=self.settings.request_timeout_s,
            )
        except (nats.errors.Error, ValueError) as exc:
            log.debug("stream subjects of %s: %s", priority.label, exc)
            return None
        routes = {}
        for subject, count in held.items():
            with contextlib.suppress(InvalidTask):  # (not a subject the hub writes to)
                routes[subjects.parse_task_subject(subject)[1]] = count
        return routes

    async def pull(self, name: ConsumerName, batch: int) -> list[Delivery]:
        puller = self._pullers.get((name.stream, name.durable))
        if puller is None:
            self._drop_idle_pullers()
            puller = self._pullers[(name.stream, name.durable)] = _Puller(self.nc, name)
        puller.used_at = time.monotonic()
        msgs = await puller.pull(batch, self.settings.request_timeout_s)
        out = []
        for msg in msgs:
            try:
                out.append(self._delivery(msg))
            except (InvalidTask, KeyError, ValueError) as exc:
                log.error("malformed task message subject=%s: %s; removing it", msg.subject, exc)
                await self.ack(msg.reply)
        return out

    def _drop_idle_pullers(self) -> None:
        """Without this a replica kept a subscription per route it ever pulled: with nodes
        that come and go under new ids (pods), one per departed node and priority, for good."""
        idle_since = time.monotonic() - PULLER_IDLE_S
        for key, puller in list(self._pullers.items()):
            if puller.used_at < idle_since and not puller.lock.locked():
                del self._pullers[key]
                puller.drop_inbox()

    @staticmethod
    def _delivery(msg: Msg) -> Delivery:
        priority, route = subjects.parse_task_subject(msg.subject)
        headers = msg.headers or {}
        ack = subjects.parse_ack(msg.reply)
        return Delivery(
            task_id=validate_task_id(headers[subjects.HEADER_TASK]),
            kind=headers[subjects.HEADER_KIND],
            generation=int(headers.get(subjects.HEADER_GENERATION, "1")),
            priority=priority,
            route=route,
            payload=msg.data,
            ack_subject=msg.reply,
            seq=ack.stream_seq,
            deliveries=ack.deliveries,
            submitted=_submitted(headers.get(subjects.HEADER_RECORD, "")),
        )

    async def ack(self, ack_subject: str) -> None:
        """Confirmed ack: the message is gone from the work queue when this returns. Retried
        through an election: a second ack of the same message is answered and changes nothing."""
        timeout_s = self.settings.request_timeout_s
        await retrying(
            "ack",
            lambda: self.requests.request(ack_subject, b"+ACK", timeout_s=timeout_s),
            closed=lambda: self.nc.is_closed,
        )

    async def extend(self, ack_subject: str) -> None:
        with nats_errors("extend"):
            await self.nc.publish(ack_subject, b"+WPI")

    async def nak(self, ack_subject: str, delay_s: float = 0.0) -> None:
        body = b"-NAK"
        if delay_s > 0:
            body += b" " + json.dumps({"delay": int(delay_s * 1e9)}).encode()
        with nats_errors("nak"):
            await self.nc.publish(ack_subject, body)

    async def remove(self, priority: Priority, seq: int) -> bool:
        """Remove one stored message by its sequence; False if it was already gone."""
        with nats_errors("remove task message"):
            try:
                return await self.js.delete_msg(subjects.stream_name(priority), seq)
            except nats.js.errors.APIError as exc:
                if exc.code == 404 or exc.err_code in NO_SUCH_MESSAGE:
                    return False
                raise

    async def stored(self, priority: Priority, seq: int) -> Stored | None:
        """The message at ``seq`` in a priority stream, if it is still there."""
        return await self._scan(priority, seq, nxt=False)

    async def oldest(self, priority: Priority, after_seq: int) -> Stored | None:
        """The next stored message after ``after_seq``, oldest first: for the TTL sweep."""
        return await self._scan(priority, after_seq + 1, nxt=True)

    async def _scan(self, priority: Priority, seq: int, *, nxt: bool) -> Stored | None:
        stream = subjects.stream_name(priority)
        with nats_errors("read task message"):
            try:
                if nxt:
                    subject = subjects.stream_subjects(priority)
                    msg = await self.js.get_msg(stream, seq=seq, subject=subject, next=True)
                else:
                    msg = await self.js.get_msg(stream, seq=seq)
            except nats.js.errors.NotFoundError:
                return None
        headers = msg.headers or {}
        return Stored(
            seq=msg.seq or seq,
            task_id=headers.get(subjects.HEADER_TASK, ""),
            generation=int(headers.get(subjects.HEADER_GENERATION, "1")),
            payload=msg.data or b"",
            stamp=_timestamp(msg.time),
        )

    async def find(self, record: TaskRecord) -> int | None:
        """The sequence of the task's message for its current generation; 0 if the stream
        does not hold it, None if the search gave up.

        Its message shares its route's subject with every other task's, but it was stored
        just after ``queued_at`` (within one publish's retry budget): only the route's messages
        stored around then are read, one request each, at most FIND_LIMIT of them.
        """
        stream = subjects.stream_name(record.priority)
        subject = subjects.task_subject(record.priority, record.route)
        since = datetime.fromtimestamp(record.queued_at - FIND_SKEW_S, UTC)
        query: dict[str, object] = {"start_time": since.isoformat().replace("+00:00", "Z")}
        until = record.queued_at + RETRY_BUDGET_S + FIND_SKEW_S
        for _ in range(FIND_LIMIT):
            get = functools.partial(
                self.requests.request,
                f"$JS.API.STREAM.MSG.GET.{stream}",
                json.dumps({**query, "next_by_subj": subject}).encode(),
                timeout_s=self.settings.request_timeout_s,
            )
            reply = await retrying("find task message", get, closed=lambda: self.nc.is_closed)
            answer = json.loads(reply.data)
            if "error" in answer:
                if answer["error"].get("code") == 404:
                    return 0
                with nats_errors("find task message"):
                    raise nats.js.errors.APIError.from_error(answer["error"])
            found = answer["message"]
            headers = _headers(base64.b64decode(found.get("hdrs") or ""))
            if headers.get(subjects.HEADER_TASK) == record.id and headers.get(
                subjects.HEADER_GENERATION, "1"
            ) == str(record.generation):
                return int(found["seq"])
            if _timestamp(found.get("time")) > until:
                return 0
            query = {"seq": found["seq"] + 1}
        return None

    async def bury(self, letter: DeadLetter) -> None:
        """Store a dead letter; idempotent per generation (repeating a cut-short move is safe)."""
        headers = {subjects.HEADER_MSG_ID: f"dlq.{letter.task_id}.{letter.generation}"}
        await self._publish(subjects.dlq_subject(letter.task_id), letter.to_json(), headers)

    async def dead_letter(self, task_id: str) -> DeadLetter | None:
        with nats_errors("read dead letter"):
            try:
                msg = await self.js.get_last_msg(
                    subjects.DLQ_STREAM, subjects.dlq_subject(task_id), direct=True
                )
            except nats.js.errors.NotFoundError:
                return None
        return DeadLetter.from_json(msg.data or b"{}")

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        with nats_errors("list dead letters"):
            info = await self.js.stream_info(subjects.DLQ_STREAM)
            out: list[DeadLetter] = []
            seq = info.state.first_seq
            while seq and seq <= info.state.last_seq and len(out) < limit:
                try:
                    msg = await self.js.get_msg(
                        subjects.DLQ_STREAM, seq=seq, subject=subjects.dlq_subject(">"), next=True
                    )
                except nats.js.errors.NotFoundError:
                    break
                out.append(DeadLetter.from_json(msg.data or b"{}"))
                seq = (msg.seq or seq) + 1
        return out

    async def unbury(self, task_id: str) -> None:
        with nats_errors("remove dead letter"):
            await self.js.purge_stream(subjects.DLQ_STREAM, subject=subjects.dlq_subject(task_id))

    async def depth(self, priority: Priority) -> tuple[int, float]:
        """Messages in a priority stream (queued or in flight) and the oldest one's timestamp."""
        with nats_errors("stream info"):
            info = await self.js.stream_info(subjects.stream_name(priority))
            if not info.state.messages:
                return 0, 0.0
            first = await self.js.get_msg(subjects.stream_name(priority), seq=info.state.first_seq)
        return info.state.messages, _timestamp(first.time)


def _submitted(header: str) -> tuple[int, bytes] | None:
    revision, _, record = header.partition(" ")
    return (int(revision), record.encode()) if revision.isdigit() and record else None


def _headers(block: bytes) -> dict[str, str]:
    """A stored message's header block (``NATS/1.0`` line, then ``Name: value`` lines)."""
    out = {}
    for line in block.decode(errors="replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def _timestamp(value: object) -> float:
    """RawStreamMsg.time is an ISO string in nats-py; a datetime in some versions."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        text = value.rstrip("Z")
        if "." in text:
            head, frac = text.split(".", 1)
            text = f"{head}.{frac[:6]}"
        return datetime.fromisoformat(text + "+00:00").timestamp()
    return 0.0
