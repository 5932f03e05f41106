"""Fixtures of the fault suite: real nats-server processes that the tests kill and restart.

``nats_cluster``  a 3-server NatsCluster (routes on loopback, own store each, sync "always") in
                  ``tmp_path``, JetStream ready to place R3 streams. Servers a test SIGKILLs can
                  be restarted on the same store and ports (``server.restart()``); every member
                  is stopped at teardown, whatever the test left running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.dev.cluster import NatsCluster


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with NatsCluster(tmp_path / "cluster", servers=3, sync="always") as cluster:
        yield cluster
