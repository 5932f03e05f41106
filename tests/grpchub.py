"""End-to-end harness: real replicas (gRPC on loopback), real nodes, clients and a raw node.

``GrpcHub`` starts replicas on one NATS server, nodes (the ``hub.node`` SDK) and clients, and
closes them in the right order (nodes, then clients, then replicas). ``RawNode`` speaks the
node protocol message by message through a ``grpc.aio`` channel, for what the SDK never says:
stale attempts, bad hellos, results after a cancel.

Every wait is bounded; nothing here sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from hubtest import eventually, journal_messages, make_settings

from hub.client import Client, channel_options
from hub.config import Settings
from hub.grpc.outbox import unbatch
from hub.model import Priority
from hub.nats import subjects
from hub.node import Handler, Node
from hub.replica import Replica
from hub.v1 import common_pb2, nodes_pb2, nodes_pb2_grpc

#: Timers for the end-to-end tests, on top of hubtest.FAST: a lost node's tasks go back after
#: half a second, an unclaimed offer after two.
E2E: dict[str, Any] = {
    "grpc_addr": "127.0.0.1:0",
    "node_grace_s": 0.5,
    "offer_timeout_s": 2.0,
}

STEP_S = 10.0  # the bound on any single expected event


def e2e_settings(**overrides: Any) -> Settings:
    return make_settings(**(E2E | overrides))


def addr(replica: Replica) -> str:
    return f"127.0.0.1:{replica.port}"


class GrpcHub:
    """Replicas, nodes and clients of one test, all on the same NATS server."""

    def __init__(self, nats_url: str, **overrides: Any) -> None:
        self.nats_url = nats_url
        self.overrides = overrides
        self.replicas: list[Replica] = []
        self.nodes: list[tuple[Node, asyncio.Task[None]]] = []
        self.clients: list[Client] = []
        self.channels: list[grpc.aio.Channel] = []
        self.raw: list[RawNode] = []

    def settings(self, **overrides: Any) -> Settings:
        return e2e_settings(**(self.overrides | overrides))

    async def replica(self, **overrides: Any) -> Replica:
        replica = Replica(self.settings(**overrides), [self.nats_url])
        self.replicas.append(replica)
        await replica.start()
        return replica

    async def stop_replica(self, replica: Replica, *, drain: bool = True) -> None:
        self.replicas.remove(replica)
        await replica.stop(drain=drain)

    async def node(
        self,
        addrs: str | Sequence[str],
        node_id: str,
        handlers: dict[str, Handler],
        *,
        slots: int = 1,
        capabilities: Sequence[str] = (),
        token: str = "",
    ) -> Node:
        """A Node SDK instance, running and attached (its welcome received)."""
        node = Node(
            addrs,
            node_id,
            slots=slots,
            capabilities=capabilities,
            token=token,
            handlers=handlers,
            max_backoff_s=0.5,
        )
        runner = asyncio.create_task(node.run())
        self.nodes.append((node, runner))
        async with asyncio.timeout(STEP_S):
            await node.connected.wait()
        return node

    def client(self, target: Replica | str, *, token: str = "") -> Client:
        client = Client(target if isinstance(target, str) else addr(target), token=token)
        self.clients.append(client)
        return client

    def channel(self, target: Replica | str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(
            target if isinstance(target, str) else addr(target), options=channel_options()
        )
        self.channels.append(channel)
        return channel

    async def raw_node(
        self,
        target: Replica | str,
        node_id: str,
        *,
        slots: int = 1,
        capabilities: Sequence[str] = (),
        running: Sequence[tuple[str, int]] = (),
    ) -> RawNode:
        """A raw protocol stream that said hello and got its welcome."""
        raw = RawNode(self.channel(target))
        self.raw.append(raw)
        refs = [nodes_pb2.TaskRef(task_id=t, attempt=a) for t, a in running]
        hello = nodes_pb2.Hello(
            node_id=node_id, slots=slots, capabilities=list(capabilities), running=refs
        )
        raw.send(hello=hello)
        raw.welcome = (await raw.expect("welcome")).welcome
        return raw

    async def stream_messages(self, replica: Replica, priority: Priority | None = None) -> int:
        """Messages in one priority's work queue (or all four): queued or in flight."""
        js = replica.nc.jetstream()
        total = 0
        for p in Priority if priority is None else (priority,):
            total += (await js.stream_info(subjects.stream_name(p))).state.messages
        return total

    async def journal_messages(self, replica: Replica) -> int:
        """Messages in every journal bucket."""
        return await journal_messages(replica.nc.jetstream(), range(replica.pool.journal.shards))

    async def close(self) -> None:
        for raw in self.raw:
            await raw.close()
        for node, runner in self.nodes:
            with contextlib.suppress(Exception):
                await node.stop(hand_back=False)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        for client in self.clients:
            await client.close()
        for channel in self.channels:
            await channel.close()
        for replica in reversed(self.replicas):
            with contextlib.suppress(Exception):
                await replica.stop(drain=False)


class RawNode:
    """One NodeService.Connect stream driven by hand: ``send`` a message, ``expect`` one back.

    Messages that arrive while waiting for another kind are kept, so an ``expect`` never loses
    what a later ``expect`` looks for.
    """

    def __init__(self, channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self.outbox: asyncio.Queue[nodes_pb2.NodeMessage | None] = asyncio.Queue()
        self.call = nodes_pb2_grpc.NodeServiceStub(channel).Connect(
            self._requests(), metadata=tuple(metadata)
        )
        self.received: list[nodes_pb2.HubMessage] = []
        self.refs = itertools.count(1)
        self.welcome: nodes_pb2.Welcome | None = None

    async def _requests(self) -> AsyncIterator[nodes_pb2.NodeMessage]:
        while True:
            message = await self.outbox.get()
            if message is None:
                return
            yield message

    def send(self, **fields: Any) -> int:
        """Send one NodeMessage (e.g. ``claim=Claim(...)``); returns its ref."""
        ref = next(self.refs)
        self.outbox.put_nowait(nodes_pb2.NodeMessage(ref=ref, **fields))
        return ref

    async def expect(
        self,
        kind: str,
        match: Callable[[Any], bool] = lambda _: True,
        *,
        timeout_s: float = STEP_S,
    ) -> nodes_pb2.HubMessage:
        """The first received message of ``kind`` whose body satisfies ``match`` (bounded)."""
        async with asyncio.timeout(timeout_s):
            index = 0
            while True:
                while index < len(self.received):
                    message = self.received[index]
                    if message.WhichOneof("msg") == kind and match(getattr(message, kind)):
                        del self.received[index]
                        return message
                    index += 1
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    raise AssertionError(f"stream ended while waiting for {kind}")
                self.received.extend(unbatch(message))  # the hub batches what queued up

    async def offer_and_claim(self, task_id: str) -> nodes_pb2.Grant:
        await self.expect("offer", lambda o: o.task_id == task_id)
        self.send(claim=nodes_pb2.Claim(task_id=task_id))
        return (await self.expect("grant", lambda g: g.task_id == task_id)).grant

    def kinds(self) -> list[str]:
        return [m.WhichOneof("msg") or "" for m in self.received]

    async def close(self) -> None:
        self.outbox.put_nowait(None)
        self.call.cancel()


async def wait_done(client: Client, task_id: str, *, timeout_s: float = STEP_S) -> common_pb2.Task:
    """Wait through the API until the task is terminal; fails the test on a timeout."""
    response = await client.wait(task_id, timeout_s, include_output=True)
    assert response.done, f"task {task_id} not finished in {timeout_s} s: {response.task}"
    return response.task


async def until(
    probe: Callable[[], Awaitable[Any]], *, timeout_s: float = STEP_S, interval_s: float = 0.05
) -> Any:
    """Poll ``probe`` until it returns something truthy (bounded in time): ``eventually`` with
    this suite's step bound as the default."""
    return await eventually(probe, timeout_s=timeout_s, interval_s=interval_s)
