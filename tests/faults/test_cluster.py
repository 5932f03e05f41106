"""Losing one NATS server of three loses no task (DESIGN invariant 1, issue 6).

Real processes only: a 3-server cluster (``nats_cluster``), the hub's streams and buckets at R3,
and two Pools on connections to different servers taking and completing tasks while a third
connection submits. Mid-run the server leading the journal bucket is SIGKILLed (by the pid this
test started) and later restarted on the same store and ports. Every accepted task must end
``succeeded`` with exactly one successful attempt, and no work-queue stream may still hold a
message. The figures (election time, stall, duplicates) are logged and attached to the report as
properties; docs/reliability.md quotes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from hubtest import NATS_PY_RECONNECT_LEAK, Core, eventually, make_settings, open_core

from hub.dev.cluster import NatsCluster
from hub.errors import HubError, Unavailable
from hub.journal import Journal
from hub.lifecycle import submitted
from hub.model import Priority, Status, TaskRecord, TaskSpec
from hub.nats import subjects
from hub.nats.server import EmbeddedNats, find_binary

pytestmark = [NATS_PY_RECONNECT_LEAK, pytest.mark.slow, pytest.mark.timeout(120)]

log = logging.getLogger(__name__)

TASKS = 200
#: The kill comes once this many tasks were handed to submit: mid-run, with work in flight.
KILL_AFTER = 60
SUBMIT_PACE_S = 0.015
SUBMIT_CONCURRENCY = 8
JOURNAL_STREAM = f"KV_{subjects.JOURNAL_BUCKET}"
#: Leases outlive a typical election, so most in-flight tasks finish rather than re-run; the
#: budget of attempts is high so that a task unlucky enough to re-run is not sent to the DLQ.
SETTINGS: dict[str, Any] = {
    "stream_replicas": 3,
    "ack_wait_s": 4.0,
    "heartbeat_s": 1.0,
    "max_attempts": 10,
    "request_timeout_s": 3.0,
}


@dataclass
class Tally:
    """What the workers saw: executions and successful completions per task, refusals by kind,
    and anything the library let escape that is not a HubError (a bug at its boundary)."""

    executions: Counter[str] = field(default_factory=Counter)
    successes: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    completed_at: list[float] = field(default_factory=list)


def reason(exc: HubError) -> str:
    """A refusal's kind; for Unavailable also the operation (its message names it)."""
    return str(exc) if isinstance(exc, Unavailable) else type(exc).__name__


async def work(core: Core, node: str, tally: Tally, stop: asyncio.Event) -> None:
    """A node and its replica in one loop: take up to 4 tasks, run each (begin, complete)."""
    pool = core.pool
    while not stop.is_set():
        pool.bell.clear()
        try:
            grants = await pool.take(node, slots=4)
        except HubError as exc:
            tally.refusals[f"take: {reason(exc)}"] += 1
            await asyncio.sleep(0.1)
            continue
        except Exception as exc:
            tally.unexpected.append(f"take: {exc!r}")
            await asyncio.sleep(0.1)
            continue
        if not grants:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pool.bell.wait()
            continue
        for grant in grants:
            task_id, attempt = grant.record.id, grant.record.attempt
            tally.executions[task_id] += 1
            try:
                await pool.begin(task_id, attempt, node)
                await pool.complete(task_id, attempt, grant.payload, node)
            except HubError as exc:
                tally.refusals[reason(exc)] += 1
                continue
            except Exception as exc:
                tally.unexpected.append(f"complete: {exc!r}")
                continue
            tally.successes[task_id] += 1
            tally.completed_at.append(time.monotonic())


async def submit_all(
    core: Core, ids: list[str], accepted: set[str], halfway: asyncio.Event
) -> Counter[str]:
    """Submit every id, paced, as a client would: an Unavailable is retried with the same id
    (submit is idempotent), for up to 30 s per task. Sets ``halfway`` after KILL_AFTER."""
    gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    retries: Counter[str] = Counter()

    async def one(index: int, task_id: str) -> None:
        spec = TaskSpec(
            kind="echo", payload=task_id.encode(), priority=Priority(index % 4), id=task_id
        )
        deadline = time.monotonic() + 30
        async with gate:
            while True:
                try:
                    await core.pool.submit(spec)
                except Unavailable:
                    retries["submit"] += 1
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
                    continue
                accepted.add(task_id)
                return

    pending = []
    for index, task_id in enumerate(ids):
        pending.append(asyncio.create_task(one(index, task_id)))
        if index == KILL_AFTER:
            halfway.set()
        await asyncio.sleep(SUBMIT_PACE_S)
    await asyncio.gather(*pending)
    return retries


def longest_gap(stamps: list[float], start: float) -> float:
    """The longest time without a successful completion, from ``start`` on."""
    times = sorted(t for t in stamps if t >= start)
    return max((b - a for a, b in zip([start, *times], times, strict=False)), default=0.0)


async def test_losing_the_journal_leader_loses_no_task(
    nats_cluster: NatsCluster, record_property: Callable[[str, object], None]
) -> None:
    began = time.monotonic()
    settings = make_settings(**SETTINGS)
    await (await open_core(nats_cluster.urls[0], settings, name="provision")).close()
    victim = await nats_cluster.stream_leader(JOURNAL_STREAM)
    assert victim is not None
    others = [s for s in nats_cluster.servers if s is not victim]
    # Worker A sits on the victim (it must reconnect), worker B and the submitter elsewhere.
    cores = [
        await open_core(victim.url, settings, name="worker-a"),
        await open_core(others[0].url, settings, name="worker-b"),
        await open_core(others[1].url, settings, name="submitter"),
    ]
    worker_a, worker_b, client = cores
    led = []
    for info in await client.js.streams_info():
        assert info.config.num_replicas == 3, info.config.name
        if info.cluster and info.cluster.leader == victim.name:
            led.append(info.config.name)

    tally, stop = Tally(), asyncio.Event()
    workers = [
        asyncio.create_task(work(worker_a, "node-a", tally, stop)),
        asyncio.create_task(work(worker_b, "node-b", tally, stop)),
    ]
    ids = [f"clu{i:04d}" for i in range(TASKS)]
    accepted: set[str] = set()
    halfway = asyncio.Event()
    try:
        submitting = asyncio.create_task(submit_all(client, ids, accepted, halfway))
        await halfway.wait()

        victim_pid = victim.pid
        victim.kill()
        killed_at = time.monotonic()
        await victim.wait_exit()
        leader, _ = await nats_cluster.wait_leader(
            JOURNAL_STREAM, other_than=victim.name, timeout_s=20
        )
        election_s = time.monotonic() - killed_at
        await victim.restart()
        restarted_s = time.monotonic() - killed_at
        catch_up_s = await nats_cluster.wait_current(timeout_s=20)

        submit_retries = await asyncio.wait_for(submitting, 45)
        assert accepted == set(ids)

        async def all_succeeded() -> bool:
            for task_id in ids:
                if (await client.journal.get(task_id)).status is not Status.SUCCEEDED:
                    return False
            return True

        async def queues_empty() -> bool:
            return await client.all_task_messages() == 0

        # A complete whose ack was lost in the election leaves its message until ack_wait
        # expires; the redelivery is then dropped as finished. Hence the wait for empty queues.
        await eventually(all_succeeded, timeout_s=30, interval_s=0.25)
        await eventually(queues_empty, timeout_s=3 * settings.ack_wait_s, interval_s=0.25)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)

    records = [await client.journal.get(task_id) for task_id in ids]
    lost = [r.id for r in records if r.status is not Status.SUCCEEDED]
    assert lost == []
    for record in records:
        assert record.result == record.id.encode()
        wins = [h for h in record.history if h.outcome == "succeeded"]
        assert len(wins) == 1, record.history
    assert max(tally.successes.values()) == 1, "a task had two successful completions"
    assert tally.unexpected == []
    assert (await client.js.stream_info(subjects.DLQ_STREAM)).state.messages == 0

    figures = {
        "tasks": TASKS,
        "accepted": len(accepted),
        "lost": len(lost),
        "victim": f"{victim.name} pid {victim_pid}, new journal leader {leader.name}",
        "victim_led": led,
        "election_s": round(election_s, 2),
        "restart_s": round(restarted_s, 2),
        "catch_up_s": round(catch_up_s, 2),
        "longest_stall_s": round(longest_gap(tally.completed_at, killed_at), 2),
        "executions": sum(tally.executions.values()),
        "duplicate_executions": sum(tally.executions.values()) - TASKS,
        "refusals": dict(tally.refusals),
        "submit_retries": submit_retries["submit"],
        "reconnects": worker_a.reconnects,
        "wall_s": round(time.monotonic() - began, 1),
    }
    for name, value in figures.items():
        record_property(name, value)
    log.warning("cluster fault figures: %s", figures)
    for core in cores:
        await core.close()


# -- the retry rule of journal writes, made deterministic on one server -------------------------


def reply_lost_once(
    monkeypatch: pytest.MonkeyPatch, journal: Journal, before_raise: Callable[[], Awaitable[None]]
) -> list[int]:
    """Make the journal's next publish be stored but reported as a timeout (its reply lost in an
    election or a disconnect), running ``before_raise`` in between; the stored revisions."""
    real: Callable[..., Awaitable[int]] = journal.requests.publish
    stored: list[int] = []

    async def publish(*args: Any, **kwargs: Any) -> int:
        seq = await real(*args, **kwargs)
        stored.append(seq)
        if len(stored) == 1:
            await before_raise()
            raise nats.errors.TimeoutError
        return seq

    monkeypatch.setattr(journal.requests, "publish", publish)
    return stored


async def nothing() -> None:
    return None


async def test_a_write_whose_reply_was_lost_is_recognised_on_retry(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry meets wrong-last-sequence from its own stored write: not a lost race."""
    settings = make_settings()
    core = await open_core(nats_server.url, settings)
    try:
        spec = TaskSpec(kind="echo", id="landed1").validated(settings.max_payload_bytes, 5)
        record = submitted(spec, time.time())
        stored = reply_lost_once(monkeypatch, core.journal, nothing)
        assert (await core.journal.create(record))[::2] == (record, True)
        assert len(stored) == 1  # the retry was refused (wrong last sequence), nothing new stored

        monkeypatch.undo()
        stored = reply_lost_once(monkeypatch, core.journal, nothing)
        updated = await core.journal.update("landed1", lambda r: replace(r, deliveries=1))
        assert updated.deliveries == 1 and len(stored) == 1
        fresh, revision = await core.journal.read("landed1", fresh=True)
        assert fresh.deliveries == 1 and revision == stored[0]
    finally:
        await core.close()


async def test_a_retry_that_meets_another_writer_decides_again(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another replica wrote after our stored-but-unanswered write, the retry cannot tell
    and ``update`` decides again on the current record: the transition is then applied twice,
    which the lifecycle's fencing makes harmless (a second success is AlreadyFinished)."""
    settings = make_settings()
    core = await open_core(nats_server.url, settings)
    rival = await open_core(nats_server.url, settings)
    try:
        spec = TaskSpec(kind="echo", id="raced1").validated(settings.max_payload_bytes, 5)
        await core.journal.create(submitted(spec, time.time()))

        async def rival_writes() -> None:
            await rival.journal.update("raced1", lambda r: replace(r, node="rival"))

        reply_lost_once(monkeypatch, core.journal, rival_writes)
        seen: list[tuple[str, int]] = []

        def change(r: TaskRecord) -> TaskRecord:
            seen.append((r.node, r.deliveries))
            return replace(r, deliveries=r.deliveries + 1)

        result = await core.journal.update("raced1", change)
        assert seen == [("", 0), ("rival", 1)]
        assert (result.node, result.deliveries) == ("rival", 2)
    finally:
        await rival.close()
        await core.close()


# -- deploy/ configs are valid for the nats-server the hub is tested with ----------------------

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def k8s_nats_conf() -> str:
    """The nats.conf block of the ConfigMap in deploy/k8s/nats.yaml (a literal block scalar)."""
    lines = (DEPLOY / "k8s" / "nats.yaml").read_text().splitlines()
    start = lines.index("  nats.conf: |") + 1
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block) + "\n"


@pytest.mark.parametrize("name", ["n1.conf", "n2.conf", "n3.conf", "k8s"])
def test_deploy_nats_configs_are_valid(name: str, tmp_path: Path) -> None:
    """``nats-server -t`` accepts each config (with its environment), and a missing secret is
    refused rather than silently empty."""
    if name == "k8s":
        conf = tmp_path / "nats.conf"
        conf.write_text(k8s_nats_conf())
    else:
        conf = DEPLOY / "nats" / name
    text = conf.read_text()
    assert "sync_interval: always" in text
    env = {"PATH": os.environ.get("PATH", ""), "NATS_HUB_PASSWORD": "x", "POD_NAME": "nats-0"}
    check = [str(find_binary()), "-t", "-c", str(conf)]
    ok = subprocess.run(check, env=env, capture_output=True, text=True, timeout=10, check=False)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    del env["NATS_HUB_PASSWORD"]
    bad = subprocess.run(check, env=env, capture_output=True, text=True, timeout=10, check=False)
    assert bad.returncode != 0 and "NATS_HUB_PASSWORD" in bad.stderr + bad.stdout
