"""The replica's NATS client parses header blocks exactly as nats-py does, only faster."""

from __future__ import annotations

import inspect

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from hub.nats.connection import HubClient

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
