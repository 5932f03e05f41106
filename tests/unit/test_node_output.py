"""The node SDK batches output: few messages for many writes, bytes in order, none lost."""

from __future__ import annotations

import asyncio

from hub.buffers import HeadTail
from hub.node import OUTPUT_BATCH_BYTES, OUTPUT_BATCH_S, TaskContext
from hub.v1 import nodes_pb2 as pb


def context(sent: list[pb.NodeMessage]) -> TaskContext:
    return TaskContext("t1", "k", b"", 3, 0.0, sent.append, (8, 8))


async def test_many_small_writes_are_few_messages_in_order() -> None:
    sent: list[pb.NodeMessage] = []
    ctx = context(sent)
    for i in range(1000):
        ctx.stdout(f"{i},")
    assert sent == []  # batched, not yet sent
    await asyncio.sleep(OUTPUT_BATCH_S * 3)
    assert len(sent) == 1
    out = sent[0].output
    assert (out.task_id, out.attempt, out.stream) == ("t1", 3, "stdout")
    assert out.data == "".join(f"{i}," for i in range(1000)).encode()
    assert ctx.output["stdout"] == HeadTail(attempt=3).append(out.data, 8, 8)


async def test_a_full_batch_goes_at_once_and_streams_stay_apart() -> None:
    sent: list[pb.NodeMessage] = []
    ctx = context(sent)
    ctx.thought("thinking")
    ctx.stdout(b"x" * OUTPUT_BATCH_BYTES)
    assert [m.output.stream for m in sent] == ["thoughts", "stdout"]
    assert sent[1].output.data == b"x" * OUTPUT_BATCH_BYTES


async def test_discarded_output_is_never_sent() -> None:
    sent: list[pb.NodeMessage] = []
    ctx = context(sent)
    ctx.stdout("late")
    ctx.send_output(discard=True)
    await asyncio.sleep(OUTPUT_BATCH_S * 3)
    assert sent == []
