"""Nodes attached to this replica: their sessions, the dispatch loop that offers them work,
presence in ``hub_nodes``, and the re-attach grace when a node's stream ends.

A replica fetches only what its attached nodes can run now (free slots, capabilities, their own
node id) and offers each task to one eligible node; the node claims it and is granted it, or
the offer lapses and the task goes straight back. Nothing here outlives the process: a node
that loses this replica re-attaches to another, naming the tasks it still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from hub.config import Settings
from hub.errors import HubError, TaskExpired, TaskNotFound
from hub.model import Priority
from hub.nats import subjects
from hub.nats.inline import subscribe_inline
from hub.pool import Grant, Pool
from hub.queue import Delivery
from hub.scheduling import Taker

__all__ = ("NodeSession", "Nodes", "Notice")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the hub tells a node: an offer, or that it must stop a task (and why)."""

    kind: str  # "offer" | "grant" | "cancel" | "drain"
    task_id: str = ""
    attempt: int = 0
    reason: str = ""
    delivery: Delivery | None = None
    grant: Grant | None = None


@dataclass(eq=False)
class NodeSession:
    """One attached node stream."""

    node: str
    capabilities: frozenset[str]
    slots: int
    send: Callable[[Notice], None]
    held: dict[str, int] = field(default_factory=dict)  # task id -> attempt
    offered: dict[str, Delivery] = field(default_factory=dict)
    reported_free: int | None = None
    kinds: frozenset[str] = frozenset()  # kinds granted at once, without an offer
    claiming: int = 0  # direct claims in progress (each will take a slot)
    # task id -> priority, for tasks routed to this node by name granted here; an entry
    # counts while its task is held (see own), and is dropped once it is not
    pinned: dict[str, Priority] = field(default_factory=dict)

    @property
    def free(self) -> int:
        pending = len(self.offered) + self.claiming
        free = self.slots - len(self.held) - pending
        if self.reported_free is not None:
            free = min(free, self.reported_free - pending)
        return max(free, 0)

    def granted(self, delivery: Delivery, attempt: int) -> None:
        """The node holds the task now. One routed to it by name is noted with its priority:
        its message stays in the route's subject until it ends (see own)."""
        self.held[delivery.task_id] = attempt
        if delivery.route.node == self.node:
            self.pinned[delivery.task_id] = delivery.priority

    def own(self) -> dict[Priority, int]:
        """Per priority, the tasks routed to this node that it holds or has on offer: their
        messages are in flight to it, so its route's subject holds at least that many."""
        counts: dict[Priority, int] = {}
        if not self.pinned and not self.offered:
            return counts
        for task_id, priority in list(self.pinned.items()):
            if task_id in self.held:
                counts[priority] = counts.get(priority, 0) + 1
            else:
                del self.pinned[task_id]
        for delivery in self.offered.values():
            if delivery.route.node == self.node:
                counts[delivery.priority] = counts.get(delivery.priority, 0) + 1
        return counts


class Nodes:
    """This replica's attached nodes and the loop that hands them work."""

    def __init__(self, pool: Pool, settings: Settings, replica_id: str) -> None:
        self.pool, self.settings, self.replica_id = pool, settings, replica_id
        self.sessions: dict[str, NodeSession] = {}
        # A slot freed (or anything else worth a dispatch round) rings the same event as a
        # stored task: the loop waits on one event, not on a race of two.
        self.kick = pool.bell
        self.draining = False
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._presence_at: dict[str, float] = {}

    # -- background work ---------------------------------------------------------------------

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def start(self) -> None:
        await subscribe_inline(self.pool.nc, subjects.cancel_subject("*"), self._cancelled)
        self.spawn(self._dispatch_loop())

    async def close(self) -> None:
        # The flag, not only the cancel, ends the dispatch loop: on Python 3.11 a cancel that
        # lands as a NATS reply arrives can be swallowed (asyncio.wait_for inside nats-py).
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch_loop(self) -> None:
        """Offer work whenever a task is stored (doorbell), a slot frees (kick), or every
        half second (redeliveries ring no bell)."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            # (a timer, not asyncio.timeout: that costs 4x as much, and this runs per round)
            timer = loop.call_later(0.5, self.kick.set)
            await self.kick.wait()
            timer.cancel()
            self.kick.clear()
            if self.draining:
                continue
            try:
                await self.dispatch_once()
            except Exception as exc:  # a bug too: this loop stopping would strand every task
                bug = not isinstance(exc, HubError)
                log.warning("dispatch round failed: %s", exc, exc_info=bug)
                await asyncio.sleep(0.2)

    async def dispatch_once(self) -> int:
        """One round: fetch for every session with free slots and offer what came back."""
        if not self.pool.due():
            return 0
        takers = [
            Taker(s.node, s.capabilities, free, s.own)
            for s in self.sessions.values()
            if (free := s.free) > 0
        ]
        if not takers:
            return 0
        offered = 0
        async for node, delivery in self.pool.fetch(takers):
            session = self.sessions.get(node)
            if session is None:
                await self.pool.unoffer(delivery)
                continue
            if delivery.kind in session.kinds:
                # The node said it runs this kind: claim for it and grant at once, saving the
                # Offer and Claim messages (and their round trip) per task.
                session.claiming += 1
                self.spawn(self._grant(session, delivery))
                offered += 1
                continue
            session.offered[delivery.task_id] = delivery
            session.send(Notice("offer", delivery.task_id, delivery=delivery))
            asyncio.get_running_loop().call_later(
                self.settings.offer_timeout_s, self._lapse, session, delivery.task_id
            )
            offered += 1
        if offered:
            self.kick.set()  # more may be waiting: go round again at once
        return offered

    async def _grant(self, session: NodeSession, delivery: Delivery) -> None:
        """Claim a delivery for a node that runs its kind and send the grant."""
        try:
            grant = await self.pool.claim(delivery, session.node, running=True)
        except HubError as exc:
            log.warning("direct claim failed task=%s: %s", delivery.task_id, exc)
            await self.pool.unoffer(delivery)
            grant = None
        finally:
            session.claiming -= 1
        if grant is None:
            self.kick.set()
            return
        attempt = grant.record.attempt
        if self.sessions.get(session.node) is not session:
            # The stream ended while claiming: the task is the node's, as after any detach.
            self.spawn(self._after_grace(session.node, {delivery.task_id: attempt}, time.time()))
            return
        session.granted(delivery, attempt)
        session.send(Notice("grant", delivery.task_id, attempt, grant=grant))

    def _lapse(self, session: NodeSession, task_id: str) -> None:
        delivery = session.offered.pop(task_id, None)
        if delivery is not None:
            self.spawn(self.pool.unoffer(delivery))

    def _cancelled(self, msg: Msg) -> None:
        task_id = msg.subject.rsplit(".", 1)[-1]
        for session in self.sessions.values():
            attempt = session.held.pop(task_id, None)
            if attempt is not None:
                session.send(Notice("cancel", task_id, attempt, "cancelled"))
                self.kick.set()

    # -- sessions ----------------------------------------------------------------------------

    async def attach(
        self, session: NodeSession, running: list[tuple[str, int]]
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Register a node; re-attach the tasks it still runs. Returns (kept, lost)."""
        old = self.sessions.get(session.node)
        if old is not None:
            old.send(Notice("drain", reason="the node attached again elsewhere"))
        self.sessions[session.node] = session
        kept, lost = [], []
        for task_id, attempt in running:
            try:
                await self.pool.extend(task_id, attempt, session.node)
            except HubError as exc:
                log.info("not re-attached task=%s node=%s: %s", task_id, session.node, exc)
                lost.append((task_id, attempt))
                continue
            session.held[task_id] = attempt
            kept.append((task_id, attempt))
        await self.presence(session, force=True)
        log.info(
            "node attached node=%s slots=%d caps=%s kept=%d lost=%d",
            session.node,
            session.slots,
            ",".join(sorted(session.capabilities)) or "-",
            len(kept),
            len(lost),
        )
        self.kick.set()
        return kept, lost

    def detach(self, session: NodeSession) -> None:
        """The stream ended: offers go back now, held tasks after the re-attach grace."""
        if self.sessions.get(session.node) is session:
            del self.sessions[session.node]
        for delivery in session.offered.values():
            self.spawn(self.pool.unoffer(delivery))
        session.offered.clear()
        if session.held and not self.draining:  # a drain settles its sessions' tasks itself
            self.spawn(self._after_grace(session.node, dict(session.held), time.time()))
        log.info("node detached node=%s held=%d", session.node, len(session.held))

    async def _after_grace(self, node: str, held: dict[str, int], since: float) -> None:
        await asyncio.sleep(0 if self.draining else self.settings.node_grace_s)
        for task_id, attempt in held.items():
            await self.release_unless_reattached(task_id, attempt, node, since)

    async def release_unless_reattached(
        self, task_id: str, attempt: int, node: str, since: float
    ) -> None:
        """Hand a lost node's task back, unless it re-attached (to any replica) since then:
        re-attaching extends the lease, which moves the record's ``updated_at``."""
        try:
            record = await self.pool.journal.get(task_id)
            if record.attempt != attempt or not record.active or record.updated_at > since:
                return
            await self.pool.release(
                task_id, attempt, reason=f"node {node} lost", counts=True, node=node
            )
        except (TaskNotFound, TaskExpired):
            return
        except HubError as exc:
            log.info("hand-back of lost task=%s skipped: %s", task_id, exc)

    async def claim(self, session: NodeSession, task_id: str) -> Grant | str:
        """The node claims an offered task: a Grant, or the reason it is denied."""
        delivery = session.offered.pop(task_id, None)
        if delivery is None:
            return "no open offer for this task (it lapsed or was never made)"
        grant = await self.pool.claim(delivery, session.node, running=True)
        if grant is None:
            self.kick.set()
            return "task no longer available"
        session.granted(delivery, grant.record.attempt)
        return grant

    async def decline(self, session: NodeSession, task_id: str) -> None:
        delivery = session.offered.pop(task_id, None)
        if delivery is not None:
            await self.pool.unoffer(delivery)
        self.kick.set()

    async def heartbeat(
        self, session: NodeSession, running: list[tuple[str, int]]
    ) -> list[tuple[str, int, str]]:
        """Extend each lease; return (task, attempt, reason) for those the node must stop."""
        if self.draining:
            # The node is moving: a lease extended here would pass for a re-attach elsewhere.
            return []
        stop = []
        for task_id, attempt in running:
            try:
                await self.pool.extend(task_id, attempt, session.node)
                session.held[task_id] = attempt
            except HubError as exc:
                session.held.pop(task_id, None)
                stop.append((task_id, attempt, str(exc)))
        await self.presence(session)
        return stop

    def finished(self, session: NodeSession, task_id: str) -> None:
        session.held.pop(task_id, None)
        self.kick.set()

    async def presence(self, session: NodeSession, *, force: bool = False) -> None:
        """Write the node's presence to ``hub_nodes`` (at most once per heartbeat interval)."""
        now = time.time()
        if not force and now - self._presence_at.get(session.node, 0) < self.settings.heartbeat_s:
            return
        self._presence_at[session.node] = now
        info = {
            "node_id": session.node,
            "capabilities": sorted(session.capabilities),
            "slots": session.slots,
            "free": session.free,
            "replica": self.replica_id,
            "seen_at": now,
            "tasks": sorted(session.held),
        }
        with contextlib.suppress(HubError, Exception):
            await self.pool.topology.nodes.put(
                subjects.node_key(session.node), json.dumps(info).encode()
            )

    async def drain(self, timeout_s: float) -> None:
        """Graceful stop: offers go back and nodes are told to move. A moving node re-attaches
        its running tasks to another replica (which extends their leases); a task not
        re-attached within ``timeout_s`` is handed back (its try does not count), so no task
        waits out its lease and none is charged a try for the drain."""
        self.draining = True
        since = time.time()
        sessions = list(self.sessions.values())
        for session in sessions:
            for delivery in session.offered.values():
                await self.pool.unoffer(delivery)
            session.offered.clear()
            session.send(Notice("drain", reason="replica shutting down; reconnect to another"))
        deadline = time.monotonic() + timeout_s
        while True:
            # held tasks of every session, as they are now (a result arriving meanwhile pops it)
            held = [(t, a, s.node) for s in sessions for t, a in list(s.held.items())]
            ours = await asyncio.gather(*(self._unmoved(t, a, since) for t, a, _ in held))
            left = [h for h, mine in zip(held, ours, strict=True) if mine]
            if not left or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        for task_id, attempt, node in left:
            with contextlib.suppress(HubError):
                await self.pool.release(
                    task_id, attempt, reason="replica drained", counts=False, node=node
                )

    async def _unmoved(self, task_id: str, attempt: int, since: float) -> bool:
        """Whether a task held through this replica is still on that attempt and was not
        re-attached (to another replica: its lease extended) since ``since``."""
        try:
            record = await self.pool.journal.get(task_id)
        except (TaskNotFound, TaskExpired):
            return False
        except HubError:
            return True  # cannot tell now: ask again, hand it back at the deadline
        return record.attempt == attempt and record.active and record.updated_at <= since
