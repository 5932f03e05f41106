"""A local NATS cluster on loopback: N nats-servers routed together, JetStream on, own store each.

The hub promises to survive the loss of one NATS server of three (R3 streams and buckets). That
can only be shown with real processes that are SIGKILLed and restarted on the same store and the
same ports, so this launcher is shared by the fault tests, the benchmarks and ``hub dev cluster``:
what is measured is what is tested. Each server is an ``EmbeddedNats`` (the hub's own template
and durability mode) with a ``server_name`` and a ``cluster`` block appended.

Ports are fixed at start (client and route ports alike): routes must be known before any server
starts, and a restarted server must come back at the URL its clients and peers already know.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig

from hub.errors import ServerFailed
from hub.nats.server import EmbeddedNats

__all__ = ("ClusterServer", "NatsCluster", "cluster_config", "free_ports")

log = logging.getLogger(__name__)

CLUSTER_NAME = "hub"
HOST = "127.0.0.1"
#: A throwaway stream whose creation proves that the meta leader can place N replicas.
PROBE_STREAM = "HUB_DEV_CLUSTER_PROBE"
POLL_S = 0.1
RESTART_TRIES = 8

#: What a helper call raises while the cluster is electing or a server is down.
_TRANSIENT = (nats.errors.Error, TimeoutError, OSError)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports.

    All sockets are bound before any is closed, so the ports are distinct; another process could
    still take one before the server binds it, which a start then reports as ServerFailed.
    """
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]


def cluster_config(
    server_name: str, cluster_port: int, route_ports: list[int], cluster_name: str = CLUSTER_NAME
) -> str:
    """The text appended to the hub's nats-server template for one member of the cluster.

    A clustered JetStream server must have a unique ``server_name`` (the template has none, as a
    single embedded server needs none). Every member lists every route, its own included, which
    nats-server ignores: the same list serves all members.
    """
    routes = "\n".join(f"    nats-route://{HOST}:{port}" for port in route_ports)
    return (
        f"server_name: {server_name}\n"
        "cluster {\n"
        f"  name: {cluster_name}\n"
        f"  listen: {HOST}:{cluster_port}\n"
        "  routes: [\n"
        f"{routes}\n"
        "  ]\n"
        "}\n"
    )


class ClusterServer:
    """One member: fixed name, ports and store, so a restart is the same server coming back."""

    def __init__(
        self, name: str, data_dir: Path, client_port: int, cluster_port: int, extra: str, sync: str
    ) -> None:
        self.name, self.data_dir = name, data_dir
        self.client_port, self.cluster_port = client_port, cluster_port
        self.nats = EmbeddedNats(data_dir, port=client_port, sync=sync, name=name, extra=extra)
        self.restarts = 0

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "down"
        return f"ClusterServer({self.name} {self.url} {state})"

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.client_port}"

    @property
    def pid(self) -> int:
        """The nats-server process id (ServerFailed when not started)."""
        return self.nats.pid

    @property
    def running(self) -> bool:
        proc = self.nats.process
        return proc is not None and proc.returncode is None

    async def start(self) -> None:
        await self.nats.start()

    def kill(self) -> None:
        """SIGKILL the process: no flush, no goodbye to its peers (what a crash looks like)."""
        self.nats.kill()

    async def wait_exit(self) -> None:
        """Reap the killed process, so its ports are free and its pid cannot be reused by us."""
        proc = self.nats.process
        if proc is not None:
            await proc.wait()

    async def restart(self) -> None:
        """Start again on the same ports and store, after a kill (or a stop).

        The previous log is kept beside the new one (``<name>.log.<n>``) for post-mortems.
        """
        if self.running:
            raise ServerFailed(f"{self.name} is still running; kill or stop it first")
        await self.wait_exit()
        self.nats.process = None
        self.restarts += 1
        log_path = self.nats.log_path
        if log_path.exists():
            log_path.replace(log_path.with_name(f"{log_path.name}.{self.restarts}"))
        # The ports were just released by the dead process; should one still be held (another
        # process took it in between, or the kernel has not let go), try again briefly.
        for attempt in range(RESTART_TRIES):
            try:
                await self.nats.start()
                return
            except ServerFailed:
                if attempt == RESTART_TRIES - 1:
                    raise
                await asyncio.sleep(0.25)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace (EmbeddedNats.stop)."""
        await self.nats.stop()


class NatsCluster:
    """Start ``servers`` nats-servers routed as one cluster; usable once JetStream can place R=N.

    ::

        async with NatsCluster(tmp / "nats", servers=3) as cluster:
            settings = Settings(nats_url=cluster.url, stream_replicas=3)
            ...
            leader = await cluster.stream_leader("KV_hub_journal")
            leader.kill(); await leader.restart(); await cluster.wait_current()

    ``sync`` is nats-server's ``sync_interval`` for every member (``always``: an acknowledged
    write is on disk on each replica that acknowledged it).
    """

    def __init__(
        self,
        base_dir: str | Path,
        servers: int = 3,
        sync: str = "always",
        *,
        name: str = CLUSTER_NAME,
        ready_timeout_s: float = 30.0,
    ) -> None:
        if servers < 1:
            raise ValueError("a cluster needs at least one server")
        self.base_dir = Path(base_dir).resolve()
        self.size, self.sync, self.name = servers, sync, name
        self.ready_timeout_s = ready_timeout_s
        self.servers: list[ClusterServer] = []
        #: Seconds from the first process start to JetStream placing an R=N stream.
        self.ready_s = 0.0

    # -- addresses ----------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """Client URLs of every member, in server order (n1, n2, ...)."""
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """The URLs comma-separated: the value for ``HUB_NATS_URL``."""
        return ",".join(self.urls)

    def server(self, name: str) -> ClusterServer:
        for member in self.servers:
            if member.name == name:
                return member
        raise KeyError(name)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> Self:
        """Start every member at once (a JetStream meta group needs a quorum to elect), then
        wait until JetStream is usable across the cluster."""
        ports = free_ports(2 * self.size)
        client_ports, route_ports = ports[: self.size], ports[self.size :]
        self.servers = [
            ClusterServer(
                name=f"n{i + 1}",
                data_dir=self.base_dir / f"n{i + 1}",
                client_port=client_ports[i],
                cluster_port=route_ports[i],
                extra=cluster_config(f"n{i + 1}", route_ports[i], route_ports, self.name),
                sync=self.sync,
            )
            for i in range(self.size)
        ]
        began = time.monotonic()
        try:
            await asyncio.gather(*(s.start() for s in self.servers))
            await self.wait_ready()
        except BaseException:
            await self.stop()
            raise
        self.ready_s = time.monotonic() - began
        log.info(
            "nats cluster ready servers=%d sync=%s in %.1f s urls=%s",
            self.size,
            self.sync,
            self.ready_s,
            self.url,
        )
        return self

    async def stop(self) -> None:
        """Stop every member that still runs (SIGTERM, then SIGKILL after a grace)."""
        await asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- readiness ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[NATS]:
        """A short-lived admin connection to the running members (quiet about reconnects)."""

        async def quiet(exc: Exception) -> None:
            log.debug("cluster admin connection: %s", exc)

        urls = [s.url for s in self.servers if s.running] or self.urls
        nc = await nats.connect(
            servers=urls,
            name="hub-dev-cluster",
            connect_timeout=2,
            reconnect_time_wait=0.1,
            max_reconnect_attempts=-1,
            error_cb=quiet,
        )
        try:
            yield nc
        finally:
            await nc.close()

    async def wait_ready(self, timeout_s: float | None = None) -> float:
        """Wait until JetStream places a stream on every member; the seconds it took.

        ``account_info()`` answers once a meta leader is elected, but that needs only a quorum;
        creating (and deleting) an in-memory R=N probe stream proves all N members are in.
        """
        replicas = len(self.servers)
        config = StreamConfig(
            name=PROBE_STREAM,
            subjects=["_hub_dev.cluster.probe"],
            storage=StorageType.MEMORY,
            num_replicas=replicas,
        )

        async def probe(nc: NATS) -> None:
            js = nc.jetstream(timeout=2)
            await js.account_info()
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(PROBE_STREAM)
            await js.add_stream(config)
            await js.delete_stream(PROBE_STREAM)

        return await self._until(probe, f"JetStream with {replicas} replicas", timeout_s)

    async def wait_current(self, timeout_s: float | None = None) -> float:
        """Wait until every stream and consumer has a leader and every replica is current.

        After a restart this is "the cluster is whole again": the member caught up on what it
        missed, so losing another member now loses no quorum.
        """

        async def whole(nc: NATS) -> None:
            js = nc.jetstream(timeout=2)
            for info in await js.streams_info():
                name = info.config.name or ""
                _check_group(f"stream {name}", info.cluster, info.config.num_replicas or 1)
                for consumer in await js.consumers_info(name):
                    replicas = consumer.config.num_replicas or info.config.num_replicas or 1
                    _check_group(f"consumer {name}/{consumer.name}", consumer.cluster, replicas)

        return await self._until(whole, "every replica current", timeout_s)

    async def stream_leader(self, stream: str) -> ClusterServer | None:
        """The member leading ``stream`` now (None while it has no leader)."""
        async with self.connection() as nc:
            info = await nc.jetstream(timeout=2).stream_info(stream)
        leader = info.cluster.leader if info.cluster else None
        return self.server(leader) if leader else None

    async def wait_leader(
        self, stream: str, *, other_than: str = "", timeout_s: float | None = None
    ) -> tuple[ClusterServer, float]:
        """Wait for ``stream`` to have a leader (not ``other_than``); (leader, seconds waited).

        After SIGKILLing a leader this measures the election as the server sees it.
        """
        found: list[str] = []

        async def elected(nc: NATS) -> None:
            info = await nc.jetstream(timeout=0.5).stream_info(stream)
            leader = info.cluster.leader if info.cluster else None
            if not leader or leader == other_than:
                raise _NotYet(f"stream {stream} has no leader yet")
            found.append(leader)

        waited = await self._until(elected, f"a leader for {stream}", timeout_s)
        return self.server(found[-1]), waited

    async def _until(
        self,
        check: Callable[[NATS], Awaitable[None]],
        what: str,
        timeout_s: float | None,
    ) -> float:
        """Run ``check`` until it passes; ServerFailed naming the last reason at the deadline."""
        timeout_s = self.ready_timeout_s if timeout_s is None else timeout_s
        began = time.monotonic()
        deadline = began + timeout_s
        last = "no attempt"
        async with self.connection() as nc:
            while True:
                try:
                    await check(nc)
                    return time.monotonic() - began
                except (_NotYet, *_TRANSIENT) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    raise ServerFailed(f"nats cluster: no {what} after {timeout_s:.0f} s ({last})")
                await asyncio.sleep(POLL_S)


class _NotYet(Exception):
    """A readiness check that ran but found the cluster not there yet."""


def _check_group(what: str, cluster: object, replicas: int) -> None:
    leader = getattr(cluster, "leader", None)
    if not leader:
        raise _NotYet(f"{what} has no leader")
    peers = getattr(cluster, "replicas", None) or []
    if len(peers) < replicas - 1:
        raise _NotYet(f"{what} has {len(peers) + 1} of {replicas} replicas")
    behind = [p.name for p in peers if not p.current or p.offline]
    if behind:
        raise _NotYet(f"{what}: {', '.join(str(b) for b in behind)} not current")
