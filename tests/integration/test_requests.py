"""hub.nats.requests against a real nats-server: the answers and the errors nats-py would give.

The hot path's journal writes, task publishes and confirmed acks go through ``Requests``, and
``hub.nats.errors`` decides what is retried by the exception types, so they must be nats-py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from hub.nats.connection import HubClient
from hub.nats.errors import is_wrong_last_sequence
from hub.nats.requests import SWEEP_S, Requests
from hub.nats.server import EmbeddedNats

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=[NATS, HubClient], ids=["nats-py", "HubClient"])
async def nc(nats_server: EmbeddedNats, request: pytest.FixtureRequest) -> AsyncIterator[NATS]:
    """Both clients: HubClient hands inline messages over by its own path."""
    conn = request.param()
    await conn.connect(nats_server.url)
    await conn.jetstream().add_stream(name="T", subjects=["t.>"])
    try:
        yield conn
    finally:
        await conn.close()


async def test_publish_returns_the_stream_sequence_and_dedupes(nc: NATS) -> None:
    requests = Requests(nc)
    first = await requests.publish("t.a", b"1", timeout_s=5, headers={"Nats-Msg-Id": "m1"})
    second = await requests.publish("t.b", b"2", timeout_s=5)
    again = await requests.publish("t.a", b"1", timeout_s=5, headers={"Nats-Msg-Id": "m1"})
    assert (first, second, again) == (1, 2, 1)
    assert (await nc.jetstream().stream_info("T")).state.messages == 2


async def test_a_lost_compare_and_set_is_the_api_error_nats_py_raises(nc: NATS) -> None:
    requests = Requests(nc)
    await requests.publish("t.k", b"v1", timeout_s=5)
    expected = {"Nats-Expected-Last-Subject-Sequence": "0"}
    with pytest.raises(nats.js.errors.APIError) as err:
        await requests.publish("t.k", b"v2", timeout_s=5, headers=expected)
    assert is_wrong_last_sequence(err.value)
    assert (await nc.jetstream().stream_info("T")).state.messages == 1


async def test_no_stream_and_no_responder_are_nats_py_errors(nc: NATS) -> None:
    requests = Requests(nc)
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await requests.publish("nobody.home", b"x", timeout_s=5)
    with pytest.raises(nats.errors.NoRespondersError):
        await requests.request("nobody.home", b"x", timeout_s=5)


async def test_an_unanswered_request_times_out_and_leaves_nothing_behind(nc: NATS) -> None:
    requests = Requests(nc)
    await nc.subscribe("silent", cb=_ignore)  # a responder that never answers
    with pytest.raises(nats.errors.TimeoutError):
        await requests.request("silent", b"x", timeout_s=0.2)
    assert requests._waiting == {}


async def test_each_unanswered_request_times_out_at_its_own_deadline(nc: NATS) -> None:
    """One sweep serves every request: each still fails no earlier than its timeout and at
    most a sweep late, while an answered request beside them is not disturbed."""
    requests = Requests(nc)
    await nc.subscribe("silent", cb=_ignore)
    await nc.subscribe("echo", cb=_echo)
    loop = asyncio.get_running_loop()

    async def timed(timeout_s: float) -> float:
        start = loop.time()
        with pytest.raises(nats.errors.TimeoutError):
            await requests.request("silent", b"x", timeout_s=timeout_s)
        return loop.time() - start

    timeouts = (0.02, 0.3, 0.12, 0.6)
    waited, answer = await asyncio.gather(
        asyncio.gather(*(timed(t) for t in timeouts)),
        requests.request("echo", b"hi", timeout_s=5),
    )
    assert answer.data == b"hi"
    for timeout_s, took in zip(timeouts, waited, strict=True):
        assert timeout_s <= took < timeout_s + SWEEP_S + 0.25, (timeout_s, took)
    assert requests._waiting == {}


async def test_concurrent_requests_each_get_their_own_reply(nc: NATS) -> None:
    answers: set[asyncio.Task[None]] = set()

    async def later(msg: Msg) -> None:
        await asyncio.sleep(0.001 * (int(msg.data) % 5))
        await msg.respond(msg.data)

    async def echo(msg: Msg) -> None:  # answers out of order
        answers.add(asyncio.ensure_future(later(msg)))

    await nc.subscribe("echo", cb=echo)
    requests = Requests(nc)
    bodies = [str(i).encode() for i in range(50)]
    replies = await asyncio.gather(*(requests.request("echo", b, timeout_s=5) for b in bodies))
    assert [r.data for r in replies] == bodies
    assert requests._waiting == {}


async def _ignore(msg: Msg) -> None:
    return None


async def _echo(msg: Msg) -> None:
    await msg.respond(msg.data)
