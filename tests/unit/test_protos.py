"""The committed generated modules match protos/ (nobody edits them by hand), and every NATS
name is spelled in one module."""

from __future__ import annotations

import re
from pathlib import Path

from hub.protogen import ROOT, generate


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    generate(tmp_path)
    generated = sorted((tmp_path / "hub" / "v1").glob("*_pb2*.py*"))
    assert generated, "protoc produced nothing"
    for fresh in generated:
        committed = ROOT / "hub" / "v1" / fresh.name
        assert committed.exists(), f"{committed} is missing: run python -m hub.protogen"
        assert committed.read_text() == fresh.read_text(), (
            f"{committed} differs from protos/: run python -m hub.protogen"
        )


def test_nats_names_are_spelled_once() -> None:
    """Streams, subjects and buckets live in hub/nats/subjects.py only."""
    pattern = re.compile(
        r"""["'](hub\.(tasks|bell|dlq|journal|cancel)\b|HUB_TASKS_|HUB_DLQ|hub_journal|hub_nodes)"""
    )
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "hub").rglob("*.py")
        if path.name != "subjects.py"
        and "v1" not in path.parts
        and pattern.search(path.read_text())
    ]
    assert offenders == []
