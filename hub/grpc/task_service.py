"""TaskService: the agent and operator API, each method a few lines over the pool and journal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc

from hub.errors import TaskExpired
from hub.grpc.convert import dead_to_pb, expired_task, record_to_pb, spec_from_pb
from hub.grpc.errors import grpc_errors, grpc_stream_errors, status_for
from hub.grpc.outbox import Outbox, messages
from hub.journal import BUFFERS
from hub.nats.errors import nats_errors
from hub.pool import Pool
from hub.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc
from hub.v1.tasks_pb2 import SubmitResponse

__all__ = ("TaskService",)

DEFAULT_WAIT_S = 60.0


def _refuse(ref: int, limit: int) -> tasks_pb2.SubmitReply:
    """More calls open on one stream than a replica holds for one caller: this one is refused
    (nothing is recorded); the caller may send it again once answers come back."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED.name
    message = f"more than {limit} submits open on this stream (HUB_MAX_STREAM_SUBMITS)"
    return tasks_pb2.SubmitReply(ref=ref, code=code, message=message)


def _bounded(wait_s: float, context: grpc.aio.ServicerContext) -> float:
    """A wait never outlasts the caller's own deadline (it would answer nobody)."""
    remaining = context.time_remaining()
    return wait_s if remaining is None else min(wait_s, max(remaining - 0.05, 0.0))


class TaskService(tasks_pb2_grpc.TaskServiceServicer):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.journal = pool.journal

    async def _task(self, task_id: str, include_output: bool) -> common_pb2.Task:
        try:
            record = await self.journal.get(task_id)
        except TaskExpired:
            return expired_task(task_id)
        if not include_output:
            return record_to_pb(record)
        stdout, thoughts = [(await self.journal.read_buffer(task_id, n))[0] for n in BUFFERS]
        return record_to_pb(record, stdout, thoughts)

    async def _submit(self, request: tasks_pb2.SubmitRequest, wait_s: float) -> SubmitResponse:
        record, created = await self.pool.submit(spec_from_pb(request))
        if wait_s > 0 and not record.terminal:
            try:
                record = await self.journal.wait(record.id, wait_s)
            except TaskExpired:
                task = expired_task(record.id)
                return SubmitResponse(task=task, created=created, done=True)
        return SubmitResponse(task=record_to_pb(record), created=created, done=record.terminal)

    @grpc_errors
    async def Submit(self, request, context):
        return await self._submit(request, _bounded(request.wait_s, context))

    async def SubmitStream(
        self,
        request_iterator: AsyncIterator[tasks_pb2.SubmitCalls],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[tasks_pb2.SubmitReplies]:
        """Each call runs as its own task; replies go out as they finish, batched by the
        outbox. The stream ends once the client closed its half and every call is answered;
        a cancelled stream cancels the calls still waiting. The client writes only once the
        stream is accepted (``hub.client.once_accepted``)."""
        await context.send_initial_metadata(())  # accepted: the client may write now
        outbox: Outbox[tasks_pb2.SubmitReply | None] = Outbox.of_messages()
        calls: set[asyncio.Task[None]] = set()
        limit = self.pool.settings.max_stream_submits

        async def answer(call: tasks_pb2.SubmitCall) -> None:
            try:
                response = await self._submit(call.request, call.request.wait_s)
            except Exception as exc:
                code, details = status_for(exc)
                outbox.put_nowait(
                    tasks_pb2.SubmitReply(ref=call.ref, code=code.name, message=details)
                )
            else:
                outbox.put_nowait(tasks_pb2.SubmitReply(ref=call.ref, response=response))

        async def read() -> None:
            try:
                async for batch in request_iterator:
                    for call in batch.calls:
                        if len(calls) >= limit:
                            outbox.put_nowait(_refuse(call.ref, limit))
                            continue
                        task = asyncio.ensure_future(answer(call))
                        calls.add(task)
                        task.add_done_callback(calls.discard)
                while calls:
                    await asyncio.wait(set(calls))
            finally:
                outbox.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                replies = await outbox.get_batch()
                if replies[0] is None:
                    return
                yield tasks_pb2.SubmitReplies(replies=messages(replies))
        finally:
            reader.cancel()
            for task in list(calls):
                task.cancel()
            await asyncio.gather(reader, *calls, return_exceptions=True)

    @grpc_errors
    async def Get(self, request, context):
        return await self._task(request.task_id, request.include_output)

    @grpc_errors
    async def Wait(self, request, context):
        try:
            record = await self.journal.wait(
                request.task_id, _bounded(request.timeout_s or DEFAULT_WAIT_S, context)
            )
        except TaskExpired:
            return tasks_pb2.WaitResponse(task=expired_task(request.task_id), done=True)
        task = await self._task(record.id, True) if request.include_output else record_to_pb(record)
        return tasks_pb2.WaitResponse(task=task, done=record.terminal)

    @grpc_stream_errors
    async def Watch(self, request, context) -> AsyncIterator[tasks_pb2.WatchEvent]:
        offsets = {"stdout": request.stdout_offset, "thoughts": request.thoughts_offset}
        async for event in self.journal.watch(request.task_id, offsets):
            if event.record is not None:
                yield tasks_pb2.WatchEvent(task=record_to_pb(event.record))
            else:
                chunk = tasks_pb2.OutputChunk(
                    stream=event.kind,
                    data=event.data,
                    offset=event.offset,
                    skipped=event.skipped,
                    attempt=event.attempt,
                )
                yield tasks_pb2.WatchEvent(output=chunk)

    @grpc_errors
    async def Cancel(self, request, context):
        _, after = await self.pool.cancel(request.task_id)
        return record_to_pb(after)

    @grpc_errors
    async def Pool(self, request, context):
        c = await self.pool.counts()
        return tasks_pb2.PoolCounts(
            queued=c.queued, oldest_age_s=c.oldest_age_s, in_flight=c.in_flight, dead=c.dead
        )

    @grpc_errors
    async def ListNodes(self, request, context):
        with nats_errors("list nodes"):
            entries = await self.pool.topology.presences(self.pool.queue.requests)
        nodes = [tasks_pb2.NodeInfo(**json.loads(e.value or b"{}")) for e in entries]
        nodes.sort(key=lambda n: n.node_id)
        return tasks_pb2.ListNodesResponse(nodes=nodes)

    @grpc_errors
    async def ListDead(self, request, context):
        letters = await self.pool.dead_letters(request.limit or 1000)
        return tasks_pb2.ListDeadResponse(tasks=[dead_to_pb(d) for d in letters])

    @grpc_errors
    async def Replay(self, request, context):
        return record_to_pb(await self.pool.replay(request.task_id))

    @grpc_errors
    async def PurgeDead(self, request, context):
        return tasks_pb2.PurgeDeadResponse(purged=await self.pool.purge_dead(request.task_id))
