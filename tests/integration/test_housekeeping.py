"""Housekeeping runs on any replica, at most one at a time per job, without a fixed leader.

Each job is guarded by a lock key in ``hub_nodes`` (created only if absent, with a per-message
TTL, kept alive while the job runs). Three in-process replicas share one nats-server; their
sweeps are timed by wrapping ``Pool.sweep_expired``, made slower than the lock's TTL, so a lock
that merely expired mid-job would show up as two sweeps overlapping.

Stale node presence: a node process SIGKILLed (by its PID) disappears from ``hub_nodes`` (and
``ListNodes``) within a few heartbeats, long before the bucket's own max age; a live node stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from pathlib import Path

import nats.js.errors
import pytest
from hubtest import make_settings

from hub.client import Client
from hub.dev.procs import node_process
from hub.nats import subjects
from hub.nats.server import EmbeddedNats
from hub.replica import Replica

pytestmark = pytest.mark.timeout(60)


def e2e_settings(**overrides: object):
    return make_settings(grpc_addr="127.0.0.1:0", **overrides)


INTERVAL_S = 0.3
SLOW_SWEEP_S = 2.5  # longer than the lock's TTL (1 s, the least a message TTL can be)


async def test_sweeps_of_several_replicas_never_overlap(nats_server: EmbeddedNats) -> None:
    settings = e2e_settings(housekeeping_interval_s=INTERVAL_S)
    spans: list[tuple[str, float, float]] = []
    running: set[str] = set()
    overlaps: list[set[str]] = []
    replicas = [Replica(settings, [nats_server.url], replica_id=f"r{i}") for i in range(3)]
    try:
        for replica in replicas:
            await replica.start()

            async def slow_sweep(rid: str = replica.id) -> int:
                if running:
                    overlaps.append({*running, rid})
                running.add(rid)
                began = time.monotonic()
                try:
                    await asyncio.sleep(SLOW_SWEEP_S)
                finally:
                    running.discard(rid)
                    spans.append((rid, began, time.monotonic()))
                return 0

            replica.pool.sweep_expired = slow_sweep  # type: ignore[method-assign]
        await asyncio.sleep(4 * SLOW_SWEEP_S)
    finally:
        for replica in replicas:
            await replica.stop(drain=False)
    assert not overlaps, overlaps
    assert len(spans) >= 3, spans  # the job ran, one sweep after another
    spans.sort(key=lambda s: s[1])
    for (_, _, end), (_, begin, _) in itertools.pairwise(spans):
        assert begin >= end, spans


async def test_lock_is_taken_by_one_replica_per_ttl(nats_server: EmbeddedNats) -> None:
    """Quick jobs: the lock key's revisions show one acquisition per TTL (1 s), by one
    replica each, not one per replica per interval (0.3 s)."""
    settings = e2e_settings(housekeeping_interval_s=INTERVAL_S)
    sweeps: list[str] = []
    replicas = [Replica(settings, [nats_server.url], replica_id=f"q{i}") for i in range(3)]
    try:
        for replica in replicas:
            await replica.start()

            async def sweep(rid: str = replica.id) -> int:
                sweeps.append(rid)
                return 0

            replica.pool.sweep_expired = sweep  # type: ignore[method-assign]
        watcher = await replicas[0].pool.topology.nodes.watch(
            subjects.lock_key("sweep"), include_history=False
        )
        taken: list[str] = []
        began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                async for entry in watcher:
                    if entry is not None and entry.value:
                        taken.append(entry.value.decode())
        elapsed = time.monotonic() - began
        await watcher.stop()
    finally:
        for replica in replicas:
            await replica.stop(drain=False)
    # at most one acquisition per lock TTL, plus the one held when the count began
    assert 3 <= len(taken) <= elapsed / 1.0 + 1, taken
    assert set(taken) <= {r.id for r in replicas}, taken
    assert len(sweeps) <= len(taken) + 1, (sweeps, taken)


async def test_stale_presence_of_a_killed_node_is_cleaned(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    settings = e2e_settings(housekeeping_interval_s=INTERVAL_S, heartbeat_s=0.3)
    replica = Replica(settings, [nats_server.url])
    await replica.start()
    addr = f"127.0.0.1:{replica.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    nodes = [node_process(n, [addr], env, tmp_path / "logs") for n in ("doomed", "alive")]
    try:
        for node in nodes:
            await node.start()
        async with Client(addr) as client:

            async def listed() -> set[str]:
                return {n.node_id for n in (await client.nodes()).nodes}

            await _until(lambda: _eq(listed(), {"doomed", "alive"}), timeout_s=20)
            await nodes[0].kill()
            killed = time.monotonic()
            await _until(lambda: _eq(listed(), {"alive"}), timeout_s=10)
            gone_after = time.monotonic() - killed
            # well before the bucket's max age (30 s) would have removed it
            assert gone_after < 5, gone_after
            # and a live node is not cleaned away: it stays listed through several sweeps
            for _ in range(10):
                assert await listed() == {"alive"}
                await asyncio.sleep(0.2)
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            entry = await replica.pool.topology.nodes.get(subjects.node_key("doomed"))
            raise AssertionError(f"presence still there: {entry}")
    finally:
        for node in nodes:
            await node.kill()
        await replica.stop(drain=False)


async def _eq(value, expected) -> bool:
    return (await value) == expected


async def _until(probe, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.1)
