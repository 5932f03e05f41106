"""The hub's task path with no hub code in it: what any Python replica could reach here.

The same processes and the same serial steps as `e2e.py`, each done the cheapest way nats-py
and grpc.aio allow, with nothing else (no validation, no lifecycle, no record JSON, no
logging, no cache, no doorbell: pull requests wait at the server instead). Its NATS calls go
through the hub's own cheapest plumbing (`hub.nats.requests`, `hub.nats.inline`), so the
comparison is of the work around the steps, not of the client library:

    agent --gRPC stream--> relay: record create (CAS) -> task publish -> [held pull delivers]
      -> claim (CAS) --gRPC stream--> node --gRPC stream--> relay: result (CAS)
      --gRPC stream--> agent                   (then the confirmed ack, off the path)

The relay stands where a hub replica stands, the node where a hub node does, and this process
is the agent (K tasks in flight over one stream); `--loop` is every process's event loop. What
the hub's K=1 latency has above this path's is the hub's own work; what this path has is the
floor for any design that keeps the hub's stored writes and its gRPC ends.

    python benchmarks/bare_path.py --tasks 2000 --inflight 1 --sync 1s --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: F401  (first: it sets the gRPC variables gRPC reads on import)
import grpc
import nats
from _common import (
    Background,
    CpuMeter,
    HeldPull,
    Progress,
    RepResult,
    add_rep_flags,
    add_task_flags,
    each_rep,
    emit_json,
    free_port,
    nats_server_version,
    progress,
    run_async,
    spawn,
    stop_pid,
    summarize,
    task_params,
    wait_for_log,
)
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from hub.cli import loop_factory
from hub.grpc import environment
from hub.nats.requests import Requests
from hub.nats.server import EmbeddedNats

THIS_FILE = str(Path(__file__).resolve())
STREAM, SUBJECT, BUCKET = "BARE_Q", "bare.q", "bare_kv"
SUBMIT, CONNECT = "/bare.Bare/Submit", "/bare.Bare/Connect"
Requests_ = AsyncIterator[bytes]  # what a stream handler reads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_task_flags(p, inflight=1)
    add_rep_flags(p)
    p.add_argument("--role", choices=("relay", "node"), help=argparse.SUPPRESS)
    p.add_argument("--nats-url", help=argparse.SUPPRESS)
    p.add_argument("--addr", help=argparse.SUPPRESS)
    return p.parse_args(argv)


SEP = b"\0"  # between the tasks one stream message carries (ids and payloads hold no NUL)


async def frames(queue: asyncio.Queue[bytes]) -> AsyncIterator[bytes]:
    """Everything queued, as one stream message: the hub's outboxes batch the same way."""
    while True:
        batch = [await queue.get()]
        while not queue.empty():
            batch.append(queue.get_nowait())
        yield SEP.join(batch)


class Relay:
    """A replica reduced to its stored writes and its two streams."""

    def __init__(self, nc: Nats) -> None:
        self.nc = nc
        self.revision: dict[str, int] = {}
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.grants: asyncio.Queue[bytes] = asyncio.Queue()
        self.acks: dict[str, str] = {}
        self.background = Background()
        self.requests = Requests(nc)
        self.pull = HeldPull(nc, STREAM, "w", self._claim)

    async def _stored(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        return await self.requests.publish(subject, data, timeout_s=5.0, headers=headers)

    async def _cas(self, task_id: str, value: bytes) -> None:
        last = self.revision.get(task_id, 0)
        headers = {"Nats-Expected-Last-Subject-Sequence": str(last)}
        self.revision[task_id] = await self._stored(f"$KV.{BUCKET}.{task_id}", value, headers)

    async def start(self) -> None:
        await self.pull.start()

    async def _claim(self, msg: Msg) -> None:
        task_id = msg.subject.rsplit(".", 1)[1]
        self.acks[task_id] = msg.reply
        await self._cas(task_id, b"running")
        self.grants.put_nowait(task_id.encode() + b"\n" + msg.data)

    async def _submit(self, task: bytes) -> None:
        task_id, payload = task.decode().split("\n", 1)
        await self._cas(task_id, b"queued")
        await self._stored(f"{SUBJECT}.{task_id}", payload.encode(), {"Nats-Msg-Id": task_id})

    async def _result(self, result: bytes) -> None:
        task_id = result.split(b"\n", 1)[0].decode()
        await self._cas(task_id, b"done")
        self.replies.put_nowait(result)
        await self.requests.request(self.acks.pop(task_id), b"+ACK", timeout_s=5.0)
        del self.revision[task_id]

    async def _serve(
        self,
        requests: Requests_,
        outbox: asyncio.Queue[bytes],
        on: Callable[[bytes], Awaitable[None]],
    ) -> AsyncIterator[bytes]:
        async def read() -> None:
            async for message in requests:
                for item in message.split(SEP):
                    self.background.run(on(item))

        reader = asyncio.create_task(read())
        try:
            async for message in frames(outbox):
                yield message
        finally:
            reader.cancel()

    async def submit(self, requests: Requests_, context: object) -> AsyncIterator[bytes]:
        async for replies in self._serve(requests, self.replies, self._submit):
            yield replies

    async def connect(self, requests: Requests_, context: object) -> AsyncIterator[bytes]:
        async for grants in self._serve(requests, self.grants, self._result):
            yield grants


async def relay_main(url: str, addr: str) -> None:
    nc = await nats.connect(url, name="bare-relay")
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=STREAM,
            subjects=[f"{SUBJECT}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    await js.add_consumer(
        STREAM, ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1)
    )
    await js.create_key_value(bucket=BUCKET, history=1)
    relay = Relay(nc)
    await relay.start()
    server = grpc.aio.server()
    handlers = {
        "Submit": grpc.stream_stream_rpc_method_handler(relay.submit),
        "Connect": grpc.stream_stream_rpc_method_handler(relay.connect),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bare.Bare", handlers),))
    server.add_insecure_port(addr)
    await server.start()
    print("relay serving", flush=True)
    await server.wait_for_termination()


async def node_main(addr: str) -> None:
    async with grpc.aio.insecure_channel(addr) as channel:
        call = channel.stream_stream(CONNECT)()
        with contextlib.suppress(grpc.aio.AioRpcError):  # the relay stopped
            async for grants in call:
                await call.write(grants)  # the echo task: each result is its payload


async def drive(
    addr: str, n: int, inflight: int, payload: bytes, bar: Progress | None = None
) -> list[float]:
    """n tasks, `inflight` at a time over one stream; the latencies in seconds."""
    latencies: list[float] = []
    outbox: asyncio.Queue[bytes] = asyncio.Queue()
    waiting: dict[bytes, asyncio.Future[bytes]] = {}
    counter = itertools.count()
    async with grpc.aio.insecure_channel(addr) as channel:
        call = channel.stream_stream(SUBMIT)(frames(outbox))

        async def read() -> None:
            async for replies in call:
                for reply in replies.split(SEP):
                    waiting.pop(reply.split(b"\n", 1)[0]).set_result(reply)

        async def one_loop() -> None:
            while (i := next(counter)) < n:
                task_id = f"t{os.getpid()}x{time.monotonic_ns()}x{i}".encode()
                done = waiting[task_id] = asyncio.get_running_loop().create_future()
                t0 = time.perf_counter()
                outbox.put_nowait(task_id + b"\n" + payload)
                if await done != task_id + b"\n" + payload:
                    raise RuntimeError(f"task {task_id!r} came back wrong")
                latencies.append(time.perf_counter() - t0)
                if bar is not None:
                    bar.advance()

        reader = asyncio.create_task(read())
        try:
            await asyncio.gather(*(one_loop() for _ in range(min(inflight, n))))
        finally:
            reader.cancel()
    return latencies


async def run_rep(args: argparse.Namespace, rep: int) -> RepResult:
    tmp = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    server = EmbeddedNats(tmp / "nats", sync=args.sync)
    url = await server.start()
    addr = f"127.0.0.1:{free_port()}"
    pids: list[int] = []
    try:
        log = tmp / "relay.log"
        role = [sys.executable, THIS_FILE, "--loop", args.loop, "--addr", addr, "--role"]
        pids.append(spawn([*role, "relay", "--nats-url", url], log_path=log))
        await asyncio.to_thread(wait_for_log, log, "relay serving", pids[0], 30.0)
        pids.append(spawn([*role, "node"]))
        payload = b"x" * args.payload_bytes
        if args.warmup:
            await asyncio.wait_for(drive(addr, args.warmup, args.inflight, payload), args.timeout)
        groups = {"agent": [os.getpid()], "relay": [pids[0]], "node": [pids[1]]}
        meter = CpuMeter({**groups, "nats_server": [server.pid]})
        meter.start()
        t0 = time.perf_counter()
        with progress(args.tasks, f"bare_path rep {rep + 1}/{args.reps}") as bar:
            lat = await asyncio.wait_for(
                drive(addr, args.tasks, args.inflight, payload, bar), args.timeout
            )
        elapsed = time.perf_counter() - t0
        return RepResult(args.tasks, elapsed, lat, meter.stop())
    finally:
        for pid in reversed(pids):  # the node before the relay it is connected to
            stop_pid(pid)
        await server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role:
        relay = args.role == "relay"
        role = relay_main(args.nats_url, args.addr) if relay else node_main(args.addr)
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            runner.run(role)
        return
    reps, loop_name = run_async(each_rep(args, run_rep), args.loop)
    params = {
        **task_params(args),
        "loop": loop_name,
        "nats_server": nats_server_version(),
        "grpc_experiments": environment.experiments(),
    }
    emit_json(summarize("bare_path", params, reps))


if __name__ == "__main__":
    main()
