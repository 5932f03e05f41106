"""Test helpers shared by the suites: a Core (one replica's library layer) and bounded polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from hub.config import Settings
from hub.journal import Journal
from hub.model import Priority
from hub.nats import subjects
from hub.nats.connection import connect
from hub.nats.inline import subscribe_inline
from hub.nats.topology import Topology
from hub.pool import Pool
from hub.queue import Queue

#: Timers short enough for a test to outlive them, long enough for a busy 2-CPU machine.
FAST: dict[str, Any] = {
    "ack_wait_s": 1.5,
    "heartbeat_s": 0.3,
    "append_coalesce_ms": 5.0,
    "retry_backoff_s": (0.0,),
    "request_timeout_s": 3.0,
    "connect_timeout_s": 3.0,
    "result_ttl_s": 60.0,
    "dedupe_window_s": 120.0,
    "max_payload_bytes": 64 * 1024,
    "journal_head_bytes": 256,
    "journal_tail_bytes": 512,
}


#: nats-py 2.16's reconnect loop (``Client._attempt_reconnect``) does not close a transport
#: whose handshake failed (a restarting nats-server that takes the TCP connection before it
#: answers); the next attempt replaces it, and when the garbage collector finds the old
#: StreamWriter it warns "unclosed". That is nats-py's, not the hub's: the tests that restart
#: a nats-server under connected clients ignore exactly that warning (seen once in CI).
NATS_PY_RECONNECT_LEAK = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function StreamWriter.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


def make_settings(**overrides: Any) -> Settings:
    return Settings(**(FAST | overrides))


@dataclass
class Core:
    """The library layer of one hub replica, on its own NATS connection."""

    nc: NATS
    js: JetStreamContext
    settings: Settings
    topology: Topology
    journal: Journal
    queue: Queue
    pool: Pool
    reconnects: int = 0
    reconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def stream_messages(self, priority: Priority = Priority.NORMAL) -> int:
        info = await self.js.stream_info(subjects.stream_name(priority))
        return info.state.messages

    async def all_task_messages(self) -> int:
        return sum([await self.stream_messages(p) for p in Priority])

    async def journal_messages(self, shard: int | None = None) -> int:
        """Messages in one journal bucket, or in all of them."""
        shards = range(self.journal.shards) if shard is None else [shard]
        return await journal_messages(self.js, shards)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()


async def journal_messages(js: JetStreamContext, shards: Iterable[int]) -> int:
    """Messages in these journal buckets' streams, together."""
    total = 0
    for shard in shards:
        total += (await js.stream_info(f"KV_{subjects.journal_bucket(shard)}")).state.messages
    return total


async def open_core(url: str, settings: Settings, *, name: str = "hub-test") -> Core:
    holder: list[Core] = []

    async def on_reconnect() -> None:
        if holder:
            holder[0].reconnects += 1
            holder[0].journal.reconnected()
            holder[0].reconnected.set()

    nc = await connect([url], settings, name=name, on_reconnect=on_reconnect)
    js = nc.jetstream(timeout=settings.request_timeout_s)
    topology = Topology(js, settings)
    await topology.ensure()
    journal = Journal(nc, js, settings, shards=topology.journal_shards)
    queue = Queue(nc, js, settings)
    pool = Pool(nc, topology, journal, queue, settings)
    await pool.start()
    core = Core(nc, js, settings, topology, journal, queue, pool)
    holder.append(core)
    return core


@contextlib.asynccontextmanager
async def published(nc: NATS, subject: str) -> AsyncIterator[list[str]]:
    """The subjects of the messages published on ``subject`` (a wildcard) while the block runs.

    Read inline, in the connection's read loop, and flushed at both ends: every message sent
    before the block ends is in the list when it ends, without a sleep.
    """
    seen: list[str] = []
    sub = await subscribe_inline(nc, subject, lambda msg: seen.append(msg.subject), headers=False)
    await nc.flush()
    try:
        yield seen
    finally:
        await nc.flush()
        await sub.unsubscribe()


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, timeout_s: float, interval_s: float = 0.05
) -> Any:
    """Poll ``probe`` until it returns something truthy; bounded in time (and so in count)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


def children(pid: int) -> list[int]:
    """The live children of ``pid``, from /proc (Linux): for cleaning up what a test's own
    child started."""
    tasks = Path(f"/proc/{pid}/task")
    with contextlib.suppress(OSError):  # gone, or a thread of it exited while we read
        return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]
    return []


async def take_one(pool: Pool, node: str, *, timeout_s: float, **kwargs: Any) -> Any:
    """Poll ``pool.take`` until it grants one task (bounded); the Grant."""

    async def probe() -> Any:
        grants = await pool.take(node, **kwargs)
        assert len(grants) <= 1, grants
        return grants[0] if grants else None

    return await eventually(probe, timeout_s=timeout_s)


async def take_all(pool: Pool, node: str, count: int, *, timeout_s: float, **kwargs: Any) -> list:
    """Take exactly ``count`` grants in total (bounded in time), one take call after another."""
    grants: list[Any] = []

    async def probe() -> bool:
        grants.extend(await pool.take(node, **kwargs))
        return len(grants) >= count

    await eventually(probe, timeout_s=timeout_s, interval_s=0.01)
    return grants


class TcpProxy:
    """A loopback TCP proxy (to a NATS server or a replica's gRPC port) whose link can be cut
    and healed: a network fault for one client while the server and every other client carry
    on (not a NATS or gRPC mock).

    While cut, the proxy does not listen at all, so reconnect attempts are refused outright.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._links |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()
            self._links.discard(dst)

    async def cut(self) -> None:
        """Stop listening and drop every link."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.close()
        self._links.clear()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def blip(self) -> None:
        """Drop every link but keep listening: the next connection attempt goes through."""
        for writer in list(self._links):
            writer.close()
        self._links.clear()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def heal(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def close(self) -> None:
        await self.cut()
