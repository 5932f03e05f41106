"""hub.nats.inline and the pulls built on it, against a real nats-server and the nats-py in use.

Inline subscriptions lean on how nats-py treats the ``future`` a subscription is made with (see
the module's docstring); these tests fail if a nats-py release changes that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from hub.model import Priority, Route
from hub.nats.connection import HubClient
from hub.nats.inline import subscribe_inline
from hub.nats.server import EmbeddedNats
from hub.nats.subjects import ConsumerName
from hub.queue import _Puller

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=[NATS, HubClient], ids=["nats-py", "HubClient"])
async def nc(nats_server: EmbeddedNats, request: pytest.FixtureRequest) -> AsyncIterator[NATS]:
    """Both clients: HubClient hands inline messages over by its own path."""
    conn = request.param()
    await conn.connect(nats_server.url)
    try:
        yield conn
    finally:
        await conn.close()


async def settled(nc: NATS) -> None:
    """Every message published so far has been read: nats-py sends a PING ahead of the
    publishes it buffered, so the second PING's PONG is the one that comes after them."""
    await nc.flush()
    await nc.flush()


async def test_every_message_reaches_the_handler_in_order_without_a_task(nc: NATS) -> None:
    got: list[bytes] = []
    tasks = len(asyncio.all_tasks())
    sub = await subscribe_inline(nc, "t.in", lambda msg: got.append(msg.data))
    assert len(asyncio.all_tasks()) == tasks  # a callback subscription would have started one
    for i in range(500):
        await nc.publish("t.in", str(i).encode())
    await settled(nc)
    assert got == [str(i).encode() for i in range(500)]
    await sub.unsubscribe()
    await nc.publish("t.in", b"after")
    await settled(nc)
    assert len(got) == 500


async def test_a_failing_handler_is_logged_and_the_connection_carries_on(
    nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[bytes] = []

    def handler(msg: Msg) -> None:
        if msg.data == b"bad":
            raise ValueError("boom")
        got.append(msg.data)

    await subscribe_inline(nc, "t.fail", handler)
    with caplog.at_level(logging.ERROR, logger="hub.nats.inline"):
        for data in (b"one", b"bad", b"two"):
            await nc.publish("t.fail", data)
        await settled(nc)
    assert got == [b"one", b"two"]
    assert nc.is_connected
    assert any("t.fail" in r.getMessage() for r in caplog.records)


async def test_a_handler_that_reads_no_headers_gets_every_message_all_the_same(nc: NATS) -> None:
    got: list[tuple[str, bytes]] = []
    await subscribe_inline(nc, "t.bell.*", lambda m: got.append((m.subject, m.data)), headers=False)
    for i in range(20):
        await nc.publish(f"t.bell.{i}", str(i).encode(), headers={"Hub-Record": "x" * 700})
    await settled(nc)
    assert got == [(f"t.bell.{i}", str(i).encode()) for i in range(20)]


async def test_the_subscription_is_renewed_after_a_reconnect(
    nats_server: EmbeddedNats, restart_nats: object
) -> None:
    conn = await nats.connect(nats_server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    got: list[bytes] = []
    try:
        await subscribe_inline(conn, "t.re", lambda msg: got.append(msg.data))
        await restart_nats(nats_server)  # type: ignore[operator]
        for _ in range(150):  # 15 s at most
            if got:
                break
            if conn.is_connected:
                await conn.publish("t.re", b"back")
            await asyncio.sleep(0.1)
        assert got[:1] == [b"back"]
    finally:
        await conn.close()


async def _pull_stream(nc: NATS, messages: int) -> ConsumerName:
    name = ConsumerName(Priority.NORMAL, Route())
    js = nc.jetstream()
    await js.add_stream(name=name.stream, subjects=["p.>"])
    config = ConsumerConfig(durable_name=name.durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=60)
    await js.add_consumer(name.stream, config)
    for i in range(messages):
        await js.publish("p.x", str(i).encode())
    return name


async def test_a_pull_takes_its_batch_and_stops_at_the_end(nc: NATS) -> None:
    puller = _Puller(nc, await _pull_stream(nc, 5))
    first = await puller.pull(3, timeout_s=5)
    rest = await puller.pull(10, timeout_s=5)  # ends on the server's "no messages" status
    empty = await puller.pull(4, timeout_s=5)
    assert [m.data for m in first] == [b"0", b"1", b"2"]
    assert [m.data for m in rest] == [b"3", b"4"]
    assert empty == []


async def test_a_late_answer_to_a_pull_cut_short_is_not_taken_for_the_next(nc: NATS) -> None:
    puller = _Puller(nc, await _pull_stream(nc, 4))
    assert [m.data for m in await puller.pull(1, timeout_s=5)] == [b"0"]
    # A witness keeps interest in the pull's inbox once the puller gives it up: without any,
    # nats-server may drop the cut-short request instead of answering it (the race this test
    # would otherwise depend on), and then there is no late answer to ignore.
    late: list[bytes] = []
    await subscribe_inline(nc, puller.inbox, lambda msg: late.append(msg.data))
    assert await puller.pull(1, timeout_s=0) == []  # cut short before any answer could come
    after = await puller.pull(10, timeout_s=5)  # its answer comes while this one is pulling
    for _ in range(200):  # bounded: 200 x 10 ms
        if late:
            break
        await asyncio.sleep(0.01)
    assert late == [b"1"]  # the late answer did come, to the inbox the puller gave up
    assert [m.data for m in after] == [b"2", b"3"]  # and was not taken for this pull's
    name = ConsumerName(Priority.NORMAL, Route())
    info = await nc.jetstream().consumer_info(name.stream, name.durable)
    assert info.num_ack_pending == 4  # each message delivered once
