"""Fixtures: real nats-server processes on free ports with temporary stores (never a mock).

``nats_server``   an EmbeddedNats (port 0, sync "always") in ``tmp_path``; a test may ``kill()`` it
                  and bring it back on the same store and port with ``restart_nats``.
``restart_nats``  SIGKILL a server and start a new one on the same data directory and port.
``settings``      short timers so that leases, TTLs and dedupe windows run out within a test.
``make_core``     connect another Core (nc, js, topology, journal, queue, pool) to the server,
                  optionally with other settings; every Core is closed at teardown.
``hub_core``      one Core with ``settings``.

Helpers (Core, make_settings, eventually) live in ``hubtest.py`` beside this file.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hubtest import Core, make_settings, open_core

from hub.config import Settings
from hub.errors import ServerFailed
from hub.nats.server import EmbeddedNats


@pytest.fixture(autouse=True)
def _no_hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read HUB_* variables: a stray one in the caller's shell must not leak in."""
    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "hub", sync="always")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def restart_nats() -> AsyncIterator[Callable[[EmbeddedNats], Awaitable[EmbeddedNats]]]:
    """``await restart_nats(server)``: SIGKILL it (if still up), wait for its exit, and start a
    new server on the same data directory and port. Servers started here are stopped at the end.
    """
    started: list[EmbeddedNats] = []

    async def restart(server: EmbeddedNats) -> EmbeddedNats:
        process = server.process
        server.kill()
        if process is not None:
            async with asyncio.timeout(10):
                await process.wait()
        server.process = None
        new = EmbeddedNats(server.data_dir, port=server.port, sync=server.sync, name=server.name)
        started.append(new)
        # The port was just released by a killed process: allow a few tries to bind it again.
        for attempt in range(20):
            try:
                await new.start()
                return new
            except ServerFailed:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.25)
        raise AssertionError("unreachable")

    yield restart
    for server in started:
        await server.stop()


@pytest.fixture
async def make_core(
    nats_server: EmbeddedNats,
) -> AsyncIterator[Callable[..., Awaitable[Core]]]:
    """``await make_core(**setting_overrides)``: a replica's Core on its own connection."""
    cores: list[Core] = []

    async def make(*, url: str | None = None, **overrides: Any) -> Core:
        core = await open_core(url or nats_server.url, make_settings(**overrides))
        cores.append(core)
        return core

    yield make
    for core in cores:
        await core.close()


@pytest.fixture
async def hub_core(nats_server: EmbeddedNats, settings: Settings) -> AsyncIterator[Core]:
    core = await open_core(nats_server.url, settings)
    try:
        yield core
    finally:
        await core.close()
