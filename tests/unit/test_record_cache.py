"""The replica's record cache: the newest revision wins, bounded, and cheap for the collector."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub import lifecycle
from hub.journal import RecordCache, _ends_wait
from hub.model import TaskRecord, TaskSpec


def record(task_id: str, attempt: int = 0) -> TaskRecord:
    spec = TaskSpec(kind="echo", id=task_id).validated(1024, 3)
    return dataclasses.replace(lifecycle.submitted(spec, 1.0), attempt=attempt)


def test_a_record_is_decoded_from_its_json_once_it_left_the_decoded_few() -> None:
    cache = RecordCache(size=10, decoded=2)
    for i in range(5):
        r = record(f"t{i}", attempt=i)
        cache.store(r.id, 100 + i, r.to_json(), r)
    assert cache.get("t0") == (record("t0", 0), 100)  # decoded anew from its JSON
    assert cache.get("t4") == (record("t4", 4), 104)
    assert len(cache._decoded) == 2


def test_an_older_revision_never_replaces_a_newer_one() -> None:
    cache = RecordCache()
    new, old = record("t1", attempt=2), record("t1", attempt=1)
    cache.store("t1", 7, new.to_json(), new)
    cache.store("t1", 5, old.to_json())
    assert cache.get("t1") == (new, 7)


def test_a_stale_decoded_copy_is_not_served_for_a_newer_revision() -> None:
    cache = RecordCache()
    first, second = record("t1", attempt=1), record("t1", attempt=2)
    cache.store("t1", 5, first.to_json(), first)
    cache.store("t1", 6, second.to_json())  # from the feed: JSON only
    assert cache.get("t1") == (second, 6)


def test_tombstones_and_currency() -> None:
    cache = RecordCache()
    cache.store("gone", 9, b"")
    assert cache.get("gone") == (None, 9)
    assert cache.get("gone", current=True) is None  # no feed yet: nothing is current
    cache.new_epoch()
    r = record("t1")
    cache.store("t1", 3, r.to_json(), r)
    assert cache.has("t1", 3) and not cache.has("t1", 2)
    assert cache.get("t1", current=True) == (r, 3)
    cache.new_epoch()  # the feed broke: what is held is only a hint now
    assert cache.get("t1", current=True) is None and not cache.has("t1", 3)
    assert cache.get("t1") == (r, 3)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["store", "get", "forget"]), st.integers(0, 6), st.integers(1, 9)
        ),
        max_size=60,
    )
)
def test_behaves_like_a_bounded_map_of_newest_revisions(ops: list[tuple[str, int, int]]) -> None:
    """The model is a map of the newest revision per key that, like the cache, forgets its
    least recently stored key past 4: a key it forgot knows nothing of its old revisions (the
    compare-and-set and the feed catch up), so an older one may be stored again after it."""
    cache = RecordCache(size=4, decoded=2)
    model: OrderedDict[str, int] = OrderedDict()
    for op, n, revision in ops:
        task_id = f"t{n}"
        if op == "store":
            r = record(task_id, attempt=revision)
            cache.store(task_id, revision, r.to_json(), r if revision % 2 else None)
            if model.get(task_id, 0) <= revision:
                model[task_id] = revision
                model.move_to_end(task_id)
                if len(model) > 4:
                    model.popitem(last=False)
        elif op == "forget":
            cache.forget(task_id)
            model.pop(task_id, None)
        else:
            got = cache.get(task_id)
            expected = model.get(task_id)
            assert got == (None if expected is None else (record(task_id, expected), expected))
        assert len(cache._known) <= 4 and len(cache._decoded) <= 2


def test_a_full_cache_gives_the_collector_little_to_walk() -> None:
    """Entries past the decoded few are bytes and ints in a tuple, which the collector stops
    tracking: 5,000 records add far fewer tracked objects than 5,000 decoded records (about
    15,000: each record, its route and its frozen capabilities)."""
    raws = [(f"t{i}", record(f"t{i}").to_json()) for i in range(5000)]
    gc.collect()
    before = len(gc.get_objects())
    cache = RecordCache(size=10_000, decoded=100)
    for i, (task_id, raw) in enumerate(raws):
        cache.store(task_id, i + 1, raw, record(task_id))
    gc.collect()
    assert len(gc.get_objects()) - before < 2_000


def test_a_full_cache_holds_the_records_bytes_not_the_encoders_buffers() -> None:
    """``to_json`` hands back orjson's whole working buffer (about 8 KB for these 400-byte
    records): kept as it came, 1,000 records held over 8 MB."""
    records = [record(f"t{i}") for i in range(1000)]
    size = sum(len(r.to_json()) for r in records)
    cache = RecordCache(size=1000, decoded=0)
    tracemalloc.start()
    try:
        for i, r in enumerate(records):
            cache.store(r.id, i + 1, r.to_json())
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 3 * size


@pytest.mark.parametrize(
    ("raw", "ends"),
    [
        (b'{"id":"t","status":"succeeded"}', True),
        (b'{"id":"t","status":"dead"}', True),
        (b'{"id":"t","status":"running"}', False),
        (b'{"id":"t","status":"queued"}', False),
        (b"not json", True),  # passed on, to fail where it is decoded
        (b"[1, 2]", True),
    ],
)
def test_only_what_ends_a_wait_wakes_a_waiter(raw: bytes, ends: bool) -> None:
    assert _ends_wait(raw) is ends
