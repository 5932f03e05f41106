"""The stream outbox: everything queued goes as one batch, markers never join one."""

from __future__ import annotations

import asyncio

import pytest

from hub.grpc.outbox import BATCH_BYTES, BATCH_MESSAGES, Outbox, unbatch
from hub.v1 import nodes_pb2 as pb

END = object()


def _outbox() -> Outbox[object]:
    return Outbox(
        is_marker=lambda m: m is END, size=lambda m: len(m) if isinstance(m, bytes) else 0
    )


async def test_takes_everything_queued_up_to_a_marker() -> None:
    box = _outbox()
    for item in (b"a", b"b", END, b"c"):
        box.put_nowait(item)
    assert await box.get_batch() == [b"a", b"b"]
    assert await box.get_batch() == [END]
    assert await box.get_batch() == [b"c"]
    assert len(box) == 0


async def test_waits_for_the_first_item_then_returns_at_once() -> None:
    box = _outbox()
    getter = asyncio.ensure_future(box.get_batch())
    await asyncio.sleep(0.01)
    assert not getter.done()
    box.put_nowait(b"x")
    assert await asyncio.wait_for(getter, 1.0) == [b"x"]


async def test_batches_are_bounded_in_count_and_bytes() -> None:
    box = _outbox()
    for _ in range(BATCH_MESSAGES + 5):
        box.put_nowait(b"")
    assert len(await box.get_batch()) == BATCH_MESSAGES
    assert len(await box.get_batch()) == 5
    big = b"x" * (BATCH_BYTES // 2)
    for _ in range(3):
        box.put_nowait(big)
    assert len(await box.get_batch()) == 2  # the second crosses the bound; the third waits
    assert len(await box.get_batch()) == 1


@pytest.mark.parametrize("count", [1, 3])
def test_unbatch(count: int) -> None:
    messages = [pb.NodeMessage(claim=pb.Claim(task_id=f"t{i}")) for i in range(count)]
    wire = messages[0] if count == 1 else pb.NodeMessage(batch=pb.NodeBatch(messages=messages))
    assert [m.claim.task_id for m in unbatch(wire)] == [f"t{i}" for i in range(count)]


async def test_after_a_batch_of_several_it_waits_one_turn_for_company() -> None:
    box = _outbox()
    box.put_nowait(b"a")
    box.put_nowait(b"b")
    assert await box.get_batch() == [b"a", b"b"]  # under load
    box.put_nowait(b"c")
    getter = asyncio.ensure_future(box.get_batch())
    await asyncio.sleep(0)  # the getter has seen c and let the loop turn once
    box.put_nowait(b"d")  # added in that turn: it goes in the same batch
    assert await getter == [b"c", b"d"]


async def test_after_a_single_message_it_returns_at_once() -> None:
    box = _outbox()
    box.put_nowait(b"a")
    assert await box.get_batch() == [b"a"]  # idle: one at a time
    box.put_nowait(b"b")
    getter = asyncio.ensure_future(box.get_batch())
    await asyncio.sleep(0)
    assert getter.done() and getter.result() == [b"b"]  # no turn of the loop added
