"""A shared token on internal RPCs (queryd → billingd's MeteringService).

Why: MeteringService verifies keys and books usage; anyone who can reach it could book
usage to someone else's key. Envoy does not route it, and on one host billingd listens on
loopback; across hosts, `KTAPE_INTERNAL_TOKEN` (the same value in queryd and billingd)
makes billingd refuse internal calls without it. `ktape up` sets a random one per run.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ktape.errors import PermissionDenied, abort_with

METADATA_KEY = "x-ktape-internal-token"


class InternalTokenClient(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the token to every unary call made on a channel."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Callable[..., Awaitable[Any]],
                                    client_call_details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
        metadata.add(METADATA_KEY, self._token)
        details = grpc.aio.ClientCallDetails(
            client_call_details.method, client_call_details.timeout, metadata,
            client_call_details.credentials, client_call_details.wait_for_ready)
        return await continuation(details, request)


class InternalTokenServer(grpc.aio.ServerInterceptor):
    """Refuses calls to methods under `prefix` without the token (PERMISSION_DENIED)."""

    def __init__(self, token: str, prefix: str) -> None:
        self._token = token.encode()
        self._prefix = prefix

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self._prefix):
            return handler
        presented = dict(handler_call_details.invocation_metadata or ()).get(METADATA_KEY, "")
        if hmac.compare_digest(str(presented).encode(), self._token):
            return handler

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await abort_with(context, PermissionDenied(
                "internal RPC without a valid internal token", reason="INTERNAL_TOKEN_INVALID"))

        return grpc.unary_unary_rpc_method_handler(
            refuse, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
