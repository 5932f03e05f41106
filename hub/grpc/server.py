"""The gRPC server: TaskService, NodeService, health and reflection, with token auth."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hub.grpc.node_service import NodeService
from hub.grpc.task_service import TaskService
from hub.nodes import Nodes
from hub.pool import Pool
from hub.v1 import nodes_pb2, nodes_pb2_grpc, tasks_pb2, tasks_pb2_grpc

__all__ = ("GrpcServer",)

log = logging.getLogger(__name__)

SERVICES = (
    tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    nodes_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name,
)
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class TokenAuth(grpc.aio.ServerInterceptor):
    """With a token set, every call but health and reflection needs ``authorization: Bearer``."""

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(OPEN_METHODS):
            return await continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        given_b = given.encode() if isinstance(given, str) else given
        if hmac.compare_digest(given_b, self.expected):
            return await continuation(details)
        handler = await continuation(details)
        return _deny(handler)


def _deny(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class GrpcServer:
    """Binds, serves, and on stop first reports NOT_SERVING so balancers move away."""

    def __init__(self, pool: Pool, nodes: Nodes, addr: str, token: str = "") -> None:
        interceptors = [TokenAuth(token)] if token else []
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.max_send_message_length", 16 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ],
        )
        tasks_pb2_grpc.add_TaskServiceServicer_to_server(TaskService(pool), self.server)
        nodes_pb2_grpc.add_NodeServiceServicer_to_server(NodeService(nodes), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.addr = addr
        self.port = 0

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(self.addr)
        if not self.port:
            raise OSError(f"cannot bind gRPC on {self.addr}")
        await self.server.start()
        for name in ("", *SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc listening addr=%s port=%d", self.addr, self.port)
        return self.port

    async def not_serving(self) -> None:
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace_s: float) -> None:
        await self.server.stop(grace_s)
