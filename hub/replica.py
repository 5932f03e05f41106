"""One hub replica: connect to NATS, provision, run the pool, nodes, gRPC and housekeeping.

A replica holds no state of its own: kill it at any moment and another carries on. Stopping
it politely (SIGTERM) drains: it reports NOT_SERVING, tells its nodes to move, and hands back
what they did not take with them, so no task waits out a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from types import TracebackType
from typing import Self

import nats.js.errors
from nats.aio.client import Client as NATS

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

    async def start(self) -> int:
        """Connect and serve; returns the bound gRPC port."""
        s = self.settings
        self.nc = await connect(self.urls, s, name=self.id, on_reconnect=self._reconnected)
        js = self.nc.jetstream(timeout=s.request_timeout_s)
        topology = Topology(js, s)
        await topology.ensure()
        journal = Journal(self.nc, js, s)
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
        """Jobs that must run somewhere: at most one replica runs each at a time, holding a
        short-lived lock key (created only if absent, expiring on its own)."""
        interval = self.settings.housekeeping_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._lock("sweep", interval):
                    await self.pool.sweep_expired()
            except HubError as exc:
                log.warning("housekeeping failed: %s", exc)

    async def _lock(self, job: str, ttl_s: float) -> bool:
        with nats_errors("housekeeping lock"):
            try:
                await self.pool.topology.nodes.create(
                    subjects.lock_key(job), self.id.encode(), msg_ttl=max(1, math.ceil(ttl_s))
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
        return True

    async def stop(self, *, drain: bool = True) -> None:
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
