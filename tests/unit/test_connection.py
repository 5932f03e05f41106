"""The replica's NATS client reads and writes messages exactly as nats-py does, only faster."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, cast

import nats.errors
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.protocol.parser import Parser

from hub.nats.connection import HubClient
from hub.nats.inline import Inline

# Header lines as they come, and as they might: names with spaces, tabs, control and non-ASCII
# characters, colons in values, missing colons, empty names, empty lines.
_text = st.text(alphabet=st.sampled_from("Ab-_ :\t\x0b\x0c\x1c\x1fé0\x00"), max_size=12)
_name = st.one_of(st.sampled_from(["Nats-Sequence", "KV-Operation", "Status"]), _text)
_line = st.one_of(
    st.tuples(_name, _text).map(lambda nv: f"{nv[0]}:{nv[1]}".encode()),
    st.tuples(_name, _text).map(lambda nv: f"{nv[0]}: {nv[1]}".encode()),
    st.binary(max_size=16).filter(lambda b: b"\r\n" not in b),
    st.just(b""),
)


@given(st.lists(_line, max_size=8))
def test_parses_every_header_block_as_nats_py_does(lines: list[bytes]) -> None:
    raw = b"\r\n".join(lines) + b"\r\n\r\n"
    assert HubClient._parse_header_lines(raw) == NATS._parse_header_lines(raw)


def test_a_journal_echo_parses_to_its_headers() -> None:
    raw = (
        b"Nats-Stream: KV_hub_journal\r\nNats-Subject: $KV.hub_journal.task.a\r\n"
        b"Nats-Sequence: 12\r\nBad Name: x\r\nNats-Last-Sequence: 9\r\n\r\n"
    )
    assert HubClient._parse_header_lines(raw) == {
        "Nats-Stream": "KV_hub_journal",
        "Nats-Subject": "$KV.hub_journal.task.a",
        "Nats-Sequence": "12",
        "Nats-Last-Sequence": "9",
    }


def test_overrides_what_nats_py_calls() -> None:
    """If nats-py renamed its parser, the override would silently stop applying."""
    assert "_parse_header_lines" in vars(NATS)
    assert "self._parse_header_lines(" in inspect.getsource(NATS._process_headers)


_header_name = st.one_of(
    st.sampled_from(["Nats-Msg-Id", "Hub-Task", " Padded ", "", "  "]),
    st.text(alphabet=st.sampled_from("Ab-_~!0 :\té"), max_size=8),
)
_headers = st.dictionaries(_header_name, st.text(max_size=20), max_size=5)


def _written(client: NATS, headers: dict[str, str]) -> bytes | type[Exception]:
    async def publish() -> None:
        await client._send_publish("t.x", "_INBOX.r", b"body", 4, headers)

    try:
        asyncio.run(publish())
    except Exception as exc:  # the same error type, raised for the same headers
        return type(exc)
    return b"".join(client._pending)


@given(_headers)
def test_writes_every_publish_as_nats_py_does(headers: dict[str, str]) -> None:
    assert _written(HubClient(), headers) == _written(NATS(), headers)


def test_a_publish_with_a_bad_header_name_is_refused_every_time() -> None:
    for _ in range(2):  # names are remembered once valid: a bad one never is
        assert _written(HubClient(), {"Bad Name": "x"}) is nats.errors.BadHeaderError


_ECHO = b"NATS/1.0\r\nNats-Sequence: 12\r\nNats-Subject: $KV.hub_journal.task.a\r\n\r\n"


def _delivered(client: NATS, headers: bytes | None, *, parse: bool = True) -> Msg:
    got: list[Msg] = []
    client._subs[7] = Subscription(
        client, 7, "t.>", future=cast(Any, Inline(got.append, headers=parse))
    )
    asyncio.run(client._process_msg(7, b"t.x", b"_INBOX.r", b"data", headers))  # type: ignore[arg-type]
    (msg,) = got
    return msg


@given(st.one_of(st.none(), st.just(_ECHO), st.just(b"NATS/1.0 503\r\n\r\n")))
def test_an_inline_message_is_the_message_nats_py_would_hand_over(headers: bytes | None) -> None:
    ours, theirs = _delivered(HubClient(), headers), _delivered(NATS(), headers)
    fields = ("subject", "reply", "data", "headers", "sid")
    assert [getattr(ours, f) for f in fields] == [getattr(theirs, f) for f in fields]
    assert ours._client is not None


def test_a_handler_that_reads_no_headers_is_spared_their_parse() -> None:
    msg = _delivered(HubClient(), _ECHO, parse=False)
    assert (msg.subject, msg.data, msg.headers) == ("t.x", b"data", None)


def test_every_override_is_still_called_by_nats_py() -> None:
    assert "self._send_publish(" in inspect.getsource(NATS.publish)
    assert "self.nc._process_msg(" in inspect.getsource(Parser.parse)
    assert "_HEADER_KEY_RE.fullmatch(key)" in inspect.getsource(NATS._send_publish)
