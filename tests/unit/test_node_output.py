"""The node SDK batches output: few messages for many writes, bytes in order, none lost; and
what waits to be sent stays bounded, however fast a handler writes or however long the stream
is congested, while the journal's head+tail stays exact."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.buffers import FOLD_SLACK, HeadTail
from hub.grpc.outbox import Outbox
from hub.node import OUTBOX_LIMIT_BYTES, OUTPUT_BATCH_BYTES, OUTPUT_BATCH_S, Node, TaskContext
from hub.v1 import nodes_pb2 as pb


def context(
    sent: list[pb.NodeMessage], limits: tuple[int, int] = (8, 8), congested: bool = False
) -> TaskContext:
    return TaskContext("t1", "k", b"", 3, 0.0, sent.append, limits, lambda: congested)


def received(sent: list[pb.NodeMessage], limits: tuple[int, int]) -> HeadTail:
    """What the hub's journal makes of the messages: raw bytes appended, views extended."""
    buffer = HeadTail(attempt=3)
    for message in sent:
        out = message.output
        if out.dropped or out.tail:
            total = len(out.data) + out.dropped + len(out.tail)
            buffer = buffer.extend(HeadTail(out.data, out.tail, total, 3), *limits)
        else:
            buffer = buffer.append(out.data, *limits)
    return buffer


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
    ctx = context(sent, limits=(OUTPUT_BATCH_BYTES, OUTPUT_BATCH_BYTES))
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


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=300), st.booleans()), max_size=40),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=1, max_value=40),
)
def test_output_past_head_and_tail_goes_as_an_exact_view(
    writes: list[tuple[bytes, bool]], head_max: int, tail_max: int
) -> None:
    """Whatever the writes and whenever the batches go, the journal ends with the head+tail of
    the whole stream, and no message carries more than head+tail+slack bytes."""

    async def run() -> list[pb.NodeMessage]:
        sent: list[pb.NodeMessage] = []
        ctx = context(sent, limits=(head_max, tail_max))
        for data, flush in writes:
            ctx.stdout(data)
            if flush:
                ctx.send_output()
        ctx.send_output(final=True)
        return sent

    sent = asyncio.run(run())
    whole = b"".join(data for data, _ in writes)
    assert received(sent, (head_max, tail_max)) == HeadTail(attempt=3).append(
        whole, head_max, tail_max
    )
    for message in sent:
        out = message.output
        assert len(out.data) + len(out.tail) <= head_max + tail_max + FOLD_SLACK


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition``: 100 batch intervals at most."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(OUTPUT_BATCH_S / 2)
    raise AssertionError("condition not met in time")


async def test_a_congested_stream_holds_a_bounded_view_until_it_drains() -> None:
    sent: list[pb.NodeMessage] = []
    congested, asked = [True], [0]

    def is_congested() -> bool:
        asked[0] += 1
        return congested[0]

    limits = (1024, 4096)
    ctx = TaskContext("t1", "k", b"", 3, 0.0, sent.append, limits, is_congested)
    for i in range(200):  # 20 MB, far past what the node may hold
        ctx.stdout(bytes([i]) * 100_000)
        assert len(ctx._unsent["stdout"].data) <= sum(limits) + FOLD_SLACK
    await until(lambda: asked[0] >= 2)  # the timer has come round and found it congested
    assert sent == []  # nothing queued behind it
    congested[0] = False
    await until(lambda: bool(sent))
    assert len(sent) == 1 and sent[0].output.dropped > 0
    whole = b"".join(bytes([i]) * 100_000 for i in range(200))
    assert (
        received(sent, limits) == HeadTail(attempt=3).append(whole, *limits) == ctx.output["stdout"]
    )


async def test_the_result_sends_output_first_even_when_congested() -> None:
    sent: list[pb.NodeMessage] = []
    ctx = context(sent, congested=True)
    ctx.stdout("last words")
    ctx.send_output()
    assert sent == []
    ctx.send_output(final=True)
    assert [m.output.data for m in sent] == [b"last words"]


async def test_a_node_without_a_stream_queues_a_bounded_amount() -> None:
    """Handlers of a node cut off from every replica keep writing: its queue stops growing at
    the limit (plus one batch per task), instead of taking all the memory there is."""
    tasks, writes = 16, 1000
    node = Node("127.0.0.1:1", "n1", slots=tasks)
    node.limits = (8 * 1024, 32 * 1024)
    batch = sum(node.limits) + FOLD_SLACK  # the most one task sends at a time

    async def chatty(ctx: TaskContext) -> None:
        for _ in range(writes):  # about 2 s: 40 batch intervals
            ctx.stdout(b"y" * 64 * 1024)
            await asyncio.sleep(0.002)

    node.handlers["chatty"] = chatty
    for i in range(tasks):
        node._start(pb.Grant(task_id=f"t{i}", kind="chatty", attempt=1))
    peak = 0
    for _ in range(int(60 / (OUTPUT_BATCH_S / 2))):  # 60 s at most
        if not node.running:
            break
        await asyncio.sleep(OUTPUT_BATCH_S / 2)
        peak = max(peak, node._outbox.queued_bytes)
    assert not node.running
    # Past the limit each task adds only its last batch and its result (which carries the
    # head+tail): without the limit, 16 tasks x a batch every 50 ms x 2 s came to 36 MB.
    assert peak <= OUTBOX_LIMIT_BYTES + tasks * 2 * batch


async def test_the_outbox_counts_the_bytes_it_holds() -> None:
    box: Outbox[bytes | None] = Outbox(lambda m: m is None, lambda m: len(m or b""))
    for item in (b"ab", b"cde", None, b"f"):
        box.put_nowait(item)
    assert box.queued_bytes == 6
    assert await box.get_batch() == [b"ab", b"cde"]
    assert box.queued_bytes == 1
    assert await box.get_batch() == [None]
    assert await box.get_batch() == [b"f"]
    assert box.queued_bytes == 0
