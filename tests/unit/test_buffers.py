"""HeadTail against a simple reference: the whole stream kept in memory and sliced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.buffers import HeadTail, Unwritten

chunks = st.lists(st.binary(max_size=64), max_size=30)
sizes = st.integers(min_value=0, max_value=80)


def reference(stream: bytes, head_max: int, tail_max: int) -> tuple[bytes, bytes]:
    head = stream[:head_max]
    rest = stream[head_max:]
    tail = rest[-tail_max:] if tail_max else b""
    return head, tail


def reference_since(stream: bytes, head: bytes, tail: bytes, offset: int) -> tuple[bytes, int]:
    """Every stream position from ``offset`` on: held ones are returned, the others counted."""
    total = len(stream)
    tail_start = total - len(tail)

    def held(i: int) -> bool:
        return i < len(head) or i >= tail_start

    positions = range(max(offset, 0), total)
    out = bytes(stream[i] for i in positions if held(i))
    return out, sum(1 for i in positions if not held(i))


def build(parts: list[bytes], head_max: int, tail_max: int) -> HeadTail:
    buffer = HeadTail()
    for part in parts:
        buffer = buffer.append(part, head_max, tail_max)
    return buffer


@given(chunks, sizes, sizes)
def test_head_and_tail_are_byte_exact(parts: list[bytes], head_max: int, tail_max: int) -> None:
    stream = b"".join(parts)
    buffer = build(parts, head_max, tail_max)
    head, tail = reference(stream, head_max, tail_max)
    assert buffer.head == head
    assert buffer.tail == tail
    assert buffer.total == len(stream)
    assert buffer.dropped == len(stream) - len(head) - len(tail)
    assert len(buffer.head) + len(buffer.tail) <= head_max + tail_max
    if buffer.dropped == 0:
        assert buffer.head + buffer.tail == stream


@given(chunks, sizes, sizes, st.integers(min_value=-5, max_value=2000))
def test_since_returns_what_is_held_and_counts_the_gap(
    parts: list[bytes], head_max: int, tail_max: int, offset: int
) -> None:
    stream = b"".join(parts)
    buffer = build(parts, head_max, tail_max)
    assert buffer.since(offset) == reference_since(stream, buffer.head, buffer.tail, offset)


@given(chunks, sizes, sizes)
def test_json_round_trip_is_exact(parts: list[bytes], head_max: int, tail_max: int) -> None:
    buffer = build(parts, head_max, tail_max)
    again = HeadTail.from_json(buffer.to_json())
    assert again == buffer


def test_follow_a_growing_stream_with_since() -> None:
    """A watcher that remembers ``total`` prints each byte once and is told of every gap."""
    stream, seen, offset, skipped = b"", b"", 0, 0
    buffer = HeadTail(attempt=3)
    for i in range(50):
        part = bytes([65 + i % 26]) * (i % 7 + 1)
        stream += part
        buffer = buffer.append(part, 10, 20)
        data, gap = buffer.since(offset)
        seen += data
        skipped += gap
        offset = buffer.total
    assert buffer.attempt == 3
    assert len(seen) + skipped == len(stream)
    assert seen.startswith(stream[:10]) and seen.endswith(stream[-20:])


def test_empty_append_is_a_no_op() -> None:
    buffer = HeadTail().append(b"abc", 2, 2)
    assert buffer.append(b"", 2, 2) is buffer
    assert (buffer.head, buffer.tail, buffer.dropped) == (b"ab", b"c", 0)


@given(chunks, chunks, sizes, sizes)
def test_extend_by_a_view_equals_appending_the_whole_stream(
    first: list[bytes], second: list[bytes], head_max: int, tail_max: int
) -> None:
    """What the journal does with output folded while its write lagged (``Unwritten``)."""
    before = build(first, head_max, tail_max)
    view = build(second, head_max, tail_max)
    expected = before.append(b"".join(second), head_max, tail_max)
    assert before.extend(view, head_max, tail_max) == expected
    head, tail = reference(b"".join(first + second), head_max, tail_max)
    assert (expected.head, expected.tail) == (head, tail)


@given(chunks, sizes, sizes, st.integers(min_value=0, max_value=50))
def test_pending_output_stays_bounded_and_exact(
    parts: list[bytes], head_max: int, tail_max: int, slack: int
) -> None:
    """The journal's not-yet-written output folds into a view instead of growing."""
    pending = Unwritten(attempt=0)
    for part in parts:
        pending.add(part, head_max, tail_max, slack)
        assert len(pending.data) <= head_max + tail_max + slack
    assert pending.view(head_max, tail_max) == build(parts, head_max, tail_max)
