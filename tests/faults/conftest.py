"""Fixtures of the fault suite: real nats-server processes that the tests kill and restart.

``nats_cluster``  a 3-server NatsCluster (routes on loopback, own store each, sync "always") in
                  ``tmp_path``, JetStream ready to place R3 streams. Servers a test SIGKILLs can
                  be restarted on the same store and ports (``server.restart()``); every member
                  is stopped at teardown, whatever the test left running.
``fault_hub``     a GrpcHub (tests/grpchub.py) on ``nats_server``: in-process gRPC replicas,
                  SDK nodes and clients, closed at teardown.
``node_processes`` ``await node_processes(addrs, node_id)``: a node in its own process
                  (``node_proc.py``), attached; SIGKILLed by its PID at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from grpchub import GrpcHub

from hub.dev.cluster import NatsCluster
from hub.nats.server import EmbeddedNats

NODE_PROC = Path(__file__).with_name("node_proc.py")


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with NatsCluster(tmp_path / "cluster", servers=3, sync="always") as cluster:
        yield cluster


# -- end-to-end fault fixtures (gRPC replicas, nodes in their own processes) -----------------


@pytest.fixture
async def fault_hub(nats_server: EmbeddedNats) -> AsyncIterator[GrpcHub]:
    """A GrpcHub (tests/grpchub.py) on ``nats_server``: in-process replicas, nodes, clients."""
    hub = GrpcHub(nats_server.url)
    try:
        yield hub
    finally:
        await hub.close()


class NodeProcess:
    """A ``node_proc.py`` child: its stdout read line by line, killed by its PID."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process, self.log = process, log

    @property
    def pid(self) -> int:
        return self.process.pid

    async def line(self, prefix: str, *, timeout_s: float = 20.0) -> list[str]:
        """The next stdout line starting with ``prefix``, split in words (bounded)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"node process exited: {self.log.read_text()[-2000:]}")
                words = raw.decode().split()
                if words and words[0] == prefix:
                    return words

    async def kill(self) -> None:
        """SIGKILL: no hand-back, no goodbye; the stream just breaks."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            await self.process.wait()


@pytest.fixture
async def node_processes(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[NodeProcess]]]:
    """``await node_processes(addrs, node_id)``: a node process, attached (its "connected" line
    read); every one still running at teardown is SIGKILLed by its PID."""
    started: list[NodeProcess] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}

    async def start(addrs: list[str], node_id: str) -> NodeProcess:
        log = tmp_path / f"node-{node_id}.log"
        with log.open("ab") as errors:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(NODE_PROC),
                ",".join(addrs),
                node_id,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                env=env,
                start_new_session=True,
            )
        node = NodeProcess(process, log)
        started.append(node)
        await node.line("connected")
        return node

    try:
        yield start
    finally:
        for node in started:
            await node.kill()
