"""One hub replica: connect to NATS, provision, run the pool, nodes, gRPC and housekeeping.

A replica holds no state of its own: kill it at any moment and another carries on. Stopping
it politely (SIGTERM) drains: it reports NOT_SERVING, tells its nodes to move, and hands back
what they did not take with them, so no task waits out a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import api

from hub.config import Settings
from hub.errors import HubError
from hub.grpc.server import GrpcServer
from hub.journal import Journal
from hub.nats import subjects
from hub.nats.connection import connect
from hub.nats.errors import nats_errors
from hub.nats.topology import Topology
from hub.nodes import Nodes
from hub.pool import Pool
from hub.queue import Queue

__all__ = ("Replica",)

log = logging.getLogger(__name__)


class Replica:
    def __init__(self, settings: Settings, urls: list[str], *, replica_id: str = "") -> None:
        self.settings, self.urls = settings, urls
        self.id = replica_id or f"replica-{uuid.uuid4().hex[:8]}"
        self.nc: NATS
        self.pool: Pool
        self.nodes: Nodes
        self.grpc: GrpcServer
        self.port = 0
        self._housekeeping: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> int:
        """Connect and serve; returns the bound gRPC port."""
        s = self.settings
        self.nc = await connect(self.urls, s, name=self.id, on_reconnect=self._reconnected)
        js = self.nc.jetstream(timeout=s.request_timeout_s)
        topology = Topology(js, s)
        await topology.ensure()
        journal = Journal(self.nc, js, s, shards=topology.journal_shards)
        await journal.start()
        self.pool = Pool(self.nc, topology, journal, Queue(self.nc, js, s), s)
        await self.pool.start()
        self.nodes = Nodes(self.pool, s, self.id)
        await self.nodes.start()
        self.grpc = GrpcServer(self.pool, self.nodes, s.grpc_addr, s.token)
        self.port = await self.grpc.start()
        self._housekeeping = asyncio.create_task(self._housekeep())
        log.info("replica %s serving grpc port=%d nats=%s", self.id, self.port, self.urls)
        return self.port

    async def _reconnected(self) -> None:
        self.pool.journal.reconnected()
        self.pool.topology.forget_consumers()
        self.nodes.kick.set()

    async def _housekeep(self) -> None:
        """Jobs that must run somewhere: expire unclaimed tasks past their TTL, clean the
        presence of nodes no longer heard of. Every replica tries each job once per interval;
        at most one runs it at a time, holding the job's lock key (see ``_exclusively``)."""
        interval = self.settings.housekeeping_interval_s
        jobs: dict[str, Callable[[], Awaitable[int]]] = {
            "sweep": lambda: self.pool.sweep_expired(),
            "presence": self._clean_presence,
        }
        while not self._stopping:  # the flag too: a cancel can be swallowed (see Nodes.close)
            await asyncio.sleep(interval)
            for job, run in jobs.items():
                try:
                    await self._exclusively(job, run, interval)
                except Exception as exc:  # a background loop: log, carry on next interval
                    log.warning("housekeeping %s failed: %s", job, exc)

    async def _exclusively(
        self, job: str, run: Callable[[], Awaitable[int]], interval_s: float
    ) -> bool:
        """Run ``job`` if no other replica holds its lock key; False if one does.

        The key is created only if absent, with a per-message TTL (so a replica that dies
        holding it blocks no one for long), and renewed by compare-and-set while the job runs,
        so a job longer than the TTL is not joined by a second replica. A renewal that fails
        (the key expired and another replica took it) stops the job; each job's steps are
        idempotent compare-and-set writes, so one cut short is finished by the next run.
        """
        ttl = max(1, math.ceil(interval_s))
        revision = await self._lock(job, ttl)
        if revision is None:
            return False
        work = asyncio.ensure_future(run())
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=ttl / 3)
                if done:
                    count = work.result()
                    if count:
                        log.info("housekeeping %s: %d", job, count)
                    return True
                revision = await self._renew(job, revision, ttl)
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work

    async def _lock(self, job: str, ttl_s: int) -> int | None:
        """Create the job's lock key if absent; its revision, or None if another holds it."""
        with nats_errors("housekeeping lock"):
            try:
                return await self.pool.topology.nodes.create(
                    subjects.lock_key(job), self.id.encode(), msg_ttl=ttl_s
                )
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
                return None  # held (or expired just now: try next interval)

    async def _renew(self, job: str, revision: int, ttl_s: int) -> int:
        """Extend a held lock (compare-and-set on its revision); raises if it was lost."""
        # KeyValue.update takes no TTL: publish to the key's subject as it would
        headers = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(revision)}
        with nats_errors("housekeeping lock renewal"):
            ack = await self.pool.topology.js.publish(
                f"$KV.{subjects.NODES_BUCKET}.{subjects.lock_key(job)}",
                self.id.encode(),
                headers=headers,
                msg_ttl=ttl_s,
            )
        return ack.seq

    async def _clean_presence(self) -> int:
        """Delete the presence of nodes not heard of for three heartbeats (killed, or cut off
        from every replica); the bucket's max age alone would keep them listed far longer.
        A delete is a compare-and-set on the revision read, so a fresh heartbeat wins."""
        topology = self.pool.topology
        stale_s = 3 * self.settings.heartbeat_s
        removed = 0
        with nats_errors("clean node presence"):
            for entry in await topology.presences(self.pool.queue.requests):
                try:
                    seen_at = float(json.loads(entry.value or b"{}").get("seen_at", 0))
                except (ValueError, AttributeError):
                    continue
                if time.time() - seen_at <= stale_s:
                    continue
                with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                    await topology.nodes.delete(entry.key, last=entry.revision)
                    removed += 1
        return removed

    async def stop(self, *, drain: bool = True) -> None:
        self._stopping = True
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        await self.grpc.not_serving()
        if drain:
            with contextlib.suppress(HubError):
                await self.nodes.drain(timeout_s=self.settings.node_grace_s)
        await self.grpc.stop(1.0)
        await self.nodes.close()
        await self.pool.journal.flush_all()  # output the nodes sent up to the end
        with contextlib.suppress(Exception):
            await self.nc.drain()
        log.info("replica %s stopped", self.id)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
