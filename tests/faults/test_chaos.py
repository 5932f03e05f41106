"""The reduced chaos run for CI: ``hub dev chaos`` at a size a test can afford.

A 3-server NATS cluster (R3), three replica processes and a few node processes run mixed tasks
while the controller SIGKILLs (and restarts) at least one node, one replica and one NATS server.
The large run is a command; its figures are in docs/reliability.md.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from hub.dev.chaos import run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.mark.parametrize("shards", [1, 3], ids=["one-journal-bucket", "three-journal-buckets"])
async def test_reduced_chaos_loses_nothing(shards: int) -> None:
    report = await run_chaos(
        tasks=60,
        kills=3,
        seed=11,
        nodes=4,
        journal_shards=shards,
        console=Console(stderr=True, quiet=True),
    )
    assert report.kills_by_kind == {"node": 1, "replica": 1, "nats": 1}, report
    assert report.journal_buckets == shards, report
    # every accepted task has exactly one terminal result, and it is a success
    assert report.lost == 0, report
    assert report.double_results == 0, report
    assert report.not_succeeded == 0, report
    # duplicate executions only where a lease was lost (never more runs than claimed attempts)
    assert report.unexplained_duplicates == 0, report
    # nothing still queued or claimed in any work queue once the load stopped
    assert report.messages_left == 0, report
    # head+tail of every task's stdout byte-exact, including tasks whose replica was killed
    # mid-output (the node sends its head+tail with the result: 062f265)
    assert report.journal_mismatches == 0, report
    assert report.ok
