"""Provisioning: idempotent, updates what JetStream allows, refuses clearly what it does not; and
the names operators use with the ``nats`` CLI answer with readable JSON."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from hubtest import Core, make_settings
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from hub.errors import InvalidSettings
from hub.model import Priority, Route, TaskSpec
from hub.nats import subjects
from hub.nats.topology import Topology

NS = 1_000_000_000


async def api(core: Core, subject: str, body: bytes = b"") -> dict:
    """A JetStream API request exactly as the ``nats`` CLI makes it."""
    reply = await core.nc.request(subject, body, timeout=3)
    return json.loads(reply.data)


async def test_names_and_stream_settings(hub_core: Core) -> None:
    names = json.loads((await hub_core.nc.request("$JS.API.STREAM.NAMES", b"", timeout=3)).data)
    assert set(names["streams"]) >= {
        "HUB_TASKS_CRITICAL",
        "HUB_TASKS_HIGH",
        "HUB_TASKS_NORMAL",
        "HUB_TASKS_LOW",
        "HUB_DLQ",
        "KV_hub_journal",
        "KV_hub_nodes",
    }
    for priority in Priority:
        info = await api(hub_core, f"$JS.API.STREAM.INFO.{subjects.stream_name(priority)}")
        config = info["config"]
        assert config["retention"] == "workqueue"
        assert config["storage"] == "file"
        assert config["num_replicas"] == 1
        assert config["subjects"] == [f"hub.tasks.{priority.label}.>"]
        assert config["duplicate_window"] == 120 * NS
        # The trap: a stream max_age would remove a task while it runs.
        assert config.get("max_age", 0) == 0
        assert config["max_msg_size"] >= hub_core.settings.max_payload_bytes
        consumer = await api(
            hub_core, f"$JS.API.CONSUMER.INFO.{subjects.stream_name(priority)}.any"
        )
        c = consumer["config"]
        assert c["ack_policy"] == "explicit" and c["filter_subject"] == (
            f"hub.tasks.{priority.label}.any"
        )
        assert c["ack_wait"] == int(hub_core.settings.ack_wait_s * NS)
    journal = (await api(hub_core, "$JS.API.STREAM.INFO.KV_hub_journal"))["config"]
    assert journal.get("max_age", 0) == 0  # no bucket TTL: running tasks' records never vanish
    assert journal["allow_msg_ttl"] is True
    assert journal["subject_delete_marker_ttl"] == int(hub_core.settings.result_ttl_s * NS)
    assert journal["republish"]["dest"] == "hub.journal.>"


async def test_ensure_twice_changes_nothing(hub_core: Core) -> None:
    async def snapshot() -> dict:
        out = {}
        for name in [*(subjects.stream_name(p) for p in Priority), "HUB_DLQ", "KV_hub_journal"]:
            info = await api(hub_core, f"$JS.API.STREAM.INFO.{name}")
            out[name] = (info["config"], info["created"])
        consumers = await api(hub_core, "$JS.API.CONSUMER.NAMES.HUB_TASKS_NORMAL")
        out["consumers"] = sorted(consumers["consumers"])
        return out

    before = await snapshot()
    await hub_core.topology.ensure()
    await Topology(hub_core.js, hub_core.settings).ensure()  # another replica starting
    assert await snapshot() == before


async def test_ensure_updates_what_jetstream_allows(hub_core: Core) -> None:
    other = make_settings(dedupe_window_s=5.0, ack_wait_s=4.0)
    await Topology(hub_core.js, other).ensure()
    info = await api(hub_core, "$JS.API.STREAM.INFO.HUB_TASKS_NORMAL")
    assert info["config"]["duplicate_window"] == 5 * NS
    await hub_core.topology.ensure()  # back to this replica's settings
    info = await api(hub_core, "$JS.API.STREAM.INFO.HUB_TASKS_NORMAL")
    assert info["config"]["duplicate_window"] == 120 * NS
    consumer = await api(hub_core, "$JS.API.CONSUMER.INFO.HUB_TASKS_NORMAL.any")
    assert consumer["config"]["ack_wait"] == int(hub_core.settings.ack_wait_s * NS)


async def test_ensure_refuses_what_jetstream_cannot_change(hub_core: Core) -> None:
    await hub_core.js.delete_stream("HUB_TASKS_LOW")
    await hub_core.js.add_stream(
        StreamConfig(
            name="HUB_TASKS_LOW",
            subjects=["hub.tasks.low.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
        )
    )
    with pytest.raises(InvalidSettings) as info:
        await Topology(hub_core.js, hub_core.settings).ensure()
    message = str(info.value)
    assert "HUB_TASKS_LOW" in message and "cannot change" in message
    assert "retention" in message.lower()
    # and it left the stream as it was
    config = (await api(hub_core, "$JS.API.STREAM.INFO.HUB_TASKS_LOW"))["config"]
    assert config["retention"] == "limits"


async def test_a_journal_of_shards_keeps_its_count(hub_core: Core, make_core) -> None:
    """A replica counting the journal's shards otherwise would look for records in the wrong
    buckets: it is refused at start, naming the setting and the journal's own count, and
    makes no bucket."""
    with pytest.raises(InvalidSettings) as info:
        await make_core(journal_shards=2)
    assert "HUB_JOURNAL_SHARDS is 2" in str(info.value) and "made with 1" in str(info.value)
    names = json.loads((await hub_core.nc.request("$JS.API.STREAM.NAMES", b"", timeout=3)).data)
    assert not [n for n in names["streams"] if n.startswith("KV_hub_journal_")]


async def test_replicas_that_make_a_new_journal_at_once_agree_on_its_count(nats_server) -> None:
    """Two replicas starting together on an empty NATS both find no journal. The one that
    creates it sets the count; the other takes it if it named none, or is refused. Before,
    the second one's update overwrote the count while the first ran with its own."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        for _ in range(8):  # (the race goes either way; each round starts from no journal)
            pair = [Topology(js, make_settings(journal_shards=3)), Topology(js, make_settings())]
            outcomes = await asyncio.gather(*(t.ensure() for t in pair), return_exceptions=True)
            running = [t for t, out in zip(pair, outcomes, strict=True) if out is None]
            assert all(o is None or isinstance(o, InvalidSettings) for o in outcomes), outcomes
            assert running and running[-1] is pair[1]  # the one that named no count runs
            info = await js.stream_info(f"KV_{subjects.JOURNAL_BUCKET}")
            made = int(info.config.metadata["hub.journal_shards"])
            assert {t.journal_shards for t in running} == {made}, (outcomes, made)
            for name in [n async for n in _journal_streams(js)]:
                await js.delete_stream(name)
    finally:
        await nc.close()


async def _journal_streams(js):
    for info in await js.streams_info():
        if info.config.name.startswith(f"KV_{subjects.JOURNAL_BUCKET}"):
            yield info.config.name


@pytest.mark.parametrize("stored", ["", "three", "0", "65"])
async def test_a_journal_whose_count_is_not_one_is_refused(nats_server, stored: str) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        config = Topology(nc.jetstream(), make_settings()).journal_stream(0)
        config.metadata = {"hub.journal_shards": stored}
        await nc.jetstream().add_stream(config)
        with pytest.raises(InvalidSettings, match="not a count from 1 to 64"):
            await Topology(nc.jetstream(), make_settings()).ensure()
        info = await nc.jetstream().stream_info(config.name)  # and left as it was
        assert info.config.metadata["hub.journal_shards"] == stored
    finally:
        await nc.close()


async def test_a_sharded_record_is_readable_with_the_nats_cli_request(make_core) -> None:
    """With HUB_JOURNAL_SHARDS=4 the record of ``cli-1`` is in ``hub_journal_1``
    (``subjects.journal_shard``): `nats kv get hub_journal_1 task.cli-1`. A replica that
    leaves the setting unset takes the journal's own count; one that names another is refused."""
    core = await make_core(journal_shards=4)
    with pytest.raises(InvalidSettings, match="made with 4"):
        await make_core(journal_shards=1)
    unset = await make_core()
    assert unset.topology.journal_shards == unset.journal.shards == 4
    await core.pool.submit(TaskSpec(kind="echo", payload=b"hello", id="cli-1"))
    assert (await unset.journal.get("cli-1")).payload_bytes == 5
    reply = await core.nc.request(
        "$JS.API.DIRECT.GET.KV_hub_journal_1.$KV.hub_journal_1.task.cli-1", b"", timeout=3
    )
    assert json.loads(reply.data)["id"] == "cli-1"
    for shard in (0, 2, 3):
        assert await core.journal_messages(shard) == 0
    info = await api(core, "$JS.API.STREAM.INFO.KV_hub_journal_3")
    assert info["config"]["republish"] == {"src": "$KV.hub_journal_3.>", "dest": "hub.journal.>"}
    assert info["config"]["subject_delete_marker_ttl"] == int(core.settings.result_ttl_s * NS)


async def test_record_is_readable_with_the_nats_cli_request(hub_core: Core) -> None:
    record, _ = await hub_core.pool.submit(
        TaskSpec(kind="echo", payload=b"hello", id="cli-1", priority=Priority.HIGH)
    )
    # `nats kv get hub_journal task.cli-1` makes this direct get:
    reply = await hub_core.nc.request(
        "$JS.API.DIRECT.GET.KV_hub_journal.$KV.hub_journal.task.cli-1", b"", timeout=3
    )
    assert reply.headers and reply.headers.get("Nats-Subject") == "$KV.hub_journal.task.cli-1"
    data = json.loads(reply.data)
    assert data["id"] == "cli-1" and data["status"] == "queued"
    assert data["priority"] == "high" and data["kind"] == "echo"
    assert data["route"] == {"node": "", "capabilities": []}
    # and `nats stream info HUB_TASKS_HIGH` shows the queued task
    info = await api(hub_core, "$JS.API.STREAM.INFO.HUB_TASKS_HIGH")
    assert info["state"]["messages"] == 1
    assert record.id == "cli-1"
    # `nats stream subjects HUB_TASKS_HIGH` counts queued tasks per route (one subject each)
    await hub_core.pool.submit(
        TaskSpec(
            kind="echo",
            payload=b"",
            id="cli-2",
            priority=Priority.HIGH,
            route=Route(capabilities=frozenset({"gpu"})),
        )
    )
    await hub_core.pool.submit(TaskSpec(kind="echo", payload=b"", id="cli-3", priority="high"))
    query = json.dumps({"subjects_filter": "hub.tasks.>"}).encode()
    info = await api(hub_core, "$JS.API.STREAM.INFO.HUB_TASKS_HIGH", query)
    assert info["state"]["subjects"] == {"hub.tasks.high.any": 2, "hub.tasks.high.cap.gpu": 1}


async def test_a_priority_stream_holds_more_consumers_than_nats_servers_default(
    hub_core: Core,
) -> None:
    """nats-server 2.15 caps a stream that names no consumer limit at 1,000 consumers, and
    every node seen in the last day has one per priority: the hub names its own limit."""
    name = subjects.stream_name(Priority.LOW)
    info = await api(hub_core, f"$JS.API.STREAM.INFO.{name}")
    assert info["config"]["max_consumers"] == hub_core.settings.max_stream_consumers > 1001
    for i in range(1001):
        await hub_core.topology.ensure_consumer(Priority.LOW, Route(node=f"n{i:04d}"))
    info = await api(hub_core, f"$JS.API.STREAM.INFO.{name}")
    assert info["state"]["consumer_count"] == 1002  # and "any"


async def test_ensure_lifts_the_consumer_limit_of_a_stream_made_without_one(
    hub_core: Core,
) -> None:
    """A stream an older hub made (no limit named, so nats-server's 1,000) is updated."""
    name = subjects.stream_name(Priority.HIGH)
    config = (await hub_core.js.stream_info(name)).config
    config.max_consumers = -1
    await hub_core.js.update_stream(config)
    assert (await hub_core.js.stream_info(name)).config.max_consumers == -1
    await Topology(hub_core.js, hub_core.settings).ensure()
    limit = (await hub_core.js.stream_info(name)).config.max_consumers
    assert limit == hub_core.settings.max_stream_consumers
