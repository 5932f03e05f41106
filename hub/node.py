"""Node SDK: attach to a hub, claim work it can run, run handlers, report results.

A handler is ``async def handler(ctx: TaskContext) -> bytes | str | object``. Returning is
success; raising ``Fail(..., retry=False)`` fails the task for good; any other exception is a
failed attempt that the hub retries with backoff. ``ctx.cancelled`` is set when the hub says
stop (cancelled, or this attempt was fenced); the handler's task is also cancelled.

The node reconnects with backoff (to the next address, if it has several) and re-attaches the
tasks it is still running; results not yet confirmed by the hub are sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from hub.buffers import HeadTail, Unwritten
from hub.client import channel_options, once_accepted
from hub.grpc.convert import buffer_to_pb
from hub.grpc.outbox import Outbox, unbatch
from hub.v1 import nodes_pb2 as pb
from hub.v1 import nodes_pb2_grpc

__all__ = ("Fail", "Handler", "Node", "TaskContext")

log = logging.getLogger(__name__)

OUTPUT_BATCH_S = 0.05
OUTPUT_BATCH_BYTES = 256 * 1024
#: Bytes a node lets queue for its stream (while it reconnects, or when the replica reads
#: slower than handlers write). Past it, output is not queued but held per task as a head+tail
#: view (bounded) until the queue drains: the node's memory stays bounded and the journal
#: exact, since it keeps only head+tail anyway.
OUTBOX_LIMIT_BYTES = 4 * 1024 * 1024

_NO_LIMIT = contextlib.nullcontext()

#: How long a node leaving a draining replica waits for it to close the stream.
PART_TIMEOUT_S = 5.0


class Fail(Exception):
    """Raise from a handler to fail the task; ``retry=False`` means re-running cannot help."""

    def __init__(self, error: str, *, retry: bool = False, result: bytes = b"") -> None:
        super().__init__(error)
        self.error, self.retry, self.result = error, retry, result


@dataclass
class TaskContext:
    task_id: str
    kind: str
    payload: bytes
    attempt: int
    timeout_s: float
    _emit: Callable[[pb.NodeMessage], None]
    _limits: tuple[int, int] = (0, 0)
    _congested: Callable[[], bool] = lambda: False
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    #: The same head+tail the hub keeps, sent with the result so the journal ends up exact
    #: even if output messages were lost with a replica.
    output: dict[str, HeadTail] = field(default_factory=dict)
    _unsent: dict[str, Unwritten] = field(default_factory=dict)
    _flush: asyncio.TimerHandle | None = None

    def json(self) -> Any:
        return json.loads(self.payload or b"null")

    def _output(self, stream: str, data: bytes | str) -> None:
        """Output is sent in batches (one message per stream every OUTPUT_BATCH_S, or sooner
        past OUTPUT_BATCH_BYTES): a chatty handler costs few messages, and heartbeats and
        results never queue behind thousands of tiny chunks. What waits past the hub's
        head+tail (plus slack) is folded into a head+tail view, as the replica would fold it."""
        if isinstance(data, str):
            data = data.encode()
        if not data:
            return
        kept = self.output.get(stream, HeadTail(attempt=self.attempt))
        self.output[stream] = kept.append(data, *self._limits)
        unsent = self._unsent.setdefault(stream, Unwritten(self.attempt))
        if self._limits != (0, 0):
            unsent.add(data, *self._limits)
        else:  # (not welcomed yet: no limits to fold to)
            unsent.data += data
        if len(unsent.data) >= OUTPUT_BATCH_BYTES:
            self.send_output()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(OUTPUT_BATCH_S, self.send_output)

    def send_output(self, *, final: bool = False, discard: bool = False) -> None:
        """Send what is batched, unless the stream is congested (then try again later, the
        output held as a bounded view); ``final`` sends it anyway, before the result, so
        output always precedes it; ``discard`` drops it (the hub took the task away)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not (final or discard) and self._congested():
            self._flush = asyncio.get_running_loop().call_later(OUTPUT_BATCH_S, self.send_output)
            return
        for stream, unsent in self._unsent.items():
            if unsent and not discard:
                out = pb.Output(task_id=self.task_id, attempt=self.attempt, stream=stream)
                if unsent.folded is None:
                    out.data = bytes(unsent.data)
                else:
                    view = unsent.view(*self._limits)
                    out.data, out.dropped, out.tail = view.head, view.dropped, view.tail
                self._emit(pb.NodeMessage(output=out))
        self._unsent.clear()

    def thought(self, text: bytes | str) -> None:
        self._output("thoughts", text)

    def stdout(self, data: bytes | str) -> None:
        self._output("stdout", data)


Handler = Callable[[TaskContext], Awaitable[Any]]


def _encode_result(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


class Node:
    def __init__(
        self,
        addrs: str | Sequence[str],
        node_id: str,
        *,
        slots: int = 1,
        capabilities: Sequence[str] = (),
        token: str = "",
        handlers: dict[str, Handler] | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.addrs = [addrs] if isinstance(addrs, str) else list(addrs)
        self.node_id, self.slots = node_id, slots
        self.capabilities = sorted(capabilities)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.max_backoff_s = max_backoff_s
        self.running: dict[str, tuple[TaskContext, asyncio.Task[None]]] = {}
        self.unconfirmed: dict[int, pb.NodeMessage] = {}
        self._sent: set[int] = set()  # refs of unconfirmed messages handed to a stream
        self.connected = asyncio.Event()
        self.completed = 0
        self._refs = itertools.count(1)
        # NodeMessages, and the object that ends one session's requests (see _session).
        self._outbox: Outbox[pb.NodeMessage | object] = Outbox(
            is_marker=lambda m: not isinstance(m, pb.NodeMessage),
            size=lambda m: m.ByteSize() if isinstance(m, pb.NodeMessage) else 0,
        )
        self._stopping = False
        self.replica_id = ""
        self.limits = (0, 0)  # the hub's journal head and tail bytes, from its welcome

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.handlers[kind] = fn
            return fn

        return register

    @property
    def free(self) -> int:
        return max(self.slots - len(self.running), 0)

    def _send(self, message: pb.NodeMessage) -> None:
        self._outbox.put_nowait(message)

    async def run(self) -> None:
        """Stay attached until stop(): reconnect with jittered backoff after any failure."""
        backoff = 0.1
        for addr in itertools.cycle(self.addrs):
            if self._stopping:
                return
            try:
                await self._session(addr)
                backoff = 0.1
            except grpc.aio.AioRpcError as exc:
                log.info("node %s: stream to %s ended: %s", self.node_id, addr, exc.code().name)
            finally:
                self.connected.clear()
            if self._stopping:
                return
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _session(self, addr: str) -> None:
        async with grpc.aio.insecure_channel(addr, options=channel_options()) as channel:
            stub = nodes_pb2_grpc.NodeServiceStub(channel)
            end = object()
            requests = once_accepted(lambda: call, self._requests(end))
            call = stub.Connect(requests, metadata=self.metadata)
            heartbeat: asyncio.Task[None] | None = None
            try:
                async for received in call:
                    for message in unbatch(received):
                        kind = message.WhichOneof("msg")
                        if kind == "welcome":
                            heartbeat = asyncio.create_task(self._heartbeats(message.welcome))
                            self._welcomed(message.welcome)
                        elif kind == "drain":
                            log.info("node %s: drain: %s", self.node_id, message.drain.reason)
                            await self._part(call, end)
                            return
                        else:
                            self._on(message)
            finally:
                if heartbeat is not None:
                    heartbeat.cancel()
                call.cancel()

    async def _part(self, call: Any, end: object) -> None:
        """Leave a draining replica cleanly: close our half of the stream after what is already
        queued (output written before the drain must reach it, not be cut off in flight), and
        read its answers until it closes its half (bounded)."""
        self._outbox.put_nowait(end)
        with contextlib.suppress(TimeoutError, grpc.aio.AioRpcError):
            async with asyncio.timeout(PART_TIMEOUT_S):
                async for received in call:
                    for message in unbatch(received):
                        self._on(message)

    async def _requests(self, end: object) -> AsyncIterator[pb.NodeMessage]:
        running = [pb.TaskRef(task_id=t, attempt=c.attempt) for t, (c, _) in self.running.items()]
        hello = pb.Hello(
            node_id=self.node_id,
            capabilities=self.capabilities,
            slots=self.slots,
            running=running,
            kinds=sorted(self.handlers),
        )
        yield pb.NodeMessage(hello=hello)
        # Only what went out on a stream that broke is sent again first; what is still queued
        # goes in its turn, after the output queued before it (a result ahead of its own output
        # would let that output land on top of the head+tail the result settles).
        for ref, message in list(self.unconfirmed.items()):
            if ref in self._sent:
                yield message
        while True:
            batch = await self._outbox.get_batch()
            if batch[0] is end:
                return  # half-close: the replica reads to here, then ends the stream
            messages = [m for m in batch if isinstance(m, pb.NodeMessage)]
            # (none: the end of an earlier session that broke before reaching it; skip it)
            for message in messages:
                if message.ref in self.unconfirmed:
                    self._sent.add(message.ref)
            if len(messages) == 1:
                yield messages[0]
            elif messages:
                yield pb.NodeMessage(batch=pb.NodeBatch(messages=messages))

    def _welcomed(self, welcome: pb.Welcome) -> None:
        self.replica_id = welcome.replica_id
        self.limits = (welcome.journal_head_bytes, welcome.journal_tail_bytes)
        for ref in welcome.lost:
            self._stop_task(ref.task_id, "the hub no longer gives this node the task")
        self.connected.set()
        log.info(
            "node %s attached to %s kept=%d lost=%d",
            self.node_id,
            welcome.replica_id,
            len(welcome.kept),
            len(welcome.lost),
        )

    async def _heartbeats(self, welcome: pb.Welcome) -> None:
        while True:
            await asyncio.sleep(welcome.heartbeat_s)
            refs = [pb.TaskRef(task_id=t, attempt=c.attempt) for t, (c, _) in self.running.items()]
            beat = pb.Heartbeat(running=refs, free_slots=self.free)
            self._send(pb.NodeMessage(heartbeat=beat))

    def _on(self, message: pb.HubMessage) -> None:
        kind = message.WhichOneof("msg")
        if kind == "offer":
            offer = message.offer
            if self._stopping or self.free <= 0 or offer.kind not in self.handlers:
                self._send(pb.NodeMessage(decline=pb.Decline(task_id=offer.task_id)))
            else:
                self._send(pb.NodeMessage(claim=pb.Claim(task_id=offer.task_id)))
        elif kind == "grant":
            if self._stopping:  # a direct grant that crossed our stop: give it straight back
                grant = message.grant
                ref = next(self._refs)
                hand = pb.HandBack(task_id=grant.task_id, attempt=grant.attempt, reason="stopping")
                self.unconfirmed[ref] = pb.NodeMessage(ref=ref, hand_back=hand)
                self._send(self.unconfirmed[ref])
            else:
                self._start(message.grant)
        elif kind == "cancel":
            self._stop_task(message.cancel.task_id, message.cancel.reason)
        elif kind == "done":
            self.unconfirmed.pop(message.done.ref, None)
            self._sent.discard(message.done.ref)
        elif kind == "refused":
            r = message.refused
            self.unconfirmed.pop(r.ref, None)
            self._sent.discard(r.ref)
            log.warning("node %s: hub refused %s: %s", self.node_id, r.task_id, r.message)
        elif kind == "deny":
            log.debug("node %s: claim denied %s", self.node_id, message.deny.reason)

    def _start(self, grant: pb.Grant) -> None:
        ctx = TaskContext(
            task_id=grant.task_id,
            kind=grant.kind,
            payload=grant.payload,
            attempt=grant.attempt,
            timeout_s=grant.timeout_s,
            _emit=self._send,
            _limits=self.limits,
            _congested=lambda: self._outbox.queued_bytes > OUTBOX_LIMIT_BYTES,
        )
        task = asyncio.create_task(self._execute(ctx))
        self.running[grant.task_id] = (ctx, task)

    def _stop_task(self, task_id: str, reason: str) -> None:
        entry = self.running.pop(task_id, None)
        if entry is not None:
            ctx, task = entry
            log.info("node %s: stopping task=%s: %s", self.node_id, task_id, reason)
            ctx.cancelled.set()
            task.cancel()

    async def _execute(self, ctx: TaskContext) -> None:
        result = pb.Result(task_id=ctx.task_id, attempt=ctx.attempt)
        try:
            # (no asyncio.timeout(None) without a timeout: even that costs 5 us a task)
            async with asyncio.timeout(ctx.timeout_s) if ctx.timeout_s else _NO_LIMIT:
                value = await self.handlers[ctx.kind](ctx)
            result.ok, result.result = True, _encode_result(value)
        except asyncio.CancelledError:
            if ctx.cancelled.is_set():
                ctx.send_output(discard=True)
                return  # the hub said stop: nothing to report
            raise
        except Fail as exc:
            result.ok, result.error, result.retry = False, exc.error, exc.retry
            result.result = exc.result
        except TimeoutError:
            result.ok, result.error, result.retry = (
                False,
                f"timed out after {ctx.timeout_s} s",
                True,
            )
        except Exception as exc:
            result.ok, result.error, result.retry = False, f"{type(exc).__name__}: {exc}", True
        if self.running.pop(ctx.task_id, None) is None:
            return
        ctx.send_output(final=True)
        if self.limits != (0, 0):
            for name, kept in ctx.output.items():
                getattr(result, name).CopyFrom(buffer_to_pb(kept))
        ref = next(self._refs)
        message = pb.NodeMessage(ref=ref, result=result)
        self.unconfirmed[ref] = message
        self.completed += 1
        self._send(message)

    async def stop(self, *, hand_back: bool = True) -> None:
        """Stop claiming; hand running tasks back (or let them finish), then detach."""
        self._stopping = True
        if hand_back:
            for task_id, (ctx, task) in list(self.running.items()):
                ctx.cancelled.set()
                task.cancel()
                ref = next(self._refs)
                hand = pb.HandBack(task_id=task_id, attempt=ctx.attempt, reason="node stopping")
                message = pb.NodeMessage(ref=ref, hand_back=hand)
                self.unconfirmed[ref] = message
                self._send(message)
            self.running.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                while self.unconfirmed or self.running:  # noqa: ASYNC110 (bounded, local state)
                    await asyncio.sleep(0.02)
