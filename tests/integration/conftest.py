"""Fixtures of the integration suite.

``e2e_hub``  a GrpcHub (tests/grpchub.py) on the ``nats_server`` of tests/conftest.py: start
             replicas, nodes, clients and raw node streams with ``await e2e_hub.replica()``,
             ``await e2e_hub.node(...)``, ...; all of them are closed at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from grpchub import GrpcHub

from hub.nats.server import EmbeddedNats


@pytest.fixture
async def e2e_hub(nats_server: EmbeddedNats) -> AsyncIterator[GrpcHub]:
    hub = GrpcHub(nats_server.url)
    try:
        yield hub
    finally:
        await hub.close()
