"""NATS names and the pure parsers: task subjects, consumers, keys and JetStream ack subjects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.errors import InvalidTask
from hub.model import Priority, Route
from hub.nats import subjects
from hub.nats.subjects import AckInfo, parse_ack

GPU = Route(capabilities=frozenset({"gpu", "cuda"}))


def test_public_names() -> None:
    assert [subjects.stream_name(p) for p in Priority] == [
        "HUB_TASKS_CRITICAL",
        "HUB_TASKS_HIGH",
        "HUB_TASKS_NORMAL",
        "HUB_TASKS_LOW",
    ]
    assert subjects.DLQ_STREAM == "HUB_DLQ"
    assert (subjects.JOURNAL_BUCKET, subjects.NODES_BUCKET) == ("hub_journal", "hub_nodes")
    assert subjects.record_key("t1") == "task.t1"
    assert subjects.buffer_key("t1", "stdout") == "task.t1.stdout"
    assert subjects.buffer_key("t1", "thoughts") == "task.t1.thoughts"
    with pytest.raises(InvalidTask):
        subjects.buffer_key("t1", "stderr")


def test_journal_buckets_and_their_pinned_shards() -> None:
    """Shard 0 keeps the public name. The mapping is stored layout (a record is found only in
    the bucket its id hashed to when written), so these values must never change."""
    assert [subjects.journal_bucket(s) for s in range(3)] == [
        "hub_journal",
        "hub_journal_1",
        "hub_journal_2",
    ]
    assert [subjects.journal_shard(f"task.{i}", 4) for i in ("t1", "cli-1", "a", "d")] == [
        3,
        1,
        3,
        0,
    ]
    assert subjects.journal_shard("task.t1", 3) == 2


TASK_IDS = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=64
)


@given(task_id=TASK_IDS, shards=st.integers(1, 64))
def test_a_tasks_keys_share_one_shard_in_range(task_id: str, shards: int) -> None:
    shard = subjects.journal_shard(subjects.record_key(task_id), shards)
    assert 0 <= shard < shards
    for name in ("stdout", "thoughts"):
        assert subjects.journal_shard(subjects.buffer_key(task_id, name), shards) == shard
    assert subjects.journal_shard(subjects.record_key(task_id), 1) == 0


@pytest.mark.parametrize("bad", ["", "*", ">", "a.b", "a b", "t1.stdout", "x" * 65])
def test_keys_refuse_ids_that_are_not_task_ids(bad: str) -> None:
    """A wildcard id would make a direct get return some other task's record."""
    with pytest.raises(InvalidTask):
        subjects.record_key(bad)
    with pytest.raises(InvalidTask):
        subjects.buffer_key(bad, "stdout")


@pytest.mark.parametrize(
    ("route", "subject"),
    [
        (Route(), "hub.tasks.high.any"),
        (Route(node="n-1"), "hub.tasks.high.node.n-1"),
        (GPU, "hub.tasks.high.cap.cuda_gpu"),
    ],
)
def test_task_subject_round_trip(route: Route, subject: str) -> None:
    """One subject per route, not per task: the task id travels in a header."""
    assert subjects.task_subject(Priority.HIGH, route) == subject
    assert subjects.parse_task_subject(subject) == (Priority.HIGH, route)
    bell = subject.replace("hub.tasks.", "hub.bell.", 1)
    assert subjects.parse_task_subject(bell) == (Priority.HIGH, route)


@pytest.mark.parametrize(
    "subject",
    [
        "hub.tasks.high",
        "hub.tasks.high.any.t1",
        "hub.tasks.urgent.any",
        "hub.tasks.high.node",
        "hub.tasks.high.node.n1.t1",
        "hub.tasks.high.cap",
        "hub.tasks.high.elsewhere.x",
        "other.tasks.high.any",
        "hub.dlq.high.any",
    ],
)
def test_bad_task_subjects(subject: str) -> None:
    with pytest.raises(InvalidTask):
        subjects.parse_task_subject(subject)


def test_consumer_filters_are_disjoint_per_route() -> None:
    """Work-queue streams refuse overlapping consumer filters: each route has its own."""
    routes = [Route(), Route(node="n1"), Route(node="n2"), GPU, Route(capabilities={"gpu"})]
    names = [subjects.consumer_for(Priority.LOW, r) for r in routes]
    filters = [n.filter_subject for n in names]
    assert len(set(filters)) == len(filters)
    assert filters[0] == "hub.tasks.low.any"
    assert filters[1] == "hub.tasks.low.node.n1"
    assert filters[3] == "hub.tasks.low.cap.cuda_gpu"
    assert {n.stream for n in names} == {"HUB_TASKS_LOW"}
    for name, route in zip(names, routes, strict=True):  # (a rescan reads routes off subjects)
        assert subjects.parse_task_subject(name.filter_subject) == (Priority.LOW, route)


def test_msg_id_changes_with_generation() -> None:
    assert subjects.msg_id("t1", 1) != subjects.msg_id("t1", 2)


def test_parse_ack_v1() -> None:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp>.<pending>
    subject = "$JS.ACK.HUB_TASKS_NORMAL.any.3.42.57.1763852000123456789.0"
    assert parse_ack(subject) == AckInfo("HUB_TASKS_NORMAL", "any", 3, 42)


def test_parse_ack_v2() -> None:
    # $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>
    #        .<consumer seq>.<timestamp>.<pending>.<random token>
    subject = "$JS.ACK._.ACCHASH123.HUB_TASKS_LOW.node_n1.1.7.9.1763852000123456789.4.tok3n"
    assert len(subject.split(".")) == 12
    assert parse_ack(subject) == AckInfo("HUB_TASKS_LOW", "node_n1", 1, 7)
    with_domain = subject.replace("$JS.ACK._.", "$JS.ACK.hubdomain.", 1)
    assert parse_ack(with_domain) == AckInfo("HUB_TASKS_LOW", "node_n1", 1, 7)


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "_INBOX.abc",
        "$JS.API.STREAM.INFO.X",
        "$JS.ACK.S.C.1.2.3.4",  # 8 tokens
        "$JS.ACK.S.C.1.2.3.4.5.6",  # 10 tokens
        "$JS.ACK.S.C.one.2.3.4.5",  # not a number
        "$JS.ACK._.H.S.C.1.x.3.4.5.tok",
    ],
)
def test_parse_ack_refuses_other_subjects(subject: str) -> None:
    with pytest.raises(InvalidTask):
        parse_ack(subject)


def test_other_names() -> None:
    assert subjects.dlq_subject("t1") == "hub.dlq.t1"
    assert subjects.journal_feed_subject("task.t1") == "hub.journal.task.t1"
    assert subjects.cancel_subject("t1") == "hub.cancel.t1"
    assert subjects.bell_subject() == "hub.bell.*.>"
    assert subjects.bell_subject(Priority.LOW) == "hub.bell.low.>"
    assert subjects.node_key("n1") == "node.n1"
