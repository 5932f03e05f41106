"""The record a task message carries (``Hub-Record``) is input: only a well-formed record of
the same task may stand in for a journal read."""

from __future__ import annotations

import pytest

from hub import lifecycle
from hub.journal import _hinted
from hub.model import TaskSpec

RECORD = lifecycle.submitted(TaskSpec(kind="echo", id="t1").validated(1024, 3), 1.0)


def test_a_good_hint_is_the_record_and_its_revision() -> None:
    assert _hinted("t1", (7, RECORD.to_json())) == (RECORD, 7)
    assert _hinted("t1", None) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b"{}",
        RECORD.to_json().replace(b'"queued"', b'"bogus"'),
        RECORD.to_json().replace(b'"normal"', b'"urgent"'),
    ],
)
def test_a_malformed_hint_is_ignored(raw: bytes) -> None:
    assert _hinted("t1", (7, raw)) is None


def test_another_tasks_record_is_ignored() -> None:
    assert _hinted("t2", (7, RECORD.to_json())) is None
