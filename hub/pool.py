"""The work pool: submit, hand work to nodes, and carry each task to its end.

Every operation is: read the journal, decide with a pure transition (``hub.lifecycle``), write
by compare-and-set, then act on the message through its ack subject. Deciding in the journal
first is what fences a stale holder: JetStream matches acks by stream sequence, so an ack from a
node whose lease expired would otherwise act on the new holder's delivery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from hub import lifecycle
from hub.buffers import HeadTail
from hub.config import Settings
from hub.errors import (
    ConsumerGone,
    HubError,
    InvalidTask,
    LimitReached,
    PayloadTooLarge,
    TaskExpired,
    TaskNotFound,
    WrongState,
)
from hub.journal import Journal
from hub.lifecycle import Verdict
from hub.model import Priority, Route, Status, TaskRecord, TaskSpec, validate_task_id
from hub.nats import subjects
from hub.nats.errors import nats_errors
from hub.nats.inline import subscribe_inline
from hub.nats.topology import Topology
from hub.queue import DeadLetter, Delivery, Queue, Stored
from hub.scheduling import PriorityScheduler, Taker, Takers

__all__ = ("Counts", "Grant", "Pool")

log = logging.getLogger(__name__)

SWEEP_BATCH = 500
#: Every priority is looked at this often, rung or not: redeliveries (lease expiry, a delayed
#: nak) and another replica's hand-backs ring no doorbell. A rescan pulls the routes whose
#: subjects hold messages (see Queue.held_routes), not every route.
RESCAN_S = 0.5
#: A rung route whose pull came back empty is pulled once more after this long: a doorbell (or
#: a nak) can reach the replica before its task is visible to the consumer, so that pull can
#: find nothing, and the task would then wait for the rescan.
RECHECK_S = 0.002
#: A route whose stream had no room for its consumer is tried again after this long, not every
#: round: each try is a request, and a mesh past the limit may have many such routes.
REFUSED_RETRY_S = 60.0


@dataclass(frozen=True, slots=True)
class Grant:
    """A claimed task, as handed to its node: the record (attempt, lease) and the payload."""

    record: TaskRecord
    payload: bytes


@dataclass(frozen=True, slots=True)
class Counts:
    queued: dict[str, int]
    oldest_age_s: dict[str, float]
    in_flight: int
    dead: int


class _Skip(Exception):
    """Raised inside a journal update when the delivery must not be claimed."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict


class Pool:
    def __init__(
        self,
        nc: NATS,
        topology: Topology,
        journal: Journal,
        queue: Queue,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nc, self.topology, self.journal, self.queue = nc, topology, journal, queue
        self.settings, self.clock = settings, clock
        self.scheduler = PriorityScheduler(settings.starvation_limit)
        self.bell = asyncio.Event()
        self._cap_routes: dict[Priority, set[frozenset[str]]] = {p: set() for p in Priority}
        self._bell_sub: object | None = None
        # Per priority, the routes that may hold work this replica has not pulled: rung by the
        # doorbell or a hand-back (None: every route held, after a rescan or an unreadable
        # bell; _held, from the rescan, says which routes hold messages, None if unknown).
        # A route is cleared when its pull came back short of its batch; the ring count guards
        # against a bell that rings while the pull is in flight. A rung route whose pull came
        # back empty is pulled again once (RECHECK_S): _rechecked holds those spent since their
        # last ring or the last rescan.
        self._dirty: dict[Priority, set[Route | None]] = {p: {None} for p in Priority}
        self._rings: dict[Priority, int] = dict.fromkeys(Priority, 0)
        self._rechecked: set[tuple[Priority, Route]] = set()
        self._scanned_at = 0.0
        self._held: dict[Priority, dict[Route, int] | None] = dict.fromkeys(Priority)
        self._refused: dict[tuple[Priority, Route], float] = {}  # route -> when it was refused

    async def start(self) -> None:
        """Listen to the doorbell: each stored task rings it (headers only) with its subject."""
        self._bell_sub = await subscribe_inline(
            self.nc, subjects.bell_subject(), self._ring, headers=False
        )

    def _ring(self, msg: Msg) -> None:
        try:
            priority, route = subjects.parse_task_subject(msg.subject)
        except HubError:
            self._scanned_at = 0.0  # unknown subject: pull everything next round
        else:
            if route.capabilities:
                self._cap_routes[priority].add(route.capabilities)
            self._mark(priority, route)
        self.bell.set()

    def _mark(self, priority: Priority, route: Route) -> None:
        """A route may hold work (a ring, a hand-back): pull it next round, and once more if
        that pull comes back empty."""
        self._rechecked.discard((priority, route))
        self._dirty[priority].add(route)
        self._rings[priority] += 1

    def _recheck(self, priority: Priority, route: Route) -> None:
        """A rung route came back empty: pull it once more, soon (see RECHECK_S)."""
        if (priority, route) not in self._rechecked:
            self._rechecked.add((priority, route))
            asyncio.get_running_loop().call_later(RECHECK_S, self._ring_again, priority, route)

    def _ring_again(self, priority: Priority, route: Route) -> None:
        self._mark(priority, route)
        self._rechecked.add((priority, route))  # still spent: an empty pull now is the last
        self.bell.set()

    # -- submit -----------------------------------------------------------------------------

    async def submit(self, spec: TaskSpec) -> tuple[TaskRecord, bool]:
        """Record and enqueue a task; the existing record if the id was seen (idempotent, also
        long after the dedupe window, because the journal remembers the id)."""
        spec = spec.validated(self.settings.max_payload_bytes, self.settings.max_attempts)
        if spec.route.capabilities:
            await self.topology.ensure_consumer(spec.priority, spec.route)
        new = lifecycle.submitted(spec, self.clock())
        raw = new.to_json()
        record, revision, created = await self.journal.create(new, raw)
        if not created:
            lifecycle.same_task(record, spec)
            raw = b""
        if created or (
            record.status is Status.QUEUED and not record.tries and await self._lost(record)
        ):
            await self.queue.publish(record, spec.payload, revision, raw)
        log.info(
            "submitted task=%s kind=%s priority=%s route=%s new=%s",
            record.id,
            record.kind,
            record.priority.label,
            record.route.kind,
            created,
        )
        return record, created

    async def _lost(self, record: TaskRecord) -> bool:
        """Whether a retried submit must republish: its first publish may never have landed
        (a replica that died between the two writes). Inside the dedupe window a republish is
        a no-op if it did; past it a second copy would be stored, so look for the first (a
        search that gives up presumes it there)."""
        if self.clock() - record.queued_at < self.settings.dedupe_window_s / 2:
            return True
        return await self.queue.find(record) == 0

    # -- offer and claim --------------------------------------------------------------------

    def due(self) -> bool:
        """Whether a round could pull anything now: a route rung or handed back, or a rescan
        due. A round that could not is skipped before its takers are listed, a pass over every
        attached node (most wake-ups are a slot freed or an offer made, with nothing rung)."""
        return any(self._dirty.values()) or time.monotonic() - self._scanned_at >= RESCAN_S

    async def fetch(self, takers: Sequence[Taker]) -> AsyncIterator[tuple[str, Delivery]]:
        """Pull at most as many tasks as the takers have free slots, priority first.

        Only routes some taker can run are pulled, and only as many as those takers can take
        now (no hoarding): what is not pulled stays in the stream for other replicas. Each
        task is handed on as its pull answers, not at the end of the round: a task found by a
        round's first pull does not wait for the rest.
        """
        round_ = Takers(takers)
        now = time.monotonic()
        if now - self._scanned_at >= RESCAN_S:
            self._scanned_at = now
            await self._rescan()
        for priority in self.scheduler.order():
            if not round_:
                break
            dirty = self._dirty[priority]
            if not dirty:
                # Nothing stored since its routes last came back short: an empty pull per
                # route would cost a round trip each (4 priorities x routes per round).
                self.scheduler.empty(priority)
                continue
            rings, got = self._rings[priority], 0
            caps = self._cap_routes[priority]
            if None not in dirty:
                look = round_.ordered(dirty, caps)
            elif (held := self._held[priority]) is not None:
                look = round_.ordered(round_.waiting(priority, held).union(dirty), caps)
            else:
                look = round_.routes(caps)
            undrained: set[Route | None] = set()  # looked at, and may hold more
            for route in look:
                eligible = round_.eligible(route)
                if not eligible:
                    undrained.add(route)  # not looked at: it may hold work for a taker to come
                    continue
                name = await self._consumer(priority, route)
                if name is None:  # no consumer, so nothing to pull
                    continue
                batch = sum(round_.free[t.node] for t in eligible)
                rung = route in dirty
                try:
                    pulled = await self.queue.pull(name, batch)
                except ConsumerGone as exc:
                    log.info("%s: making it again", exc)
                    self.topology.forget_consumer(name)
                    self._mark(priority, route)  # pulled through its new consumer next round
                    self.bell.set()
                    continue
                if len(pulled) == batch:
                    undrained.add(route)
                if rung and not pulled:
                    self._recheck(priority, route)
                for node, delivery in zip(round_.give(eligible, len(pulled)), pulled, strict=True):
                    got += 1
                    yield node, delivery
            if self._rings[priority] == rings:
                # (a rung route that no taker here can run is left to the rescan)
                if undrained:
                    dirty.intersection_update({*undrained, None})
                else:
                    dirty.clear()
            if got:
                self.scheduler.served(priority, got)
            else:
                self.scheduler.empty(priority)

    async def _rescan(self) -> None:
        """Look at every priority again: which routes hold messages (one request per priority,
        at once), including capability routes this replica never heard rung."""
        self._rechecked.clear()  # (routes of nodes long gone are never rung again)
        held = await asyncio.gather(*(self.queue.held_routes(p) for p in Priority))
        for priority, routes in zip(Priority, held, strict=True):
            self._held[priority] = routes
            self._cap_routes[priority].update(
                r.capabilities for r in routes or () if r.capabilities
            )
            self._dirty[priority].add(None)

    async def _consumer(self, priority: Priority, route: Route) -> subjects.ConsumerName | None:
        """The route's consumer, or None while its stream has no room for one (LimitReached:
        warned once, tried again after REFUSED_RETRY_S). Its takers still run what the routes
        they share with other nodes hold."""
        key = (priority, route)
        refused_at = self._refused.get(key)
        if refused_at is not None and time.monotonic() - refused_at < REFUSED_RETRY_S:
            return None
        try:
            name = await self.topology.ensure_consumer(priority, route)
        except LimitReached as exc:
            if refused_at is None:
                log.warning("%s", exc)
            self._refused[key] = time.monotonic()
            return None
        if refused_at is not None:
            del self._refused[key]
        return name

    async def claim(self, delivery: Delivery, node: str, *, running: bool = False) -> Grant | None:
        """Record ``node`` as the holder of a delivered task, or dispose of the delivery.

        None means the message was not for running: a finished, cancelled or duplicate task is
        acked away, and one that used up its attempts is moved to the DLQ.
        """
        now = self.clock()

        def change(record: TaskRecord) -> TaskRecord:
            verdict = lifecycle.judge_delivery(record, delivery.seq, delivery.generation)
            if verdict is not Verdict.CLAIM:
                raise _Skip(verdict)
            return lifecycle.claim(
                record,
                node=node,
                seq=delivery.seq,
                deliveries=delivery.deliveries,
                generation=delivery.generation,
                ack_subject=delivery.ack_subject,
                lease_s=self.settings.ack_wait_s,
                now=now,
                running=running,
            )

        try:
            hint = delivery.submitted if delivery.deliveries == 1 else None
            record = await self.journal.update(delivery.task_id, change, hint=hint)
        except (TaskNotFound, TaskExpired):
            log.warning("dropping message of unknown task=%s", delivery.task_id)
            await self.queue.ack(delivery.ack_subject)
            return None
        except _Skip as skip:
            if skip.verdict is Verdict.DEAD:
                await self._bury(delivery.task_id, delivery.ack_subject, delivery.payload)
            else:
                await self.queue.ack(delivery.ack_subject)
            return None
        log.info(
            "claimed task=%s attempt=%d node=%s delivery=%d",
            record.id,
            record.attempt,
            node,
            delivery.deliveries,
        )
        return Grant(record, delivery.payload)

    async def take(
        self, node: str, capabilities: frozenset[str] = frozenset(), slots: int = 1
    ) -> list[Grant]:
        """Fetch and claim in one step, for a node that runs in this process (and tests)."""
        grants = []
        async for taker_node, delivery in self.fetch([Taker(node, capabilities, slots)]):
            grant = await self.claim(delivery, taker_node)
            if grant is not None:
                grants.append(grant)
        return grants

    async def unoffer(self, delivery: Delivery) -> None:
        """An offer nobody claimed goes straight back to the queue."""
        await self.queue.nak(delivery.ack_subject)
        self._mark(delivery.priority, delivery.route)

    # -- run --------------------------------------------------------------------------------

    async def begin(self, task_id: str, attempt: int, node: str = "") -> TaskRecord:
        now = self.clock()
        return await self.journal.update(task_id, lambda r: lifecycle.start(r, attempt, now, node))

    async def extend(self, task_id: str, attempt: int, node: str = "") -> TaskRecord:
        """Heartbeat: checked against the journal first, then ``+WPI`` on the ack subject."""
        now = self.clock()
        lease = self.settings.ack_wait_s
        record = await self.journal.update(
            task_id, lambda r: lifecycle.extend(r, attempt, lease, now, node)
        )
        await self.queue.extend(record.ack_subject)
        return record

    async def complete(
        self,
        task_id: str,
        attempt: int,
        result: bytes,
        node: str = "",
        outputs: Mapping[str, HeadTail] | None = None,
    ) -> TaskRecord:
        """First result wins (compare-and-set), then the confirmed ack removes the message.

        ``outputs`` is the node's own head+tail of the attempt's output, written first where
        the journal's differs, so a waiter that sees the result sees the exact output.
        """
        if len(result) > self.settings.max_payload_bytes:
            raise PayloadTooLarge("result", len(result), self.settings.max_payload_bytes)
        await self._output(task_id, outputs)
        now = self.clock()
        record = await self.journal.update(
            task_id, lambda r: lifecycle.succeed(r, attempt, result, now, node)
        )
        await self.queue.ack(record.ack_subject)
        log.info("succeeded task=%s attempt=%d node=%s", task_id, attempt, record.node)
        return record

    async def fail(
        self,
        task_id: str,
        attempt: int,
        error: str,
        *,
        retry: bool = True,
        node: str = "",
        outputs: Mapping[str, HeadTail] | None = None,
    ) -> TaskRecord:
        """A failed attempt: retried after the backoff, failed for good, or moved to the DLQ."""
        await self._output(task_id, outputs)
        now = self.clock()
        record = await self.journal.update(
            task_id, lambda r: lifecycle.fail(r, attempt, error[:4096], now, retry=retry, node=node)
        )
        await self._settle(record, self.settings.backoff_for(record.tries))
        log.info("failed task=%s attempt=%d status=%s: %s", task_id, attempt, record.status, error)
        return record

    async def _output(self, task_id: str, outputs: Mapping[str, HeadTail] | None) -> None:
        await self.journal.flush(task_id)
        for name, final in (outputs or {}).items():
            await self.journal.settle(task_id, name, final)

    async def release(
        self, task_id: str, attempt: int, *, reason: str, counts: bool, node: str = ""
    ) -> TaskRecord:
        """Hand a task back: at once, to be claimed again (a lost node's try still counts)."""
        now = self.clock()
        record = await self.journal.update(
            task_id,
            lambda r: lifecycle.release(r, attempt, now, reason=reason, counts=counts, node=node),
        )
        await self._settle(record, 0.0)
        log.info("released task=%s attempt=%d: %s", task_id, attempt, reason)
        return record

    async def _settle(self, record: TaskRecord, delay_s: float) -> None:
        """Act on the message after a failure or hand-back was recorded."""
        if record.status is Status.QUEUED:
            await self.queue.nak(record.ack_subject, delay_s)
            self._mark(record.priority, record.route)  # a delayed one: the periodic rescan
        elif record.status is Status.DEAD:
            await self._bury(record.id, record.ack_subject, None)
        else:
            await self.queue.ack(record.ack_subject)

    async def _bury(self, task_id: str, ack_subject: str, payload: bytes | None) -> None:
        """Move a task to HUB_DLQ with its error and history, then remove it from the queue.

        Each step is idempotent, so a move cut short by a crash is finished by the next
        delivery of the same message (its verdict is DEAD again).
        """
        now = self.clock()
        record = await self.journal.update(
            task_id,
            lambda r: (
                r
                if r.status is Status.DEAD
                else lifecycle.dead(r, now, r.error or f"gave up after {r.tries} attempts")
            ),
        )
        if payload is None:
            found = await self.queue.stored(record.priority, record.seq) if record.seq else None
            payload = found.payload if found and found.task_id == record.id else b""
        letter = DeadLetter(
            task_id=record.id,
            kind=record.kind,
            generation=record.generation,
            subject=subjects.task_subject(record.priority, record.route),
            payload=payload,
            error=record.error,
            history=[dataclasses.asdict(h) for h in record.history],
            dead_at=record.finished_at,
        )
        await self.queue.bury(letter)
        await self.queue.ack(ack_subject)
        log.warning("dead task=%s attempts=%d: %s", task_id, record.tries, record.error)

    # -- operator actions -------------------------------------------------------------------

    async def cancel(self, task_id: str) -> tuple[TaskRecord, TaskRecord]:
        """Cancel a queued or running task; (before, after). A running task's node is told to
        stop by whoever holds its stream; its later messages are refused (AlreadyFinished).

        A queued task's message is removed by its sequence: the journal's if it was delivered
        before, else found among its route's messages stored when it was queued. One not found
        (the search is bounded) is dropped at its delivery, unrun, or by the TTL sweep. The
        journal says cancelled first, so no delivery runs it meanwhile.
        """
        before = await self.journal.get(task_id)
        now = self.clock()
        after = await self.journal.update(task_id, lambda r: lifecycle.cancel(r, now))
        if before.status is Status.QUEUED:
            seq = after.seq or await self.queue.find(after)
            if seq:
                await self.queue.remove(after.priority, seq)
        elif after.ack_subject:
            await self.queue.ack(after.ack_subject)
        with nats_errors("notify cancel"):
            await self.nc.publish(subjects.cancel_subject(task_id), after.to_json())
        log.info("cancelled task=%s was=%s", task_id, before.status)
        return before, after

    async def replay(self, task_id: str) -> TaskRecord:
        """A dead task back to its queue as a new generation (new message id, fresh tries).

        Publish first, then the journal: if the journal write is lost the claim of the new
        generation's message catches the journal up, so the task is never stuck.
        """
        record = await self.journal.get(task_id)
        letter = await self.queue.dead_letter(task_id)
        if letter is None:
            raise WrongState(task_id, record.status, "replay (no dead letter)")
        if record.status is Status.DEAD and record.generation == letter.generation:
            now = self.clock()
            await self.queue.publish(lifecycle.replay(record, now), letter.payload)
            record = await self.journal.update(
                task_id,
                lambda r: lifecycle.replay(r, now) if r.generation == letter.generation else r,
            )
        elif record.generation <= letter.generation:
            raise WrongState(task_id, record.status, "replay")
        await self.queue.unbury(task_id)
        log.info("replayed task=%s generation=%d", task_id, record.generation)
        return record

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        return await self.queue.dead_letters(limit)

    async def purge_dead(self, task_id: str = "") -> int:
        if task_id:
            validate_task_id(task_id)  # a wildcard would pick some other task's dead letter
        letters = [await self.queue.dead_letter(task_id)] if task_id else await self.dead_letters()
        count = 0
        for letter in letters:
            if letter is not None:
                await self.queue.unbury(letter.task_id)
                count += 1
        return count

    async def sweep_expired(self) -> int:
        """Expire unclaimed tasks older than the task TTL, the stream's oldest messages first.

        Old messages that no delivery would run (a cancelled task's, a second copy) are removed
        on the way.
        """
        now, ttl, expired = self.clock(), self.settings.task_ttl_s, 0
        for priority in Priority:
            seq = 0
            for _ in range(SWEEP_BATCH):
                stored = await self.queue.oldest(priority, seq)
                if stored is None or now - stored.stamp < ttl:
                    break
                seq = stored.seq

                def change(record: TaskRecord, stored: Stored = stored) -> TaskRecord:
                    verdict = lifecycle.judge_delivery(record, stored.seq, stored.generation)
                    if verdict is Verdict.DROP:
                        raise _Skip(verdict)
                    return lifecycle.expire(record, now, ttl)

                try:
                    record = await self.journal.update(stored.task_id, change)
                except (_Skip, TaskNotFound, TaskExpired, InvalidTask):
                    await self.queue.remove(priority, seq)  # no delivery would run it
                    continue
                except WrongState:
                    continue  # claimed since, or its move to the DLQ is unfinished
                await self.queue.remove(priority, seq)
                expired += 1
                log.info("expired task=%s unclaimed for %.0f s", record.id, now - stored.stamp)
        return expired

    async def counts(self) -> Counts:
        queued, oldest, in_flight = {}, {}, 0
        now = self.clock()
        for priority in Priority:
            messages, first = await self.queue.depth(priority)
            with nats_errors("consumer info"):
                infos = await self.topology.js.consumers_info(subjects.stream_name(priority))
            flying = sum(i.num_ack_pending or 0 for i in infos)
            in_flight += flying
            queued[priority.label] = max(messages - flying, 0)
            oldest[priority.label] = max(now - first, 0.0) if messages else 0.0
        with nats_errors("dlq info"):
            dead = (await self.topology.js.stream_info(subjects.DLQ_STREAM)).state.messages
        return Counts(queued, oldest, in_flight, dead)
