"""NodeService.Connect: the node protocol, translated onto ``hub.nodes`` and the pool.

One bidirectional stream per node. Messages are handled as they arrive; those that wait on
NATS run as their own tasks so one slow claim does not hold up the node's other tasks, except
output, which is queued synchronously so that it is always written before the task's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable

import grpc

from hub.buffers import HeadTail
from hub.errors import HubError, InvalidTask
from hub.grpc.convert import buffer_from_pb, priority_to_pb
from hub.grpc.errors import code_for
from hub.grpc.outbox import Outbox, messages, unbatch
from hub.model import Route, validate_node_id
from hub.nodes import Nodes, NodeSession, Notice
from hub.pool import Grant
from hub.v1 import nodes_pb2 as pb
from hub.v1 import nodes_pb2_grpc

__all__ = ("NodeService",)

log = logging.getLogger(__name__)

_Outbox = Outbox[pb.HubMessage | None]  # None: end the stream

HELLO_TIMEOUT_S = 10.0
DRAIN_READ_S = 2.0


def _refs(refs: list[tuple[str, int]]) -> list[pb.TaskRef]:
    return [pb.TaskRef(task_id=t, attempt=a) for t, a in refs]


def _notice_to_pb(notice: Notice) -> pb.HubMessage:
    if notice.kind == "offer":
        d = notice.delivery
        assert d is not None
        offer = pb.Offer(
            task_id=d.task_id,
            kind=d.kind,
            priority=priority_to_pb(d.priority),
            payload_bytes=len(d.payload),
        )
        return pb.HubMessage(offer=offer)
    if notice.kind == "grant":
        assert notice.grant is not None
        return pb.HubMessage(grant=_grant_to_pb(notice.grant))
    if notice.kind == "cancel":
        cancel = pb.Cancel(task_id=notice.task_id, attempt=notice.attempt, reason=notice.reason)
        return pb.HubMessage(cancel=cancel)
    return pb.HubMessage(drain=pb.Drain(reason=notice.reason))


class NodeService(nodes_pb2_grpc.NodeServiceServicer):
    def __init__(self, nodes: Nodes) -> None:
        self.nodes = nodes

    async def Connect(
        self,
        request_iterator: AsyncIterator[pb.NodeMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.HubMessage]:
        await context.send_initial_metadata(())  # accepted: the node may send its hello
        outbox: _Outbox = Outbox.of_messages()
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                first = await anext(aiter(request_iterator))
        except (TimeoutError, StopAsyncIteration):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "send hello first")
        if first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "first message must be hello")
        hello = first.hello
        try:
            validate_node_id(hello.node_id)
            if not 1 <= hello.slots <= self.nodes.settings.max_slots_per_node:
                raise InvalidTask(
                    f"slots must be 1..{self.nodes.settings.max_slots_per_node}, not {hello.slots}"
                )
            caps = Route(capabilities=frozenset(hello.capabilities)).capabilities  # validates
        except HubError as exc:
            await context.abort(code_for(exc), str(exc))
        if self.nodes.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica is shutting down")

        def send(notice: Notice) -> None:
            outbox.put_nowait(_notice_to_pb(notice))
            if notice.kind == "drain":
                outbox.put_nowait(None)

        session = NodeSession(hello.node_id, caps, hello.slots, send, kinds=frozenset(hello.kinds))
        kept, lost = await self.nodes.attach(
            session, [(r.task_id, r.attempt) for r in hello.running]
        )
        s = self.nodes.settings
        yield pb.HubMessage(
            welcome=pb.Welcome(
                replica_id=self.nodes.replica_id,
                heartbeat_s=s.heartbeat_s,
                lease_s=s.ack_wait_s,
                kept=_refs(kept),
                lost=_refs(lost),
                journal_head_bytes=s.journal_head_bytes,
                journal_tail_bytes=s.journal_tail_bytes,
            )
        )
        reader = asyncio.create_task(self._read(session, request_iterator, outbox))
        try:
            while True:
                batch = await outbox.get_batch()
                if batch[0] is None:
                    # A drain (or the node closed its half): first read what the node sent
                    # before it saw the drain, so output in flight lands (bounded; a node
                    # that answers the drain closes its half at once).
                    await asyncio.wait({reader}, timeout=DRAIN_READ_S)
                    return
                if len(batch) == 1:
                    yield batch[0]
                else:
                    yield pb.HubMessage(batch=pb.HubBatch(messages=messages(batch)))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.nodes.detach(session)

    async def _read(
        self,
        session: NodeSession,
        requests: AsyncIterator[pb.NodeMessage],
        outbox: _Outbox,
    ) -> None:
        try:
            async for message in requests:
                for inner in unbatch(message):
                    self._handle(session, inner, outbox)
        except Exception as exc:
            log.info("node stream broke node=%s: %s", session.node, exc)
        finally:
            outbox.put_nowait(None)

    def _handle(
        self,
        session: NodeSession,
        message: pb.NodeMessage,
        outbox: _Outbox,
    ) -> None:
        kind = message.WhichOneof("msg")
        ref = message.ref
        if kind == "output":
            out = message.output
            data: bytes | HeadTail = out.data
            if out.dropped or out.tail:
                total = len(out.data) + out.dropped + len(out.tail)
                data = HeadTail(out.data, out.tail, total, out.attempt)
            try:
                self.nodes.pool.journal.append(out.task_id, out.stream, out.attempt, data)
            except HubError as exc:
                outbox.put_nowait(_refused(ref, out.task_id, exc))
            return
        handlers = {
            "claim": self._claim,
            "decline": self._decline,
            "heartbeat": self._heartbeat,
            "result": self._result,
            "hand_back": self._hand_back,
        }
        handler = handlers.get(kind or "")
        if handler is None:
            unexpected = InvalidTask(f"unexpected message {kind!r} on an attached stream")
            outbox.put_nowait(_refused(ref, "", unexpected))
            return
        self.nodes.spawn(handler(session, message, outbox))

    async def _claim(self, session: NodeSession, message: pb.NodeMessage, outbox: _Outbox) -> None:
        task_id = message.claim.task_id
        try:
            outcome = await self.nodes.claim(session, task_id)
        except HubError as exc:
            outcome = str(exc)
        if isinstance(outcome, Grant):
            outbox.put_nowait(pb.HubMessage(grant=_grant_to_pb(outcome)))
        else:
            outbox.put_nowait(pb.HubMessage(deny=pb.Deny(task_id=task_id, reason=outcome)))

    async def _decline(
        self, session: NodeSession, message: pb.NodeMessage, outbox: _Outbox
    ) -> None:
        await self.nodes.decline(session, message.decline.task_id)

    async def _heartbeat(
        self, session: NodeSession, message: pb.NodeMessage, outbox: _Outbox
    ) -> None:
        hb = message.heartbeat
        session.reported_free = hb.free_slots
        stop = await self.nodes.heartbeat(session, [(r.task_id, r.attempt) for r in hb.running])
        for task_id, attempt, reason in stop:
            cancel = pb.Cancel(task_id=task_id, attempt=attempt, reason=reason)
            outbox.put_nowait(pb.HubMessage(cancel=cancel))

    async def _result(self, session: NodeSession, message: pb.NodeMessage, outbox: _Outbox) -> None:
        r = message.result
        await self._confirm(session, message.ref, r.task_id, outbox, self._finish(session, r))

    async def _finish(self, session: NodeSession, r: pb.Result) -> None:
        s, pool = self.nodes.settings, self.nodes.pool
        outputs = {
            name: buffer_from_pb(getattr(r, name), r.attempt, s)
            for name in ("stdout", "thoughts")
            if r.HasField(name) and getattr(r, name).total_bytes
        }
        if r.ok:
            await pool.complete(r.task_id, r.attempt, r.result, session.node, outputs)
        else:
            await pool.fail(
                r.task_id, r.attempt, r.error, retry=r.retry, node=session.node, outputs=outputs
            )

    async def _hand_back(
        self, session: NodeSession, message: pb.NodeMessage, outbox: _Outbox
    ) -> None:
        h = message.hand_back
        release = self.nodes.pool.release(
            h.task_id, h.attempt, reason=h.reason or "handed back", counts=False, node=session.node
        )
        await self._confirm(session, message.ref, h.task_id, outbox, release)

    async def _confirm(
        self,
        session: NodeSession,
        ref: int,
        task_id: str,
        outbox: _Outbox,
        step: Awaitable[object],
    ) -> None:
        """Run a task's last step for its node, answer Done or Refused by ``ref``, and free the
        node's slot either way."""
        try:
            await step
        except HubError as exc:
            outbox.put_nowait(_refused(ref, task_id, exc))
        else:
            outbox.put_nowait(pb.HubMessage(done=pb.Done(ref=ref, task_id=task_id)))
        finally:
            self.nodes.finished(session, task_id)


def _grant_to_pb(grant: Grant) -> pb.Grant:
    r = grant.record
    return pb.Grant(
        task_id=r.id,
        kind=r.kind,
        payload=grant.payload,
        attempt=r.attempt,
        lease_deadline=r.lease_deadline,
        timeout_s=r.timeout_s,
        priority=priority_to_pb(r.priority),
    )


def _refused(ref: int, task_id: str, exc: HubError) -> pb.HubMessage:
    refused = pb.Refused(ref=ref, task_id=task_id, code=code_for(exc).name, message=str(exc))
    return pb.HubMessage(refused=refused)
