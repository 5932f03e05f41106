"""SubmitStream, the SDK's submit path: many submits over one stream, each answered by its ref.

A bad call gets its own error reply and changes nothing, while the calls beside it in the same
message go through; the stream ends once the client closed its half and every call is answered;
a client whose stream broke submits again on a new one, with the task id fixed before the first
try (so the retry cannot create a second task).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpchub import STEP_S, GrpcHub, addr
from hubtest import TcpProxy, eventually

from hub import client as client_module
from hub.client import Client, ClientError
from hub.dev.cluster import free_ports
from hub.node import TaskContext
from hub.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc

pytestmark = pytest.mark.timeout(60)


async def echo(ctx: TaskContext) -> bytes:
    return ctx.payload


def call(ref: int, **fields: object) -> tasks_pb2.SubmitCall:
    request = tasks_pb2.SubmitRequest(kind="echo", payload=f"p{ref}".encode(), **fields)
    return tasks_pb2.SubmitCall(ref=ref, request=request)


async def replies_until_end(
    calls: list[tasks_pb2.SubmitCall], stub: tasks_pb2_grpc.TaskServiceStub
) -> list[tasks_pb2.SubmitReply]:
    """Send the calls as one message, half-close, and read every reply until the server ends."""

    async def requests() -> AsyncIterator[tasks_pb2.SubmitCalls]:
        yield tasks_pb2.SubmitCalls(calls=calls)

    out = []
    async with asyncio.timeout(STEP_S):
        async for batch in stub.SubmitStream(requests()):
            out.extend(batch.replies)
    return out


async def test_a_bad_call_fails_alone_and_changes_nothing(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    stub = tasks_pb2_grpc.TaskServiceStub(e2e_hub.channel(replica))
    calls = [
        call(1, task_id="good-1"),
        call(2, task_id="a.b"),  # a dot would reach other tasks' keys
        call(3, task_id="good-3", max_attempts=5000),
        call(4, task_id="good-4"),
    ]
    replies = {r.ref: r for r in await replies_until_end(calls, stub)}
    assert sorted(replies) == [1, 2, 3, 4]
    assert replies[2].code == replies[3].code == "INVALID_ARGUMENT"
    assert replies[2].message and "Traceback" not in replies[2].message
    for ref in (1, 4):
        assert not replies[ref].code
        assert replies[ref].response.created
        assert replies[ref].response.task.task_id == f"good-{ref}"
        assert replies[ref].response.task.status == common_pb2.QUEUED
    assert await e2e_hub.stream_messages(replica) == 2
    assert await e2e_hub.journal_messages(replica) == 2


async def test_the_stream_ends_only_after_every_waiting_call_is_answered(
    e2e_hub: GrpcHub,
) -> None:
    replica = await e2e_hub.replica()
    stub = tasks_pb2_grpc.TaskServiceStub(e2e_hub.channel(replica))
    await e2e_hub.node(addr(replica), "n1", {"echo": echo}, slots=4)
    calls = [call(ref, wait_s=STEP_S) for ref in range(1, 6)]
    replies = await replies_until_end(calls, stub)
    assert sorted(r.ref for r in replies) == [1, 2, 3, 4, 5]
    for reply in replies:
        assert reply.response.done and reply.response.task.status == common_pb2.SUCCEEDED
        assert reply.response.task.result == f"p{reply.ref}".encode()


async def test_calls_past_the_open_limit_are_refused_and_change_nothing(
    e2e_hub: GrpcHub,
) -> None:
    replica = await e2e_hub.replica(max_stream_submits=2)
    stub = tasks_pb2_grpc.TaskServiceStub(e2e_hub.channel(replica))
    # No node: the waiting calls stay open, so the third and fourth find the stream full.
    calls = [call(ref, task_id=f"t{ref}", wait_s=0.5) for ref in range(1, 5)]
    replies = {r.ref: r for r in await replies_until_end(calls, stub)}
    assert [replies[ref].code for ref in (1, 2, 3, 4)] == [""] * 2 + ["RESOURCE_EXHAUSTED"] * 2
    assert "HUB_MAX_STREAM_SUBMITS" in replies[3].message
    assert not replies[1].response.done and replies[1].response.created
    assert await e2e_hub.stream_messages(replica) == 2  # t3 and t4 were never recorded
    assert await e2e_hub.journal_messages(replica) == 2


async def test_concurrent_submits_share_one_stream(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    await e2e_hub.node(addr(replica), "n1", {"echo": echo}, slots=8)
    client = e2e_hub.client(replica)
    payloads = [f"task {i}".encode() for i in range(40)]
    async with asyncio.timeout(STEP_S * 2):
        done = await asyncio.gather(*(client.submit("echo", p, wait_s=STEP_S) for p in payloads))
    assert [d.task.result for d in done] == payloads
    assert all(d.done and d.created for d in done)
    assert client._submits is not None and not client._submits.closed
    first = client._submits
    await client.submit("echo", b"one more")
    assert client._submits is first  # still the same stream


async def test_unauthenticated_stream_fails_every_call(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica(token="s3cret")
    client = e2e_hub.client(replica, token="wrong")
    results = await asyncio.gather(
        *(client.submit("echo", b"x") for _ in range(3)), return_exceptions=True
    )
    assert [getattr(r, "code", r) for r in results] == ["UNAUTHENTICATED"] * 3
    assert await e2e_hub.journal_messages(replica) == 0


async def test_a_refusal_is_reported_even_while_the_client_is_writing(e2e_hub: GrpcHub) -> None:
    """A write still in flight when the server refuses the stream would turn its status into
    INTERNAL (grpc/grpc#36066). 32 submits of 200 KB on a wrong token are several writes."""
    replica = await e2e_hub.replica(token="s3cret")
    codes = set()
    for _ in range(5):
        client = e2e_hub.client(replica, token="wrong")
        results = await asyncio.gather(
            *(client.submit("echo", b"x" * 200_000) for _ in range(32)), return_exceptions=True
        )
        codes |= {getattr(r, "code", repr(r)) for r in results}
    assert codes == {"UNAUTHENTICATED"}
    assert await e2e_hub.journal_messages(replica) == 0


class _SilentAcceptance(tasks_pb2_grpc.TaskServiceServicer):
    """A SubmitStream that, like replicas before this protocol, sends no initial metadata
    before its first reply."""

    async def SubmitStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for batch in request_iterator:
            for call in batch.calls:
                yield tasks_pb2.SubmitReplies(
                    replies=[tasks_pb2.SubmitReply(ref=call.ref, code="ABORTED", message="old")]
                )


async def test_a_replica_that_does_not_say_it_accepted_is_written_to_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "ACCEPT_WAIT_S", 0.2)
    server = grpc.aio.server()
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(_SilentAcceptance(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = Client(f"127.0.0.1:{port}")
    try:
        with pytest.raises(ClientError) as err:
            async with asyncio.timeout(STEP_S):
                await client.submit("echo", b"x")
        assert (err.value.code, err.value.message) == ("ABORTED", "old")
    finally:
        await client.close()
        await server.stop(0)


class _NeverAnswers(tasks_pb2_grpc.TaskServiceServicer):
    """A replica stuck on every call (as one is while NATS is away and it retries a write)."""

    async def SubmitStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        await context.send_initial_metadata(())
        async for _ in request_iterator:
            pass
        await asyncio.sleep(STEP_S * 2)
        yield tasks_pb2.SubmitReplies()  # (never reached within the test)


async def test_a_submit_nobody_answers_fails_at_its_deadline_and_the_next_still_goes() -> None:
    server = grpc.aio.server()
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(_NeverAnswers(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = Client(f"127.0.0.1:{port}", timeout_s=0.3)
    try:
        for _ in range(2):  # the stream outlives a call's deadline
            started = asyncio.get_running_loop().time()
            with pytest.raises(ClientError) as err:
                async with asyncio.timeout(STEP_S):
                    await client.submit("echo", b"x")
            assert err.value.code == "DEADLINE_EXCEEDED"
            assert 0.25 < asyncio.get_running_loop().time() - started < 2
            assert client._submits is not None and not client._submits.pending
    finally:
        await client.close()
        await server.stop(0)


async def test_a_broken_stream_is_replaced_and_the_retry_keeps_the_task_id(
    e2e_hub: GrpcHub,
) -> None:
    replica = await e2e_hub.replica()
    proxy = await TcpProxy(replica.port).start()
    try:
        client = e2e_hub.client(f"127.0.0.1:{proxy.port}")
        waiting = asyncio.ensure_future(client.submit("echo", b"orphan", wait_s=STEP_S))
        await eventually(lambda: e2e_hub.stream_messages(replica), timeout_s=STEP_S)
        first = client._submits
        await proxy.blip()  # the stream breaks while the submit waits for a node
        await eventually(lambda: _closed(first), timeout_s=STEP_S)
        # The submit went again on a new stream with the same task id: still one task queued.
        await eventually(lambda: _replaced(client, first), timeout_s=STEP_S)
        assert await e2e_hub.stream_messages(replica) == 1
        await e2e_hub.node(addr(replica), "n1", {"echo": echo})
        async with asyncio.timeout(STEP_S):
            done = await waiting
        assert done.done and done.task.result == b"orphan"
        assert await e2e_hub.stream_messages(replica) == 0
    finally:
        await proxy.close()


async def _closed(stream: object) -> bool:
    return bool(getattr(stream, "closed", False))


async def _replaced(client: Client, first: object) -> bool:
    return client._submits is not None and client._submits is not first


async def test_a_hub_that_is_gone_fails_fast_with_unavailable(e2e_hub: GrpcHub) -> None:
    (port,) = free_ports(1)
    client = e2e_hub.client(f"127.0.0.1:{port}")
    with pytest.raises(ClientError) as err:
        async with asyncio.timeout(STEP_S):
            await client.submit("echo", b"x", wait_s=60)
    assert err.value.code == "UNAVAILABLE"
