"""Task specs, routes, priorities and the journal record's JSON: validation is pure."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.errors import InvalidTask, PayloadTooLarge
from hub.model import (
    AttemptInfo,
    Priority,
    Route,
    Status,
    TaskRecord,
    TaskSpec,
    decode_bytes,
    encode_bytes,
    evolve,
    validate_node_id,
)


def test_priority_parse() -> None:
    assert Priority.parse("critical") is Priority.CRITICAL
    assert Priority.parse(" Low ") is Priority.LOW
    assert Priority.parse(1) is Priority.HIGH
    assert Priority.parse(Priority.NORMAL) is Priority.NORMAL
    assert [p.label for p in sorted(Priority)] == ["critical", "high", "normal", "low"]
    for bad in ("urgent", "", 4, -1):
        with pytest.raises(InvalidTask):
            Priority.parse(bad)


def test_spec_defaults_and_generated_id() -> None:
    spec = TaskSpec(kind="echo").validated(100, 7)
    assert len(spec.id) == 32 and spec.max_attempts == 7 and spec.priority is Priority.NORMAL
    assert TaskSpec(kind="echo").validated(100, 7).id != spec.id
    explicit = TaskSpec(kind="a.b:c/d-e_f", id="My-task_1", max_attempts=2, priority="high")
    v = explicit.validated(100, 7)  # type: ignore[arg-type]
    assert (v.id, v.max_attempts, v.priority) == ("My-task_1", 2, Priority.HIGH)


@pytest.mark.parametrize(
    ("spec", "what"),
    [
        (TaskSpec(kind="echo", id="has space"), "task id"),
        (TaskSpec(kind="echo", id="a.b"), "task id"),  # a dot would split the subject
        (TaskSpec(kind="echo", id="a*"), "task id"),
        (TaskSpec(kind="echo", id="x" * 65), "task id"),
        (TaskSpec(kind=""), "kind"),
        (TaskSpec(kind="has space"), "kind"),
        (TaskSpec(kind="k" * 65), "kind"),
        (TaskSpec(kind="echo", priority="urgent"), "priority"),  # type: ignore[arg-type]
        (TaskSpec(kind="echo", priority=9), "priority"),  # type: ignore[arg-type]
        (TaskSpec(kind="echo", max_attempts=-1), "max_attempts"),
        (TaskSpec(kind="echo", max_attempts=1001), "max_attempts"),
        (TaskSpec(kind="echo", timeout_s=-1), "timeout_s"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(spec: TaskSpec, what: str) -> None:
    with pytest.raises(InvalidTask, match=what):
        spec.validated(100, 3)


def test_payload_limit() -> None:
    TaskSpec(kind="echo", payload=b"x" * 100).validated(100, 3)
    with pytest.raises(PayloadTooLarge) as info:
        TaskSpec(kind="echo", payload=b"x" * 101).validated(100, 3)
    assert (info.value.size, info.value.limit) == (101, 100)
    assert isinstance(info.value, InvalidTask)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capabilities": frozenset({"GPU"})},  # upper case
        {"capabilities": frozenset({"a_b"})},  # "_" joins capabilities in subjects
        {"capabilities": frozenset({"a.b"})},
        {"capabilities": frozenset({"-x"})},
        {"capabilities": frozenset({""})},
        {"capabilities": frozenset(f"c{i}" for i in range(9))},
        {"node": "bad node"},
        {"node": "a.b"},
        {"node": "n1", "capabilities": frozenset({"gpu"})},
    ],
)
def test_invalid_routes(kwargs: dict) -> None:
    with pytest.raises(InvalidTask):
        Route(**kwargs)


def test_route_matching() -> None:
    anyone = Route()
    directed = Route(node="n1")
    gpu = Route(capabilities=frozenset({"gpu"}))
    gpu_cuda = Route(capabilities=frozenset({"gpu", "cuda12"}))
    assert anyone.can_run_on("n1", frozenset()) and anyone.kind == "any"
    assert directed.can_run_on("n1", frozenset()) and not directed.can_run_on("n2", frozenset())
    assert directed.kind == "node" and gpu.kind == "cap"
    assert not gpu.can_run_on("n1", frozenset())
    assert not gpu.can_run_on("n1", frozenset({"cpu"}))
    assert gpu.can_run_on("n1", frozenset({"gpu", "big"}))
    assert not gpu_cuda.can_run_on("n1", frozenset({"gpu"}))
    assert gpu_cuda.can_run_on("n1", frozenset({"gpu", "cuda12", "x"}))
    assert Route.from_json(gpu_cuda.to_json()) == gpu_cuda


def test_node_ids() -> None:
    assert validate_node_id("node-1_A") == "node-1_A"
    for bad in ("", "a b", "a.b", "n" * 65, "a>"):
        with pytest.raises(InvalidTask):
            validate_node_id(bad)


def record(result: bytes) -> TaskRecord:
    return TaskRecord(
        id="t1",
        kind="echo",
        priority=Priority.HIGH,
        route=Route(capabilities=frozenset({"gpu", "big"})),
        status=Status.SUCCEEDED,
        created_at=1.5,
        updated_at=2.5,
        max_attempts=3,
        result=result,
        attempt=2,
        history=(AttemptInfo(1, "n1", 1.0, 2.0, "lease expired"), AttemptInfo(2, "n2", 2.0)),
    )


@given(st.binary(max_size=300))
def test_record_json_round_trip_is_exact(result: bytes) -> None:
    r = record(result)
    assert TaskRecord.from_json(r.to_json()) == r


def test_record_json_is_readable() -> None:
    data = json.loads(record(b"hello").to_json())
    assert data["status"] == "succeeded" and data["priority"] == "high"
    assert data["result"] == "hello" and data["result_encoding"] == "utf-8"
    assert data["route"] == {"node": "", "capabilities": ["big", "gpu"]}
    assert data["history"][0]["outcome"] == "lease expired"
    binary = json.loads(record(b"\xff\x00").to_json())
    assert binary["result_encoding"] == "base64"
    # unknown fields (a newer writer) are ignored, not fatal
    data["new_field"] = 1
    assert TaskRecord.from_json(json.dumps(data).encode()).result == b"hello"


def test_corrupt_base64_result() -> None:
    data = json.loads(record(b"\xff").to_json())
    data["result"] = "not base64!"
    with pytest.raises(InvalidTask):
        TaskRecord.from_json(json.dumps(data).encode())


@given(st.binary(max_size=200))
def test_bytes_as_json_text_round_trip(data: bytes) -> None:
    text = encode_bytes(data)
    assert decode_bytes(json.loads(json.dumps(text))) == data


def test_terminal_and_active() -> None:
    r = record(b"")
    assert r.terminal and not r.active


def test_evolve_is_replace_and_refuses_unknown_fields() -> None:
    r = record(b"x")
    changed = evolve(r, node="n-1", attempt=3)
    assert changed == dataclasses.replace(r, node="n-1", attempt=3)
    assert r == record(b"x")  # the original is untouched
    with pytest.raises(TypeError, match="nodee"):
        evolve(r, nodee="n-1")
