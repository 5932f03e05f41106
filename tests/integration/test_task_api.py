"""TaskService over real gRPC: output, cancel, health and reflection, bad input, token auth.

Bad input must get a clear status and change nothing else (DESIGN invariant 6): after each
refused call the journal bucket and the work queues hold what they held before.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpchub import STEP_S, GrpcHub, RawNode, addr, until, wait_done
from hubtest import published

from hub.client import ClientError
from hub.model import Priority
from hub.node import TaskContext
from hub.v1 import common_pb2, nodes_pb2, tasks_pb2, tasks_pb2_grpc

pytestmark = pytest.mark.timeout(60)

HEAD, TAIL = 256, 512  # hubtest.FAST's journal_head_bytes, journal_tail_bytes


async def echo(ctx: TaskContext) -> bytes:
    return ctx.payload


# -- output ---------------------------------------------------------------------------------


def chatty_output() -> bytes:
    """Every byte value, in uneven chunks, well over HEAD + TAIL."""
    return bytes(range(256)) * 12 + b"the end\n"


async def chatty(ctx: TaskContext) -> bytes:
    data = chatty_output()
    for start, size in zip(range(0, len(data), 97), [97] * len(data), strict=False):
        ctx.stdout(data[start : start + size])
        await asyncio.sleep(0)
    ctx.thought("short thought")
    return b"chatted"


def check_stdout(buffer: Any, data: bytes) -> None:
    assert buffer.head == data[:HEAD]
    assert buffer.tail == data[-TAIL:]
    assert buffer.total_bytes == len(data)
    assert buffer.dropped_bytes == len(data) - HEAD - TAIL


async def test_head_and_tail_visible_through_get(e2e_hub: GrpcHub) -> None:
    a, b = await e2e_hub.replica(), await e2e_hub.replica()
    await e2e_hub.node(addr(a), "chatty", {"chatty": chatty})
    task_id = (await e2e_hub.client(a).submit("chatty")).task.task_id
    await wait_done(e2e_hub.client(a), task_id)
    data = chatty_output()
    assert len(data) > HEAD + TAIL

    task = await e2e_hub.client(b).get(task_id, include_output=True)
    assert task.status == common_pb2.SUCCEEDED and task.result == b"chatted"
    check_stdout(task.stdout, data)
    assert task.stdout.attempt == 1
    assert task.thoughts.head == b"short thought" and task.thoughts.tail == b""
    assert task.thoughts.total_bytes == 13 and task.thoughts.dropped_bytes == 0

    bare = await e2e_hub.client(b).get(task_id)
    assert not bare.HasField("stdout") and not bare.HasField("thoughts")


HUB = Path(sys.executable).with_name("hub")  # the console script of this environment


def numbered_lines() -> bytes:
    """ASCII text well over HEAD + TAIL: JSON carries text, and this must be exact in it."""
    return b"".join(b"line %04d of the output\n" % i for i in range(100))


async def lines(ctx: TaskContext) -> bytes:
    data = numbered_lines()
    for start in range(0, len(data), 250):
        ctx.stdout(data[start : start + 250])
        await asyncio.sleep(0)
    ctx.thought("thinking in text")
    return b"printed"


async def test_head_and_tail_visible_through_hub_get_json(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    await e2e_hub.node(addr(replica), "printer", {"lines": lines})
    task_id = (await e2e_hub.client(replica).submit("lines")).task.task_id
    await wait_done(e2e_hub.client(replica), task_id)

    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    process = await asyncio.create_subprocess_exec(
        str(HUB),
        "get",
        task_id,
        "--json",
        "--hub",
        addr(replica),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    doc = json.loads(out)  # one JSON object
    assert doc["task_id"] == task_id and doc["status"] == "succeeded"
    assert doc["kind"] == "lines" and doc["priority"] == "normal"
    assert doc["node_id"] == "printer" and doc["attempt"] == 1
    assert doc["result"] == "printed" and doc["error"] == ""
    data = numbered_lines()
    assert len(data) > HEAD + TAIL
    stdout = doc["stdout"]
    assert stdout["head"].encode() == data[:HEAD]
    assert stdout["tail"].encode() == data[-TAIL:]
    assert stdout["total_bytes"] == len(data)
    assert stdout["dropped_bytes"] == len(data) - HEAD - TAIL
    assert doc["thoughts"] == {
        "head": "thinking in text",
        "tail": "",
        "total_bytes": 16,
        "dropped_bytes": 0,
    }


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_a_queued_task_never_runs_and_leaves_its_stream(e2e_hub: GrpcHub) -> None:
    """A task never delivered is cancelled in the journal and its message removed at once."""
    replica = await e2e_hub.replica()
    client = e2e_hub.client(replica)
    task_id = (await client.submit("echo", b"never", node="ghost")).task.task_id  # not attached
    assert await e2e_hub.stream_messages(replica, Priority.NORMAL) == 1

    task = await client.cancel(task_id)
    assert task.status == common_pb2.CANCELLED
    assert await e2e_hub.stream_messages(replica, Priority.NORMAL) == 0
    assert (await wait_done(client, task_id)).status == common_pb2.CANCELLED
    with pytest.raises(ClientError) as again:
        await client.cancel(task_id)
    assert again.value.code == "FAILED_PRECONDITION"

    # When "ghost" attaches, it runs the next task routed to it, never the cancelled one.
    ran: list[str] = []

    async def record(ctx: TaskContext) -> bytes:
        ran.append(ctx.task_id)
        return b""

    await e2e_hub.node(addr(replica), "ghost", {"echo": record})
    later = (await client.submit("echo", b"now", node="ghost")).task.task_id
    assert (await wait_done(client, later)).status == common_pb2.SUCCEEDED
    assert ran == [later]
    assert (await client.get(task_id)).status == common_pb2.CANCELLED
    assert await e2e_hub.stream_messages(replica, Priority.NORMAL) == 0


async def test_cancel_a_running_task_tells_its_node_to_stop(e2e_hub: GrpcHub) -> None:
    a, b = await e2e_hub.replica(), await e2e_hub.replica()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def stubborn(ctx: TaskContext) -> bytes:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            if ctx.cancelled.is_set():
                stopped.set()
            raise
        return b"should not finish"

    await e2e_hub.node(addr(a), "busy", {"stubborn": stubborn})
    client = e2e_hub.client(b)  # cancelled through the replica the node is not attached to
    task_id = (await client.submit("stubborn")).task.task_id
    async with asyncio.timeout(STEP_S):
        await started.wait()

    task = await client.cancel(task_id)
    assert task.status == common_pb2.CANCELLED
    async with asyncio.timeout(STEP_S):
        await stopped.wait()
    done = await wait_done(client, task_id)
    assert done.status == common_pb2.CANCELLED and done.result == b""
    assert [h.outcome for h in done.history] == ["cancelled"]
    assert await e2e_hub.stream_messages(a) == 0  # its message was acknowledged away


# -- health and reflection ------------------------------------------------------------------


async def test_health_check_answers_serving(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    stub = health_pb2_grpc.HealthStub(e2e_hub.channel(replica))
    for service in ("", "hub.v1.TaskService", "hub.v1.NodeService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def list_services(channel: grpc.aio.Channel, metadata: tuple = ()) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    call = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=5)
    names = set()
    async for response in call:
        names |= {s.name for s in response.list_services_response.service}
    return names


async def test_reflection_lists_the_services(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    names = await list_services(e2e_hub.channel(replica))
    assert {"hub.v1.TaskService", "hub.v1.NodeService", "grpc.health.v1.Health"} <= names


# -- bad input ------------------------------------------------------------------------------


def submit_request(**fields: Any) -> tasks_pb2.SubmitRequest:
    return tasks_pb2.SubmitRequest(**({"kind": "echo"} | fields))


BAD_SUBMITS = {
    "empty kind": (submit_request(kind=""), "INVALID_ARGUMENT"),
    "kind with a space": (submit_request(kind="rm -rf"), "INVALID_ARGUMENT"),
    "task id with a dot": (submit_request(task_id="a.b"), "INVALID_ARGUMENT"),
    "task id with a wildcard": (submit_request(task_id="*"), "INVALID_ARGUMENT"),
    "task id too long": (submit_request(task_id="x" * 65), "INVALID_ARGUMENT"),
    "oversized payload": (submit_request(payload=b"x" * (64 * 1024 + 1)), "RESOURCE_EXHAUSTED"),
    "unknown priority": (submit_request(priority=9), "INVALID_ARGUMENT"),
    "negative priority": (submit_request(priority=-1), "INVALID_ARGUMENT"),
    "node and capabilities": (
        submit_request(route=common_pb2.Route(node_id="n1", capabilities=["gpu"])),
        "INVALID_ARGUMENT",
    ),
    "bad node id": (submit_request(route=common_pb2.Route(node_id="n 1")), "INVALID_ARGUMENT"),
    "bad capability": (
        submit_request(route=common_pb2.Route(capabilities=["GPU!"])),
        "INVALID_ARGUMENT",
    ),
    "max_attempts too high": (submit_request(max_attempts=5000), "INVALID_ARGUMENT"),
    "negative timeout": (submit_request(timeout_s=-1), "INVALID_ARGUMENT"),
}


@pytest.mark.parametrize("case", list(BAD_SUBMITS))
async def test_bad_submit_gets_a_clear_status_and_changes_nothing(
    e2e_hub: GrpcHub, case: str
) -> None:
    replica = await e2e_hub.replica()
    stub = tasks_pb2_grpc.TaskServiceStub(e2e_hub.channel(replica))
    journal_before = await e2e_hub.journal_messages(replica)
    request, code = BAD_SUBMITS[case]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Submit(request, timeout=5)
    assert err.value.code().name == code
    details = err.value.details() or ""
    assert details and "Traceback" not in details and "internal error" not in details
    assert await e2e_hub.journal_messages(replica) == journal_before
    assert await e2e_hub.stream_messages(replica) == 0


BAD_IDS = ["", "a.b", "*", ">", "x.stdout", "a b", "x" * 65]


@pytest.mark.parametrize("task_id", BAD_IDS)
async def test_bad_task_id_is_invalid_argument_everywhere(e2e_hub: GrpcHub, task_id: str) -> None:
    replica = await e2e_hub.replica()
    client = e2e_hub.client(replica)
    # A real task whose keys a malformed id could reach (task.x.stdout, wildcards).
    await client.submit("echo", b"keep me", task_id="x")
    journal_before = await e2e_hub.journal_messages(replica)
    calls = {
        "get": lambda: client.get(task_id),
        "get with output": lambda: client.get(task_id, include_output=True),
        "wait": lambda: client.wait(task_id, 5.0),
        "cancel": lambda: client.cancel(task_id),
        "replay": lambda: client.replay(task_id),
    }
    for name, call in calls.items():
        with pytest.raises(ClientError) as err:
            await call()
        assert err.value.code == "INVALID_ARGUMENT", (name, err.value)
    with pytest.raises(ClientError) as watched:
        async with asyncio.timeout(STEP_S):
            async for _ in client.watch(task_id):
                pass
    assert watched.value.code == "INVALID_ARGUMENT"
    assert await e2e_hub.journal_messages(replica) == journal_before
    assert (await client.get("x")).status == common_pb2.QUEUED


async def test_unknown_task_is_not_found(e2e_hub: GrpcHub) -> None:
    client = e2e_hub.client(await e2e_hub.replica())
    for call in (client.get, client.cancel, client.replay):
        with pytest.raises(ClientError) as err:
            await call("unknown-task")
        assert err.value.code == "NOT_FOUND"


async def test_reusing_a_task_id_for_another_task_is_already_exists(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    client = e2e_hub.client(replica)
    first = await client.submit("echo", b"one", task_id="same-id")
    again = await client.submit("echo", b"one", task_id="same-id")
    assert first.created and not again.created
    assert again.task.created_at == first.task.created_at
    journal_before = await e2e_hub.journal_messages(replica)
    with pytest.raises(ClientError) as err:
        await client.submit("other-kind", b"one", task_id="same-id")
    assert err.value.code == "ALREADY_EXISTS"
    assert await e2e_hub.journal_messages(replica) == journal_before
    assert await e2e_hub.stream_messages(replica) == 1
    assert (await client.get("same-id")).kind == "echo"


BAD_HELLOS = {
    "invalid node id": (
        nodes_pb2.NodeMessage(hello=nodes_pb2.Hello(node_id="no/slash", slots=1)),
        "INVALID_ARGUMENT",
    ),
    "empty node id": (
        nodes_pb2.NodeMessage(hello=nodes_pb2.Hello(node_id="", slots=1)),
        "INVALID_ARGUMENT",
    ),
    "zero slots": (
        nodes_pb2.NodeMessage(hello=nodes_pb2.Hello(node_id="n1", slots=0)),
        "INVALID_ARGUMENT",
    ),
    "too many slots": (
        nodes_pb2.NodeMessage(hello=nodes_pb2.Hello(node_id="n1", slots=100_000)),
        "INVALID_ARGUMENT",
    ),
    "bad capability": (
        nodes_pb2.NodeMessage(hello=nodes_pb2.Hello(node_id="n1", slots=1, capabilities=["A B"])),
        "INVALID_ARGUMENT",
    ),
    "claim before hello": (
        nodes_pb2.NodeMessage(claim=nodes_pb2.Claim(task_id="t1")),
        "FAILED_PRECONDITION",
    ),
    "heartbeat before hello": (
        nodes_pb2.NodeMessage(heartbeat=nodes_pb2.Heartbeat(free_slots=1)),
        "FAILED_PRECONDITION",
    ),
}


@pytest.mark.parametrize("case", list(BAD_HELLOS))
async def test_bad_node_hello_gets_a_clear_status_and_attaches_nothing(
    e2e_hub: GrpcHub, case: str
) -> None:
    replica = await e2e_hub.replica()
    client = e2e_hub.client(replica)
    task_id = (await client.submit("echo", b"waiting")).task.task_id
    message, code = BAD_HELLOS[case]
    raw = RawNode(e2e_hub.channel(replica))
    e2e_hub.raw.append(raw)
    raw.outbox.put_nowait(message)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async with asyncio.timeout(STEP_S):
            await raw.call.read()
    assert err.value.code().name == code
    assert "Traceback" not in (err.value.details() or "")
    assert replica.nodes.sessions == {}
    assert list((await client.nodes()).nodes) == []
    task = await client.get(task_id)
    assert task.status == common_pb2.QUEUED and task.attempt == 0


async def test_stream_closed_before_hello_is_invalid_argument(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica()
    raw = RawNode(e2e_hub.channel(replica))
    e2e_hub.raw.append(raw)
    raw.outbox.put_nowait(None)  # half-close at once
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async with asyncio.timeout(STEP_S):
            await raw.call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- token auth -----------------------------------------------------------------------------


async def test_token_auth(e2e_hub: GrpcHub) -> None:
    replica = await e2e_hub.replica(token="s3cret")
    anonymous, wrong = e2e_hub.client(replica), e2e_hub.client(replica, token="guess")
    for client in (anonymous, wrong):
        with pytest.raises(ClientError) as err:
            await client.submit("echo", b"x")
        assert err.value.code == "UNAUTHENTICATED"
        with pytest.raises(ClientError) as err:
            await client.get("anything")
        assert err.value.code == "UNAUTHENTICATED"
        with pytest.raises(ClientError) as err:
            async with asyncio.timeout(STEP_S):
                async for _ in client.watch("anything"):
                    pass
        assert err.value.code == "UNAUTHENTICATED"
    assert await e2e_hub.journal_messages(replica) == 0

    # A node without the token is refused too, and never attached.
    raw = RawNode(e2e_hub.channel(replica))
    e2e_hub.raw.append(raw)
    raw.send(hello=nodes_pb2.Hello(node_id="intruder", slots=1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with asyncio.timeout(STEP_S):
            await raw.call.read()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "intruder" not in replica.nodes.sessions

    # Health and reflection stay open (load balancers and grpcurl carry no token).
    health = health_pb2_grpc.HealthStub(e2e_hub.channel(replica))
    checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    assert "hub.v1.TaskService" in await list_services(e2e_hub.channel(replica))

    # With the right token, agents and nodes work end to end.
    await e2e_hub.node(addr(replica), "trusted", {"echo": echo}, token="s3cret")
    client = e2e_hub.client(replica, token="s3cret")
    task_id = (await client.submit("echo", b"hello")).task.task_id
    task = await wait_done(client, task_id)
    assert task.status == common_pb2.SUCCEEDED and task.result == b"hello"
    assert task.node_id == "trusted"


async def test_the_node_list_reads_keys_without_a_watcher(e2e_hub: GrpcHub) -> None:
    """ListNodes takes the nodes bucket's keys from its stream's subjects and reads each: no
    consumer. The watcher behind nats-py's ``KeyValue.keys()`` can answer "no keys" while the
    keys are in flight to it (nats-io/nats.py#842): a node list came back empty under load."""
    replica = await e2e_hub.replica()

    async def idle(ctx: TaskContext) -> bytes:
        return b""

    await e2e_hub.node(addr(replica), "n1", {"idle": idle})
    client = e2e_hub.client(replica)

    async def listed() -> bool:
        return [n.node_id for n in (await client.nodes()).nodes] == ["n1"]

    await until(listed)
    async with published(replica.nc, "$JS.API.CONSUMER.>") as asked:
        for _ in range(5):
            assert await listed()
    assert not [s for s in asked if "KV_hub_nodes" in s]
