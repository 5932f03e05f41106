"""The task journal in the ``hub_journal`` KV bucket: records, output buffers, wait and watch.

(With ``HUB_JOURNAL_SHARDS`` above 1, a task's keys are in one of ``hub_journal``,
``hub_journal_1``, ...: ``subjects.journal_shard``. Every bucket republishes to the one feed.)

There is no lock anywhere: every change is a pure transition (``hub.lifecycle``) applied by
compare-and-set on the key's revision, retried on conflict. Revisions this replica wrote are
kept in memory, so the common update is one round trip instead of a get plus a put.

Finished records carry a per-key TTL (the result TTL). When it runs out the server leaves an
expiry marker in place of the record for another result TTL: that marker is the tombstone that
makes a forgotten task read as ``expired`` rather than unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import nats.js.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from hub.buffers import HeadTail, Unwritten
from hub.config import Settings
from hub.errors import (
    Conflict,
    HubError,
    InvalidTask,
    PayloadTooLarge,
    StaleAttempt,
    TaskExpired,
    TaskNotFound,
)
from hub.lifecycle import fence
from hub.model import TERMINAL, TaskRecord
from hub.nats import subjects
from hub.nats.errors import is_wrong_last_sequence, retrying
from hub.nats.inline import subscribe_inline
from hub.nats.requests import Requests

__all__ = ("BUFFERS", "Journal", "WatchEvent")

log = logging.getLogger(__name__)

BUFFERS = ("stdout", "thoughts")
CAS_RETRIES = 10
CACHE_SIZE = 20_000
DECODED_SIZE = 2_000
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
HEADER_TTL = "Nats-TTL"  # whole seconds
_TOMBSTONE_HEADERS = ("Nats-Marker-Reason",)
_TERMINAL_VALUES = frozenset(status.value for status in TERMINAL)
_DEADLINE = object()  # a waiter's queue item: its time is up

Update = Callable[[TaskRecord], TaskRecord]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watcher: a new record, or new bytes of a buffer from ``offset``."""

    kind: Literal["record", "stdout", "thoughts"]
    record: TaskRecord | None = None
    data: bytes = b""
    offset: int = 0
    skipped: int = 0
    attempt: int = 0


class RecordCache:
    """What this replica knows of each record: the newest revision among its own writes, its
    reads and the bucket's feed of committed writes (bounded, least recently stored first out;
    a record pushed out is forgotten whole, and the compare-and-set catches a stale copy).

    An entry counts as *current* while the feed has run without a break since it was stored:
    every later write then reaches this replica through the feed. ``new_epoch()`` marks such
    a break (a reconnect), after which old entries are only hints.

    Each entry keeps the record's JSON; only the ``decoded`` most recent are also kept decoded.
    JSON and revisions are bytes and ints, which the garbage collector does not track: a full
    cache of decoded records was about 60,000 more objects (three per record) for every full
    collection to walk, which made claims dearer the deeper the backlog.

    The JSON is kept as a copy of its own size: ``orjson.dumps`` returns its whole working
    buffer (8 KB for a 600-byte record, never shrunk), so a full cache of records this replica
    wrote itself held 160 MB, and every replica that had written 20,000 records sat at 230 MB.
    """

    def __init__(self, size: int = CACHE_SIZE, decoded: int = DECODED_SIZE) -> None:
        self.size, self.decoded_size = size, decoded
        self.epoch = 0  # 0: no feed yet, nothing is current
        # task id -> (revision, epoch, record JSON; b"" for a tombstone)
        self._known: OrderedDict[str, tuple[int, int, bytes]] = OrderedDict()
        self._decoded: OrderedDict[str, tuple[int, TaskRecord]] = OrderedDict()

    def new_epoch(self) -> None:
        self.epoch += 1

    def store(
        self, task_id: str, revision: int, raw: bytes, record: TaskRecord | None = None
    ) -> None:
        """Remember a revision: its JSON (b"" for a tombstone), and the record if decoded."""
        known = self._known.get(task_id)
        if known is not None and known[0] > revision:
            return
        self._known[task_id] = (revision, self.epoch, bytes(memoryview(raw)))
        self._known.move_to_end(task_id)
        if len(self._known) > self.size:
            self._decoded.pop(self._known.popitem(last=False)[0], None)
        if record is not None:
            self._keep(task_id, revision, record)

    def _keep(self, task_id: str, revision: int, record: TaskRecord) -> None:
        self._decoded[task_id] = (revision, record)
        self._decoded.move_to_end(task_id)
        if len(self._decoded) > self.decoded_size:
            self._decoded.popitem(last=False)

    def get(self, task_id: str, *, current: bool = False) -> tuple[TaskRecord | None, int] | None:
        """(record or None for a tombstone, revision), or None when unknown (or, with
        ``current``, not known to be the latest)."""
        known = self._known.get(task_id)
        if known is None or (current and (not self.epoch or known[1] != self.epoch)):
            return None
        revision, _, raw = known
        if not raw:
            return None, revision
        decoded = self._decoded.get(task_id)
        if decoded is not None and decoded[0] == revision:
            return decoded[1], revision
        record = TaskRecord.from_json(raw)
        self._keep(task_id, revision, record)
        return record, revision

    def has(self, task_id: str, revision: int) -> bool:
        """Whether this revision is known and current (as our own writes are)."""
        known = self._known.get(task_id)
        return known is not None and known[0] == revision and known[1] == self.epoch

    def forget(self, task_id: str) -> None:
        self._known.pop(task_id, None)
        self._decoded.pop(task_id, None)


def _ends_wait(raw: bytes) -> bool:
    """Whether a record's JSON is terminal, read without building the record (a waiter needs
    only those; undecodable JSON is passed on, to fail where it is decoded)."""
    try:
        return orjson.loads(raw).get("status") in _TERMINAL_VALUES
    except (orjson.JSONDecodeError, AttributeError):
        return True


def _hinted(task_id: str, hint: tuple[int, bytes] | None) -> tuple[TaskRecord, int] | None:
    """A hint's record, if it decodes and is this task's (a message's header is input)."""
    if hint is None:
        return None
    try:
        record = TaskRecord.from_json(hint[1])
    except (ValueError, KeyError, TypeError, AttributeError, HubError):
        return None
    return (record, hint[0]) if record.id == task_id else None


def _known_or_raise(
    task_id: str, record: TaskRecord | None, revision: int
) -> tuple[TaskRecord, int]:
    if record is None:
        raise TaskExpired(task_id)
    return record, revision


class Journal:
    """Records and buffers of every task; one instance per replica (per NATS connection)."""

    def __init__(self, nc: NATS, js: JetStreamContext, settings: Settings, *, shards: int) -> None:
        self.nc, self.js, self.settings = nc, js, settings
        self.requests = Requests(nc)
        self.shards = shards  # (Topology.journal_shards: the journal's own count)
        self.records = RecordCache()
        # Per task: the queues of its waiters, fed with what ends a wait (feed messages, our
        # own committed records), None for "re-read" (after a reconnect), or _DEADLINE.
        self._waiters: dict[str, set[asyncio.Queue[Msg | TaskRecord | object | None]]] = {}
        self._feed_started = False
        self._buffers: OrderedDict[str, tuple[HeadTail, int]] = OrderedDict()
        self._pending: dict[tuple[str, str], Unwritten] = {}
        self._flushers: dict[tuple[str, str], asyncio.Task[None]] = {}
        # One flush at a time per buffer: concurrent flushes of one key would race their
        # compare-and-sets (reordering chunks, or dropping them after CAS_RETRIES conflicts).
        self._flushing: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}
        self._reread: set[asyncio.Queue[Any]] = set()  # every waiter and watcher
        self.writes = 0
        # Direct gets are answered by any replica, and a follower may not have applied a write
        # the leader already acknowledged: on a 3-server cluster a read right after another
        # replica's write missed it 3-12% of the time (a claim would then drop a task as
        # unknown). With replicas, read from the stream leader; alone, the direct get is the
        # same data and cheaper.
        self._direct = settings.stream_replicas == 1

    # -- raw key access -------------------------------------------------------------------

    def _bucket(self, key: str) -> str:
        return subjects.journal_bucket(subjects.journal_shard(key, self.shards))

    def _subject(self, key: str) -> str:
        return f"$KV.{self._bucket(key)}.{key}"

    async def _read(self, key: str) -> tuple[bytes | None, int]:
        """(value, revision); value None for a tombstone; (None, 0) when the key never existed.

        Retried with backoff while NATS is unavailable (a leader election takes 4-9 s).
        """
        stream, subject = f"KV_{self._bucket(key)}", self._subject(key)
        try:
            msg = await self._retrying(
                f"read {key}",
                lambda: self.js.get_last_msg(stream, subject, direct=self._direct),
            )
        except nats.js.errors.NotFoundError:
            return None, 0
        headers = msg.headers or {}
        if headers.get("KV-Operation") in ("DEL", "PURGE") or any(
            h in headers for h in _TOMBSTONE_HEADERS
        ):
            return None, msg.seq or 0
        return msg.data or b"", msg.seq or 0

    async def _write(self, key: str, value: bytes, last: int, ttl_s: float | None = None) -> int:
        """Compare-and-set ``key`` (``last=0``: only if it does not exist); the new revision.

        Retried with backoff while NATS is unavailable. A publish that timed out may still have
        been stored (and one buffered while disconnected is sent after the reconnect), so on a
        retry a wrong-last-sequence error is checked: if the key now holds exactly ``value``,
        that earlier attempt landed and its revision is ours. Otherwise the error stands and the
        caller re-reads and re-decides (``update``), as for any lost compare-and-set. Values are
        unique in practice (records carry timestamps), so the comparison does not mistake
        another writer's value for ours.
        """
        headers = {EXPECTED_LAST: str(last)}
        if ttl_s:
            headers[HEADER_TTL] = str(math.ceil(ttl_s))
        subject, timeout_s = self._subject(key), self.settings.request_timeout_s
        tries = 0

        def publish() -> Awaitable[int]:
            nonlocal tries
            tries += 1
            return self.requests.publish(subject, value, timeout_s=timeout_s, headers=headers)

        try:
            revision = await self._retrying(f"write {key}", publish)
        except nats.js.errors.APIError as exc:
            if tries < 2 or not is_wrong_last_sequence(exc):
                raise
            current, revision = await self._read(key)
            if current != value:
                raise
            log.info("journal write of %s landed before its retry (revision %d)", key, revision)
        self.writes += 1
        return revision

    async def _retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        return await retrying(what, call, closed=lambda: self.nc.is_closed)

    # -- records ----------------------------------------------------------------------------

    def _wrote(self, record: TaskRecord, revision: int, raw: bytes) -> None:
        """A write of ours committed: remember it, and hand it to this replica's waiters now
        rather than when its echo comes back through the feed (one NATS hop less for a Wait
        answered by the replica that wrote the result)."""
        self.records.store(record.id, revision, raw, record)
        if record.terminal:
            for queue in self._waiters.get(record.id, ()):
                queue.put_nowait(record)

    async def create(self, record: TaskRecord, raw: bytes = b"") -> tuple[TaskRecord, int, bool]:
        """Record a new task: (record, revision, True); if the id exists, the existing record,
        its revision and False (idempotent). ``raw``: the record already encoded."""
        try:
            raw = raw or record.to_json()
            revision = await self._write(subjects.record_key(record.id), raw, 0)
        except nats.js.errors.APIError as exc:
            if not is_wrong_last_sequence(exc):
                raise
            existing, revision = await self.read(record.id, fresh=True)
            return existing, revision, False
        self._wrote(record, revision, raw)
        return record, revision, True

    async def read(self, task_id: str, *, fresh: bool = False) -> tuple[TaskRecord, int]:
        """The record and its revision; TaskNotFound or TaskExpired (tombstone) otherwise."""
        known = None if fresh else self.records.get(task_id)
        if known is not None:
            return _known_or_raise(task_id, *known)
        value, revision = await self._read(subjects.record_key(task_id))
        if value is None:
            self.records.forget(task_id)
            if revision:
                raise TaskExpired(task_id)
            raise TaskNotFound(task_id)
        record = TaskRecord.from_json(value)
        self.records.store(task_id, revision, value, record)
        return record, revision

    async def get(self, task_id: str) -> TaskRecord:
        return (await self.read(task_id, fresh=True))[0]

    async def update(
        self, task_id: str, change: Update, *, hint: tuple[int, bytes] | None = None
    ) -> TaskRecord:
        """Apply a pure transition by compare-and-set, re-reading and re-applying on conflict.

        ``change`` may raise a HubError (stale attempt, already finished): nothing is written.
        ``hint`` is a (revision, record JSON) the caller was handed, tried when this replica
        knows nothing of the record, instead of reading it: the compare-and-set on that
        revision proves it still current, and a conflict re-reads as for any other.
        """
        for attempt in range(CAS_RETRIES):
            cached = attempt == 0 and self.records.get(task_id) is not None
            hinted = None if cached or attempt else _hinted(task_id, hint)
            if hinted is not None:
                (record, revision), cached = hinted, True
            else:
                record, revision = await self.read(task_id, fresh=attempt > 0)
            try:
                new = change(record)
            except Exception:
                if cached:
                    # Decided on this replica's copy, which another replica's writes may have
                    # overtaken (it shows an older attempt): decide again on the journal's.
                    self.records.forget(task_id)
                    continue
                raise
            if new is record:
                return record
            ttl = self.settings.result_ttl_s if new.terminal else None
            raw = new.to_json()
            try:
                revision = await self._write(subjects.record_key(task_id), raw, revision, ttl)
            except nats.js.errors.APIError as exc:
                if not is_wrong_last_sequence(exc):
                    raise
                self.records.forget(task_id)
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            self._wrote(new, revision, raw)
            return new
        raise Conflict(f"task {task_id!r}: journal update kept conflicting")

    # -- buffers ----------------------------------------------------------------------------

    def append(self, task_id: str, name: str, attempt: int, data: bytes | HeadTail) -> None:
        """Queue output for the buffer; it is written after the coalescing window.

        ``data`` is the next bytes of the stream, or a head+tail view of them kept with this
        hub's limits (what a congested node sends instead of every byte). Refuses at once what
        this replica already knows is stale; the flush checks again against the journal, so
        output from a fenced holder never lands.
        """
        subjects.buffer_key(task_id, name)
        head, tail = self.settings.journal_head_bytes, self.settings.journal_tail_bytes
        size = len(data.head) + len(data.tail) if isinstance(data, HeadTail) else len(data)
        if size > self.settings.max_payload_bytes:
            raise PayloadTooLarge(name, size, self.settings.max_payload_bytes)
        if isinstance(data, HeadTail) and (
            len(data.head) > head or len(data.tail) > tail or data.dropped < 0
        ):
            raise InvalidTask(f"{name}: a head+tail view must keep at most {head}+{tail} bytes")
        cached = self.records.get(task_id)
        if cached is not None and cached[0] is not None and cached[0].attempt >= attempt:
            # This replica's copy may be older than the journal (another replica claimed or
            # re-attached the task): only a copy at or past ``attempt`` can refuse it at once.
            fence(cached[0], attempt)
        key = (task_id, name)
        pending = self._pending.get(key)
        if pending is not None and pending.attempt != attempt:
            self._schedule(key, 0.0)
            pending = None
        if pending is None:
            self._pending[key] = pending = Unwritten(attempt)
        if isinstance(data, HeadTail):
            pending.add_view(data, head, tail)
        else:
            pending.add(data, head, tail)
        self._schedule(key, self.settings.append_coalesce_ms / 1000)

    def _schedule(self, key: tuple[str, str], delay: float) -> None:
        if key not in self._flushers:
            self._flushers[key] = asyncio.get_running_loop().create_task(
                self._flush_later(key, delay)
            )

    async def _flush_later(self, key: tuple[str, str], delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
        finally:
            self._flushers.pop(key, None)
        try:
            await self._flush_key(key)
        except Exception as exc:
            log.warning("buffer flush failed task=%s buffer=%s: %s", key[0], key[1], exc)

    async def flush(self, task_id: str) -> None:
        """Write this task's pending output now (before its terminal record, so a waiter that
        sees the result also sees all the output)."""
        for name in BUFFERS:
            key = (task_id, name)
            task = self._flushers.pop(key, None)
            if task is not None:
                task.cancel()
            if key in self._pending or key in self._flushing:  # else nothing to write or wait for
                await self._flush_key(key)

    async def flush_all(self) -> None:
        """Write every task's pending output now: a replica stopping keeps what it accepted."""
        for task_id in {task_id for task_id, _ in list(self._pending)}:
            try:
                await self.flush(task_id)
            except Exception as exc:
                log.warning("buffer flush at stop failed task=%s: %s", task_id, exc)

    @contextlib.asynccontextmanager
    async def _buffer_lock(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """One writer per buffer at a time, first come first served, so chunks are written in
        the order they were appended; the lock is dropped when nobody waits on it."""
        lock, users = self._flushing.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                self._flushing.pop(key, None)

    async def _flush_key(self, key: tuple[str, str]) -> None:
        async with self._buffer_lock(key):
            await self._flush_locked(key)

    async def _flush_locked(self, key: tuple[str, str]) -> None:
        pending = self._pending.pop(key, None)
        if not pending:
            return
        head, tail = self.settings.journal_head_bytes, self.settings.journal_tail_bytes
        view = pending.view(head, tail)
        await self._write_buffer(
            key, pending.attempt, lambda buffer: buffer.extend(view, head, tail)
        )

    async def settle(self, task_id: str, name: str, final: HeadTail) -> None:
        """Make a buffer the node's own head+tail of the attempt's output, sent with its result.

        Output messages are at most once: chunks on their way to a replica that dies are gone.
        The node keeps the same head+tail locally, so with this the journal is exact anyway.
        Usually the stored buffer already matches and nothing is written.
        """
        key = (task_id, name)
        cached = self._buffers.get(subjects.buffer_key(task_id, name))
        if cached is not None and cached[0] == final:
            return
        async with self._buffer_lock(key):
            await self._write_buffer(key, final.attempt, lambda _: final)

    async def _write_buffer(
        self, key: tuple[str, str], attempt: int, change: Callable[[HeadTail], HeadTail]
    ) -> None:
        """Compare-and-set a buffer, fenced: only the task's current attempt may write it, and
        a new attempt starts a new buffer."""
        task_id, name = key
        record, _ = await self.read(task_id, fresh=True)
        fence(record, attempt)
        buffer_key = subjects.buffer_key(task_id, name)
        for tries in range(CAS_RETRIES):
            buffer, revision = await self.read_buffer(task_id, name, fresh=tries > 0)
            if buffer.attempt > attempt:
                raise StaleAttempt(task_id, attempt, buffer.attempt)
            if buffer.attempt < attempt:
                buffer = HeadTail(attempt=attempt)
            new = change(buffer)
            if new == buffer:
                return
            try:
                revision = await self._write(buffer_key, new.to_json(), revision, self._buffer_ttl)
            except nats.js.errors.APIError as exc:
                if not is_wrong_last_sequence(exc):
                    raise
                self._buffers.pop(buffer_key, None)
                continue
            self._buffers[buffer_key] = (new, revision)
            if len(self._buffers) > CACHE_SIZE:
                self._buffers.popitem(last=False)
            return
        raise Conflict(f"task {task_id!r}: {name} buffer kept conflicting")

    @property
    def _buffer_ttl(self) -> float:
        """Buffers outlive their record's result TTL; a silent task's output is kept as long."""
        return 2 * self.settings.result_ttl_s

    async def read_buffer(
        self, task_id: str, name: str, *, fresh: bool = True
    ) -> tuple[HeadTail, int]:
        key = subjects.buffer_key(task_id, name)
        if not fresh and key in self._buffers:
            return self._buffers[key]
        value, revision = await self._read(key)
        buffer = HeadTail.from_json(value) if value else HeadTail()
        self._buffers[key] = (buffer, revision)
        return buffer, revision

    # -- wait and watch ---------------------------------------------------------------------

    def reconnected(self) -> None:
        """After a reconnect, every waiter re-reads and nothing cached is taken as current: a
        change during the outage is not missed."""
        self.records.new_epoch()
        for queue in self._reread:
            queue.put_nowait(None)

    async def start(self) -> None:
        """One subscription per replica to every committed record write (the bucket's
        republish), fanned out to this replica's waiters; it keeps ``records`` current."""
        if self._feed_started:
            return
        self._feed_started = True
        await subscribe_inline(self.nc, subjects.journal_feed_subject("task.*"), self._on_record)
        self.records.new_epoch()

    def _on_record(self, msg: Msg) -> None:
        task_id = msg.subject.rsplit(".", 1)[-1]
        headers = msg.headers or {}
        try:
            revision = int(headers.get("Nats-Sequence", "0"))
        except ValueError:
            return
        tombstone = not msg.data or any(h in headers for h in _TOMBSTONE_HEADERS)
        if tombstone:
            self.records.store(task_id, revision, b"")
        elif not self.records.has(task_id, revision):  # not the echo of our own write
            self.records.store(task_id, revision, msg.data)
        waiters = self._waiters.get(task_id)
        if waiters and (tombstone or _ends_wait(msg.data)):
            for queue in waiters:
                queue.put_nowait(msg)

    async def _current(self, task_id: str) -> TaskRecord:
        """The latest record: from memory when the feed guarantees it, else from the server."""
        known = self.records.get(task_id, current=True)
        if known is not None:
            return _known_or_raise(task_id, *known)[0]
        return await self.get(task_id)

    @contextlib.asynccontextmanager
    async def _feed(self, task_id: str, buffers: bool) -> AsyncIterator[asyncio.Queue[Msg | None]]:
        """Committed writes of this task's keys, from the bucket's republish (one core
        subscription per key pattern, no JetStream consumer). ``None`` means "re-read"."""
        queue: asyncio.Queue[Msg | None] = asyncio.Queue()
        key = subjects.record_key(task_id)
        patterns = [key, f"{key}.*"] if buffers else [key]
        subs = [
            await subscribe_inline(self.nc, subjects.journal_feed_subject(p), queue.put_nowait)
            for p in patterns
        ]
        self._reread.add(queue)
        try:
            yield queue
        finally:
            self._reread.discard(queue)
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def wait(self, task_id: str, timeout_s: float) -> TaskRecord:
        """The record once terminal, or as it stands at the deadline.

        Registers with the feed before reading, so a result written in between is not missed,
        and reads from memory when the feed guarantees the copy is the latest (no round trip);
        an unknown task raises TaskNotFound at once, an expired one TaskExpired. Waiters are
        woken only by what ends a wait (a terminal record, a tombstone, a reconnect), not by
        each step between: at the deadline the newest record this replica knows is taken.
        """
        await self.start()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Msg | TaskRecord | object | None] = asyncio.Queue()
        waiters = self._waiters.setdefault(task_id, set())
        waiters.add(queue)
        self._reread.add(queue)
        deadline = loop.time() + timeout_s
        # (the deadline is an item in the queue, not asyncio.timeout: that cost 4x as much)
        timer = loop.call_at(deadline, queue.put_nowait, _DEADLINE)
        try:
            record = await self._current(task_id)
            while not record.terminal:
                item = await queue.get()
                if item is _DEADLINE:
                    return self._newest(task_id, record)
                if item is None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(deadline):
                            record = await self._reread_record(task_id, record)
                elif isinstance(item, TaskRecord):
                    record = item
                else:
                    record = self._from_feed(task_id, cast(Msg, item)) or record
            return record
        finally:
            timer.cancel()
            self._reread.discard(queue)
            waiters.discard(queue)
            if not waiters:
                self._waiters.pop(task_id, None)

    def _newest(self, task_id: str, known: TaskRecord) -> TaskRecord:
        """``known``, or a newer revision this replica has since stored (a tombstone raises
        TaskExpired); without a round trip, so a wait answers at its deadline."""
        newest = self.records.get(task_id)
        if newest is None:
            return known
        return _known_or_raise(task_id, *newest)[0]

    async def _reread_record(self, task_id: str, known: TaskRecord) -> TaskRecord:
        try:
            return await self.get(task_id)
        except TaskExpired:
            raise
        except Exception as exc:
            log.debug("re-read after reconnect failed task=%s: %s", task_id, exc)
            return known

    def _from_feed(self, task_id: str, msg: Msg) -> TaskRecord | None:
        headers = msg.headers or {}
        if not msg.data or any(h in headers for h in _TOMBSTONE_HEADERS):
            raise TaskExpired(task_id)
        known = self.records.get(task_id)
        revision = int(headers.get("Nats-Sequence", "0") or 0)
        if known is not None and known[0] is not None and known[1] >= revision:
            return known[0]  # already decoded (the feed stored it), or newer
        record = TaskRecord.from_json(msg.data)
        self.records.store(task_id, revision, msg.data, record)
        return record

    async def watch(
        self, task_id: str, offsets: dict[str, int] | None = None
    ) -> AsyncIterator[WatchEvent]:
        """The record and each change to it, and new buffer bytes from the given offsets, until
        the task is terminal and its output written. Survives a NATS reconnect."""
        offsets = dict.fromkeys(BUFFERS, 0) | (offsets or {})
        attempts = dict.fromkeys(BUFFERS, -1)
        async with self._feed(task_id, buffers=True) as queue:
            record = await self.get(task_id)
            yield WatchEvent("record", record=record)
            pending: list[Msg | None] = [None]  # start with a full read of the buffers
            while True:
                for msg in pending:
                    if msg is None:
                        new = await self._reread_record(task_id, record)
                        sources = [(n, (await self.read_buffer(task_id, n))[0]) for n in BUFFERS]
                    elif msg.subject.endswith(".stdout") or msg.subject.endswith(".thoughts"):
                        name = msg.subject.rsplit(".", 1)[1]
                        new, sources = record, [(name, HeadTail.from_json(msg.data))]
                    else:
                        new, sources = self._from_feed(task_id, msg) or record, []
                    for name, buffer in sources:
                        if buffer.attempt != attempts[name] and attempts[name] >= 0:
                            offsets[name] = 0
                        attempts[name] = buffer.attempt
                        if buffer.total > offsets[name]:
                            data, skipped = buffer.since(offsets[name])
                            yield WatchEvent(
                                name,  # type: ignore[arg-type]
                                data=data,
                                offset=offsets[name] + skipped,
                                skipped=skipped,
                                attempt=buffer.attempt,
                            )
                            offsets[name] = buffer.total
                    if new != record:  # a re-read of an unchanged record is not news
                        record = new
                        yield WatchEvent("record", record=record)
                if record.terminal:
                    return
                pending = [await queue.get()]
                while not queue.empty():
                    pending.append(queue.get_nowait())
