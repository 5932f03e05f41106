"""The store's floor: the hub's stored writes per task, with no gRPC and no hub code around them.

With `sync_interval: always`, nats-server fsyncs each stored message on its own, one after the
other on each stream. Then throughput is bounded by how many stored writes a task makes on
each stream, whatever runs around them. Raw nats-py (`raw_nats.py`) makes two on its work
queue (publish, ack) and one on its result bucket. The hub makes five: three on the journal
bucket's stream (record create, claim, result) and two on a priority's work queue (publish,
confirmed ack), as DESIGN.md's invariants ask.

Each rep, on a fresh embedded nats-server with the hub's own topology (`Topology.ensure`: the
same streams, consumers, republish and limits as a replica creates), measures:

- `stream_writes_per_s`: stored publishes per second on one stream, `--inflight` at once;
- `two_streams_writes_per_s`: the same spread over two streams (how far the store runs
  streams in parallel);
- the task path, `--inflight` tasks at once, each: record create (compare-and-set on 0), task
  publish (with its message id and record header), delivery through a held pull, claim
  (compare-and-set), result (compare-and-set, with the result TTL), confirmed ack. Its
  `tasks_per_s`, latencies (create to ack) and CPU per task (`client`: this one process;
  `nats_server`) use the vocabulary of the other task benchmarks, so `sidebyside.py` can put
  it beside them.

Journal values are `--record-bytes` long (about a finished record's size in the hub), and the
process reads the journal feed and the doorbell as every replica does (`--no-feeds`: not).
`--journal-shards N` makes the journal of N buckets, as the hub's `HUB_JOURNAL_SHARDS` does,
and spreads the records over them in turn (the hub hashes task ids: the same load, but each
bucket's share exact, so the run can check it).

    python benchmarks/store_floor.py --tasks 3000 --inflight 64 --sync always --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import orjson
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Background,
    CpuMeter,
    HeldPull,
    RepResult,
    add_journal_shards_flag,
    add_rep_flags,
    add_task_flags,
    emit_json,
    median,
    nats_server_version,
    note,
    note_rep,
    progress,
    run_async,
    summarize,
    task_params,
)

from hub.config import Settings
from hub.model import Priority, Route
from hub.nats import subjects
from hub.nats.inline import subscribe_inline
from hub.nats.requests import Requests
from hub.nats.server import EmbeddedNats
from hub.nats.topology import Topology

EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_task_flags(p)
    p.add_argument("--writes", type=int, default=3000, help="stored writes per stream measure")
    p.add_argument(
        "--record-bytes",
        type=int,
        default=1000,
        help="bytes of each journal value (a finished task's record in the hub: about 1,000)",
    )
    p.add_argument(
        "--feeds",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read the journal feed and the doorbell, as every replica does",
    )
    add_journal_shards_flag(p)
    add_rep_flags(p, sync="always")
    return p.parse_args(argv)


async def _rate(n: int, inflight: int, write: Callable[[int], Awaitable[object]]) -> float:
    """``n`` calls of ``write``, ``inflight`` at once: calls per second."""
    gate = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with gate:
            await write(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t0)


def _value(size: int) -> bytes:
    return orjson.dumps({"status": "queued", "pad": "x" * max(size - 30, 0)})


async def stream_rates(nc: Nats, requests: Requests, args: argparse.Namespace) -> dict[str, float]:
    js = nc.jetstream()
    value = _value(args.record_bytes)
    for name in ("FLOOR_A", "FLOOR_B"):
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    out = {}
    for key, names in (("stream", ["floor_a"]), ("two_streams", ["floor_a", "floor_b"])):

        def write(i: int, names: list[str] = names) -> Awaitable[int]:
            return requests.publish(f"{names[i % len(names)]}.w", value, timeout_s=30.0)

        out[f"{key}_writes_per_s"] = await _rate(args.writes, args.inflight, write)
    return out


class TaskPath:
    """The hub's five stored writes per task, and nothing else."""

    def __init__(self, nc: Nats, settings: Settings, record: bytes, shards: int) -> None:
        self.nc, self.settings, self.record = nc, settings, record
        self.buckets = [subjects.journal_bucket(i) for i in range(shards)]
        self.bucket: dict[str, str] = {}  # task id -> its record's bucket
        self.submitted = 0
        self.requests = Requests(nc)
        self.consumer = subjects.consumer_for(Priority.NORMAL, Route())
        self.revision: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.latencies: list[float] = []
        self.background = Background()
        self.finished: asyncio.Queue[None] = asyncio.Queue()
        self.pull = HeldPull(nc, self.consumer.stream, self.consumer.durable, self._run)

    async def _cas(self, task_id: str, last: int, ttl_s: float = 0) -> int:
        headers = {EXPECTED_LAST: str(last)}
        if ttl_s:
            headers["Nats-TTL"] = str(int(ttl_s))
        subject = f"$KV.{self.bucket[task_id]}.{subjects.record_key(task_id)}"
        return await self.requests.publish(subject, self.record, timeout_s=30.0, headers=headers)

    async def start(self) -> None:
        await self.pull.start()

    async def submit(self, payload: bytes) -> None:
        task_id = uuid.uuid4().hex
        self.started[task_id] = time.perf_counter()
        self.bucket[task_id] = self.buckets[self.submitted % len(self.buckets)]
        self.submitted += 1
        revision = await self._cas(task_id, 0)
        self.revision[task_id] = revision
        headers = {  # (the headers the hub's task message carries)
            subjects.HEADER_MSG_ID: subjects.msg_id(task_id, 1),
            subjects.HEADER_TASK: task_id,
            subjects.HEADER_KIND: "echo",
            subjects.HEADER_GENERATION: "1",
            subjects.HEADER_RECORD: f"{revision} {self.record.decode()}",
        }
        subject = subjects.task_subject(Priority.NORMAL, Route())
        await self.requests.publish(subject, payload, timeout_s=30.0, headers=headers)

    async def _run(self, msg: Msg) -> None:
        task_id = (msg.headers or {})[subjects.HEADER_TASK]
        claimed = await self._cas(task_id, self.revision.pop(task_id))
        await self._cas(task_id, claimed, self.settings.result_ttl_s)
        await self.requests.request(msg.reply, b"+ACK", timeout_s=30.0)
        del self.bucket[task_id]
        self.latencies.append(time.perf_counter() - self.started.pop(task_id))
        self.finished.put_nowait(None)

    async def run(self, n: int, inflight: int, payload: bytes) -> None:
        """``n`` tasks, a new one started as each is acked, ``inflight`` at once."""
        with progress(n, "store_floor tasks") as bar:
            for i in range(n):
                if i >= inflight:
                    await self.finished.get()
                    bar.advance()
                self.background.run(self.submit(payload))
            for _ in range(min(n, inflight)):
                await self.finished.get()
                bar.advance()


async def _verify(nc: Nats, records: int, shards: int) -> None:
    """Every task's writes stored: one record per task, each bucket its share, and the work
    queue empty."""
    js = nc.jetstream()
    queued = (await js.stream_info(subjects.stream_name(Priority.NORMAL))).state.messages
    stored = [
        (await js.stream_info(f"KV_{subjects.journal_bucket(shard)}")).state.messages
        for shard in range(shards)
    ]
    shares = [records // shards + (shard < records % shards) for shard in range(shards)]
    if queued or stored != shares:
        raise RuntimeError(f"after the run: {queued} tasks queued, records {stored} not {shares}")


def _ignore(msg: Msg) -> None:
    pass


async def run_rep(args: argparse.Namespace) -> tuple[RepResult, dict[str, float]]:
    """One rep on a fresh nats-server: (the task path's figures, the stream measures)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-floor-"))
    server = EmbeddedNats(tmp / "nats", sync=args.sync)
    url = await server.start()
    try:
        nc = await nats.connect(url, name="store-floor")
        settings = Settings(journal_shards=args.journal_shards)
        await Topology(nc.jetstream(), settings).ensure()
        rates = await stream_rates(nc, Requests(nc), args)
        if args.feeds:  # (what a replica reads: every committed record write, every stored task)
            await subscribe_inline(nc, subjects.journal_feed_subject("task.*"), _ignore)
            await subscribe_inline(nc, subjects.bell_subject(), _ignore, headers=False)
        path = TaskPath(nc, settings, _value(args.record_bytes), args.journal_shards)
        await path.start()
        payload = b"x" * args.payload_bytes
        if args.warmup:
            await asyncio.wait_for(path.run(args.warmup, args.inflight, payload), args.timeout)
        path.latencies.clear()
        meter = CpuMeter({"client": [os.getpid()], "nats_server": [server.pid]})
        meter.start()
        t0 = time.perf_counter()
        await asyncio.wait_for(path.run(args.tasks, args.inflight, payload), args.timeout)
        elapsed = time.perf_counter() - t0
        cpu = meter.stop()
        await _verify(nc, args.warmup + args.tasks, args.journal_shards)
        await nc.close()
        return RepResult(args.tasks, elapsed, path.latencies, cpu), rates
    finally:
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def all_reps(args: argparse.Namespace) -> tuple[list[RepResult], list[dict[str, float]]]:
    reps, rates = [], []
    for i in range(args.reps):
        rep, rate = await run_rep(args)
        reps.append(rep)
        rates.append(rate)
        note_rep(i, rep)
        note(f"  stored writes/s: {', '.join(f'{k} {v:,.0f}' for k, v in rate.items())}")
    return reps, rates


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    (reps, rates), loop = run_async(all_reps(args), args.loop)
    params = {
        **task_params(args),
        "writes": args.writes,
        "record_bytes": args.record_bytes,
        "feeds": args.feeds,
        "journal_shards": args.journal_shards,
        "loop": loop,
        "nats_server": nats_server_version(),
    }
    result = summarize("store_floor", params, reps)
    for key in rates[0]:
        values = [round(r[key]) for r in rates]
        result[key] = median(values)
        result["raw"][key] = values
    emit_json(result)


if __name__ == "__main__":
    main()
