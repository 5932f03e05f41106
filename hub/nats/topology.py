"""Provision the hub's streams, buckets and consumers: idempotent, loud about what it cannot do.

Run at every replica start. Twice changes nothing; against streams made with other settings it
updates what JetStream allows and raises a clear error for what it does not (e.g. retention).
"""

from __future__ import annotations

import logging

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from hub.config import MAX_JOURNAL_SHARDS, Settings
from hub.errors import InvalidSettings, LimitReached
from hub.model import Priority, Route
from hub.nats import subjects
from hub.nats.errors import nats_errors, retrying
from hub.nats.requests import Requests

__all__ = ("Topology", "journal_shards_made")

log = logging.getLogger(__name__)

STREAM_IN_USE = 10058
MAXIMUM_CONSUMERS = 10026
IDLE_CONSUMER_S = 24 * 3600.0
#: Stream metadata of ``KV_hub_journal``: how many shards the journal was made with.
SHARDS_METADATA = "hub.journal_shards"


async def journal_shards_made(js: JetStreamContext) -> int | None:
    """How many shards the journal in NATS was made with (its first stream's metadata; a
    journal from before shards has none, and one), or None when there is no journal yet."""
    name = f"KV_{subjects.JOURNAL_BUCKET}"
    with nats_errors(f"read stream {name}"):
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return None
    stored = (info.config.metadata or {}).get(SHARDS_METADATA, "1")
    if not stored.isdigit() or not 1 <= int(stored) <= MAX_JOURNAL_SHARDS:
        raise InvalidSettings(
            f"stream {name} says the journal has {stored!r} shards ({SHARDS_METADATA} in its "
            f"metadata), which is not a count from 1 to {MAX_JOURNAL_SHARDS}: restore it"
        )
    return int(stored)


class Topology:
    """The hub's JetStream objects for one connection, with consumers created on demand."""

    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self.js, self.settings = js, settings
        self._consumers: set[tuple[str, str]] = set()
        self.nodes: KeyValue
        self.journal_shards = settings.journal_shards or 1  # the journal's own, after ensure()

    def task_stream(self, priority: Priority) -> StreamConfig:
        s = self.settings
        return StreamConfig(
            name=subjects.stream_name(priority),
            description=f"hub work queue, priority {priority.label}",
            subjects=[subjects.stream_subjects(priority)],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=s.stream_replicas,
            duplicate_window=s.dedupe_window_s,
            max_msg_size=s.max_payload_bytes + 8192,
            # Named, not -1: nats-server 2.15 reads "no limit" as its default of 1,000, and every
            # node seen in the last day has a consumer on each priority.
            max_consumers=s.max_stream_consumers,
            # No max_age: the hub enforces the task TTL on unclaimed tasks only (DESIGN "Traps").
            republish=RePublish(
                src=subjects.stream_subjects(priority),
                dest=subjects.bell_subject(priority),
                headers_only=True,
            ),
        )

    def dlq_stream(self) -> StreamConfig:
        return StreamConfig(
            name=subjects.DLQ_STREAM,
            description="hub dead letters: tasks that used up their attempts",
            subjects=[subjects.dlq_subject("*")],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=self.settings.stream_replicas,
            max_msgs_per_subject=1,
            max_msg_size=self.settings.max_payload_bytes + 65536,
            allow_direct=True,
        )

    def journal_stream(self, shard: int) -> StreamConfig:
        """A journal bucket's stream: no bucket TTL (that would delete running tasks' records
        silently); finished records carry a per-key TTL, and the expiry marker is the
        tombstone. Each shard republishes its committed writes to the one journal feed."""
        bucket = subjects.journal_bucket(shard)
        config = self.bucket_stream(bucket, ttl=0, marker_ttl=self.settings.result_ttl_s)
        config.republish = RePublish(src=f"$KV.{bucket}.>", dest=subjects.journal_feed_subject())
        if shard == 0:
            config.metadata = {SHARDS_METADATA: str(self.journal_shards)}
        return config

    def bucket_stream(self, bucket: str, *, ttl: float, marker_ttl: float | None) -> StreamConfig:
        """The stream behind a KV bucket, as nats-py builds it, so it can also be updated."""
        return StreamConfig(
            name=f"KV_{bucket}",
            subjects=[f"$KV.{bucket}.>"],
            allow_direct=True,
            allow_rollup_hdrs=True,
            allow_msg_ttl=True,
            deny_delete=True,
            discard=DiscardPolicy.NEW,
            duplicate_window=min(120.0, ttl) if ttl else 120.0,
            max_age=ttl,
            max_consumers=-1,
            max_msg_size=self.settings.journal_value_bytes,
            max_msgs=-1,
            max_msgs_per_subject=1,
            num_replicas=self.settings.stream_replicas,
            storage=StorageType.FILE,
            subject_delete_marker_ttl=marker_ttl,
        )

    async def ensure(self) -> None:
        self._consumers.clear()  # re-apply every consumer's config, not just the new ones
        for priority in Priority:
            await self._stream(self.task_stream(priority))
            await self.ensure_consumer(priority, Route())
        await self._stream(self.dlq_stream())
        self.journal_shards = await self._journal_shards()
        if not await self._create(self.journal_stream(0)):
            # It exists: perhaps made by another replica since we looked. Its count stands.
            self.journal_shards = await self._journal_shards()
            await self._stream(self.journal_stream(0))
        for shard in range(1, self.journal_shards):
            await self._stream(self.journal_stream(shard))
        await self._stream(
            self.bucket_stream(
                subjects.NODES_BUCKET, ttl=max(30.0, 6 * self.settings.heartbeat_s), marker_ttl=None
            )
        )
        with nats_errors("bind buckets"):
            self.nodes = await self.js.key_value(subjects.NODES_BUCKET)

    async def _journal_shards(self) -> int:
        """The journal's own shard count (from its first stream's metadata), or for a new
        journal the setting's (1 if unset). A task's keys are in the bucket its id hashed to
        when they were written, so a replica counting otherwise would read and write the wrong
        buckets (an unknown task, a second record): a setting that disagrees is refused."""
        asked, made = self.settings.journal_shards, await journal_shards_made(self.js)
        if made is None:
            return asked or 1
        if asked and asked != made:
            raise InvalidSettings(
                f"HUB_JOURNAL_SHARDS is {asked}, but the journal in NATS was made with {made}: "
                f"leave it unset, or set {made} (a journal's shard count is fixed when it is made)"
            )
        return made

    async def _create(self, config: StreamConfig) -> bool:
        """Create the stream; False if one by that name exists with other settings (an
        existing stream with the same settings is created again, a no-op)."""
        with nats_errors(f"create stream {config.name}"):
            try:
                await self.js.add_stream(config)
                return True
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != STREAM_IN_USE:
                    raise InvalidSettings(f"stream {config.name}: {exc.description}") from exc
        return False

    async def _stream(self, config: StreamConfig) -> None:
        if await self._create(config):
            return
        with nats_errors(f"update stream {config.name}"):
            try:
                await self.js.update_stream(config)
                log.warning("stream %s existed with other settings; updated", config.name)
            except nats.js.errors.APIError as exc:
                raise InvalidSettings(
                    f"stream {config.name} exists with settings JetStream cannot change "
                    f"({exc.description}); remove it or match the settings"
                ) from exc

    async def ensure_consumer(self, priority: Priority, route: Route) -> subjects.ConsumerName:
        """The durable pull consumer for (priority, route), created once per replica."""
        name = subjects.consumer_for(priority, route)
        if (name.stream, name.durable) in self._consumers:
            return name
        config = ConsumerConfig(
            durable_name=name.durable,
            filter_subject=name.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.settings.ack_wait_s,
            # The hub counts attempts in the journal and moves a task to the DLQ itself: a
            # message that used up max_deliver would otherwise stay in the work queue.
            max_deliver=-1,
            max_ack_pending=-1,
            max_waiting=4096,
            inactive_threshold=None if route.kind == "any" else IDLE_CONSUMER_S,
        )
        try:
            await retrying(
                f"create consumer {name.stream}/{name.durable}",
                lambda: self.js.add_consumer(name.stream, config),
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code != MAXIMUM_CONSUMERS:
                raise
            raise LimitReached(
                f"stream {name.stream} holds its {self.settings.max_stream_consumers} consumers "
                f"(one per route), so route {name.durable!r} has none; raise "
                "HUB_MAX_STREAM_CONSUMERS, or wait a day for idle nodes' consumers to go"
            ) from exc
        self._consumers.add((name.stream, name.durable))
        return name

    async def presences(self, requests: Requests) -> list[KeyValue.Entry]:
        """Every node's presence entry (``node.<id>`` in the nodes bucket), read key by key.

        The keys come from the bucket stream's subjects, not from ``KeyValue.keys()``, whose
        watcher can answer "no keys" while the keys are in flight to it (nats-io/nats.py#842):
        a node list came back empty now and then under load.
        """
        prefix = f"$KV.{subjects.NODES_BUCKET}."
        held = await requests.stream_subjects(
            f"KV_{subjects.NODES_BUCKET}",
            f"{prefix}node.>",
            timeout_s=self.settings.request_timeout_s,
        )
        entries = []
        for subject in sorted(held):
            try:
                entry = await self.nodes.get(subject[len(prefix) :])
            except nats.js.errors.KeyNotFoundError:  # deleted (a marker), or gone since
                continue
            if entry.value:
                entries.append(entry)
        return entries

    def forget_consumers(self) -> None:
        """After a server restart, an idle consumer may have been removed: re-create on use."""
        self._consumers.clear()

    def forget_consumer(self, name: subjects.ConsumerName) -> None:
        """The consumer is gone (idle for a day, or removed): create it again on next use."""
        self._consumers.discard((name.stream, name.durable))
