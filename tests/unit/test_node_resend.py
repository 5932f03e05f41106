"""The Node SDK's order of messages on a new stream after the last one broke.

A result the node keeps until the hub confirms it is sent again first only if it went out on a
stream that broke; one still queued goes in its turn, after the output queued before it. (Sent
ahead of its own output, a result settles the journal's head+tail and the output arriving
after it lands on top: duplicated bytes, seen in chaos runs that kill replicas.)
"""

from __future__ import annotations

import asyncio

from hub.grpc.outbox import unbatch
from hub.node import Node
from hub.v1 import nodes_pb2 as pb

END = object()


def output(data: bytes) -> pb.NodeMessage:
    return pb.NodeMessage(output=pb.Output(task_id="t1", attempt=1, stream="stdout", data=data))


def result(node: Node, ref: int) -> pb.NodeMessage:
    message = pb.NodeMessage(ref=ref, result=pb.Result(task_id="t1", attempt=1, ok=True))
    node.unconfirmed[ref] = message
    return message


async def stream(node: Node) -> list[str]:
    """What one session's request iterator sends, up to the half-close (batches opened)."""
    node._outbox.put_nowait(END)
    sent = []
    async with asyncio.timeout(5):
        async for wire in node._requests(END):
            for message in unbatch(wire):
                kind = message.WhichOneof("msg")
                sent.append(kind if kind != "output" else message.output.data.decode())
    return sent


async def test_a_result_still_queued_goes_after_its_output() -> None:
    node = Node("127.0.0.1:1", "n1")
    for message in (output(b"a"), output(b"b"), result(node, 1)):
        node._send(message)
    assert await stream(node) == ["hello", "a", "b", "result"]


async def test_a_result_sent_on_a_broken_stream_is_sent_again_first() -> None:
    node = Node("127.0.0.1:1", "n1")
    node._send(result(node, 1))
    assert await stream(node) == ["hello", "result"]  # out, never confirmed: the stream broke
    node._send(output(b"c"))
    assert await stream(node) == ["hello", "result", "c"]
    # confirmed: not sent again
    node._on(pb.HubMessage(done=pb.Done(ref=1, task_id="t1")))
    assert await stream(node) == ["hello"]
