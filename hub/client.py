"""Agent SDK: submit work and follow it, over gRPC, from any replica."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from hub.errors import HubError
from hub.grpc.convert import priority_to_pb
from hub.grpc.outbox import Outbox, messages
from hub.model import Priority, new_task_id
from hub.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc

__all__ = ("Client", "ClientError")

#: Pauses before submitting again on a new stream after the stream broke (then give up).
SUBMIT_RETRY_DELAYS_S = (0.05, 0.2, 0.5)


class ClientError(HubError):
    """Raised when the hub answers a call with an error status; ``code`` is its name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ]


_M = TypeVar("_M")

#: How long a stream waits for the replica to accept it before writing anyway (a replica older
#: than this protocol sends no initial metadata until its first reply).
ACCEPT_WAIT_S = 2.0


async def once_accepted(
    call: Callable[[], grpc.aio.Call], messages: AsyncIterator[_M]
) -> AsyncIterator[_M]:
    """A streaming call's ``messages``, sent only once the server accepted the call (its
    initial metadata came); none if it refused (the call ended) instead.

    A write still in flight when the server refuses (a wrong token) fails, and grpcio then
    replaces the server's status with ``INTERNAL`` (grpc/grpc#36066): a caller would see
    "Internal error from Core" instead of ``UNAUTHENTICATED``.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(ACCEPT_WAIT_S):
            await call().initial_metadata()
    if call().done():
        return
    async for message in messages:
        yield message


def _no_answer(future: asyncio.Future[tasks_pb2.SubmitResponse]) -> None:
    if not future.done():
        future.set_exception(ClientError("DEADLINE_EXCEEDED", "no answer to submit in time"))


class _SubmitStream:
    """One SubmitStream call shared by every ``submit()`` of a client.

    A unary call costs the replica about as much CPU as everything else it does for a task, so
    concurrent submits share one stream instead: each is a SubmitCall with its own ref, and
    calls queued while the stream was writing go out as one message (the reverse for replies).
    When the stream ends, every call still open fails with its status.
    """

    def __init__(self, stub: tasks_pb2_grpc.TaskServiceStub, metadata: tuple) -> None:
        self.pending: dict[int, asyncio.Future[tasks_pb2.SubmitResponse]] = {}
        self.outbox: Outbox[tasks_pb2.SubmitCall | None] = Outbox.of_messages()
        self.refs = itertools.count(1)
        self.closed = False
        calls = once_accepted(lambda: self.call, self._calls())
        self.call = stub.SubmitStream(calls, metadata=metadata)
        self.reader = asyncio.ensure_future(self._read())

    async def submit(
        self, request: tasks_pb2.SubmitRequest, timeout_s: float
    ) -> tasks_pb2.SubmitResponse:
        ref = next(self.refs)
        loop = asyncio.get_running_loop()
        future = self.pending[ref] = loop.create_future()
        self.outbox.put_nowait(tasks_pb2.SubmitCall(ref=ref, request=request))
        # (a timer on the future, not asyncio.timeout: a quarter of its cost, per submit)
        timer = loop.call_later(max(timeout_s, 0.0), _no_answer, future)
        try:
            return await future
        finally:
            timer.cancel()
            self.pending.pop(ref, None)

    async def _calls(self) -> AsyncIterator[tasks_pb2.SubmitCalls]:
        while True:
            calls = await self.outbox.get_batch()
            if calls[0] is None:
                return
            yield tasks_pb2.SubmitCalls(calls=messages(calls))

    async def _read(self) -> None:
        error = ClientError("UNAVAILABLE", "the submit stream ended")
        try:
            async for batch in self.call:
                for reply in batch.replies:
                    future = self.pending.get(reply.ref)
                    if future is None or future.done():
                        continue
                    if reply.code:
                        future.set_exception(ClientError(reply.code, reply.message))
                    else:
                        future.set_result(reply.response)
        except grpc.aio.AioRpcError as exc:
            error = ClientError(exc.code().name, exc.details() or "")
        finally:
            self.closed = True
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(error)

    async def close(self) -> None:
        self.closed = True
        self.outbox.put_nowait(None)
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


class Client:
    def __init__(self, addr: str, *, token: str = "", timeout_s: float = 30.0) -> None:
        self.addr, self.timeout_s = addr, timeout_s
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.channel = grpc.aio.insecure_channel(addr, options=channel_options())
        self.stub = tasks_pb2_grpc.TaskServiceStub(self.channel)
        self._submits: _SubmitStream | None = None

    async def _call(self, method: str, request: object, timeout_s: float | None = None) -> Any:
        try:
            return await getattr(self.stub, method)(
                request, timeout=timeout_s or self.timeout_s, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise ClientError(exc.code().name, exc.details() or "") from None

    async def submit(
        self,
        kind: str,
        payload: bytes = b"",
        *,
        priority: Priority | str = Priority.NORMAL,
        node: str = "",
        require: Iterable[str] = (),
        task_id: str = "",
        max_attempts: int = 0,
        timeout_s: float = 0.0,
        wait_s: float = 0.0,
    ) -> tasks_pb2.SubmitResponse:
        """Submit a task; with ``wait_s`` the answer comes once it is terminal (``done``) or
        after ``wait_s``, in one call."""
        request = tasks_pb2.SubmitRequest(
            task_id=task_id,
            kind=kind,
            payload=payload,
            priority=priority_to_pb(Priority.parse(priority)),
            route=common_pb2.Route(node_id=node, capabilities=sorted(require)),
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            wait_s=wait_s,
        )
        return await self._submit_with_retry(request, self.timeout_s + wait_s)

    async def _submit_with_retry(
        self, request: tasks_pb2.SubmitRequest, timeout_s: float
    ) -> tasks_pb2.SubmitResponse:
        """Over the shared stream; when the stream breaks (a replica restarting), submit again
        on a new one: safe, because the task id is fixed before the first try."""
        if not request.task_id:
            request.task_id = new_task_id()
        deadline = time.monotonic() + timeout_s
        for delay in SUBMIT_RETRY_DELAYS_S:
            try:
                return await self._stream().submit(request, deadline - time.monotonic())
            except ClientError as exc:
                if exc.code != "UNAVAILABLE" or time.monotonic() + delay >= deadline:
                    raise
            await asyncio.sleep(delay)
        return await self._stream().submit(request, deadline - time.monotonic())

    def _stream(self) -> _SubmitStream:
        if self._submits is None or self._submits.closed:
            self._submits = _SubmitStream(self.stub, self.metadata)
        return self._submits

    async def get(self, task_id: str, *, include_output: bool = False) -> common_pb2.Task:
        request = tasks_pb2.GetRequest(task_id=task_id, include_output=include_output)
        return await self._call("Get", request)

    async def wait(
        self, task_id: str, timeout_s: float = 60.0, *, include_output: bool = False
    ) -> tasks_pb2.WaitResponse:
        request = tasks_pb2.WaitRequest(
            task_id=task_id, timeout_s=timeout_s, include_output=include_output
        )
        return await self._call("Wait", request, timeout_s + 10)

    async def watch(
        self, task_id: str, *, stdout_offset: int = 0, thoughts_offset: int = 0
    ) -> AsyncIterator[tasks_pb2.WatchEvent]:
        request = tasks_pb2.WatchRequest(
            task_id=task_id, stdout_offset=stdout_offset, thoughts_offset=thoughts_offset
        )
        call = self.stub.Watch(request, metadata=self.metadata)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise ClientError(exc.code().name, exc.details() or "") from None
        finally:
            call.cancel()

    async def cancel(self, task_id: str) -> common_pb2.Task:
        return await self._call("Cancel", tasks_pb2.CancelRequest(task_id=task_id))

    async def pool(self) -> tasks_pb2.PoolCounts:
        return await self._call("Pool", tasks_pb2.PoolRequest())

    async def nodes(self) -> tasks_pb2.ListNodesResponse:
        return await self._call("ListNodes", tasks_pb2.ListNodesRequest())

    async def dead(self, limit: int = 1000) -> tasks_pb2.ListDeadResponse:
        return await self._call("ListDead", tasks_pb2.ListDeadRequest(limit=limit))

    async def replay(self, task_id: str) -> common_pb2.Task:
        return await self._call("Replay", tasks_pb2.ReplayRequest(task_id=task_id))

    async def purge_dead(self, task_id: str = "") -> int:
        response = await self._call("PurgeDead", tasks_pb2.PurgeDeadRequest(task_id=task_id))
        return response.purged

    async def close(self) -> None:
        if self._submits is not None:
            await self._submits.close()
        await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
