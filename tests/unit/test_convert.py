"""Proto <-> model translation: a node's head+tail is checked against the hub's trimming."""

from __future__ import annotations

import pytest

from hub.buffers import HeadTail
from hub.config import Settings
from hub.errors import InvalidTask
from hub.grpc.convert import buffer_from_pb, buffer_to_pb
from hub.v1 import common_pb2 as pb

SETTINGS = Settings(journal_head_bytes=4, journal_tail_bytes=4)


@pytest.mark.parametrize("stream", [b"", b"abc", b"abcdefgh", b"0123456789abcdef" * 3])
def test_a_true_head_tail_round_trips(stream: bytes) -> None:
    buffer = HeadTail(attempt=2).append(stream, 4, 4)
    assert buffer_from_pb(buffer_to_pb(buffer), 2, SETTINGS) == buffer


@pytest.mark.parametrize(
    "buffer",
    [
        pb.Buffer(head=b"12345", tail=b"", total_bytes=5),  # head too long
        pb.Buffer(head=b"1234", tail=b"12345", total_bytes=9),  # tail too long
        pb.Buffer(head=b"12", tail=b"", total_bytes=9),  # dropped bytes but head not full
        pb.Buffer(head=b"1234", tail=b"12", total_bytes=9),  # dropped bytes but tail not full
        pb.Buffer(head=b"1234", tail=b"1234", total_bytes=3),  # total below what is kept
    ],
)
def test_a_buffer_that_breaks_the_trimming_rules_is_refused(buffer: pb.Buffer) -> None:
    with pytest.raises(InvalidTask):
        buffer_from_pb(buffer, 1, SETTINGS)
