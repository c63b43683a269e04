"""Prometheus metrics of a gRPC service (queryd, billingd): calls, codes, latency, streams.

Why an interceptor: one place times every RPC and records its final code (including
calls refused by metering, which never reach a handler), without touching handlers.
Each service exposes its registry over HTTP on its own metrics address; Envoy serves
them at /metrics/queryd and /metrics/billingd (ingestd's stay at /metrics).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ktape.config import HostPort

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ServiceMetrics(grpc.aio.ServerInterceptor):
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(f"{service}_rpc_total", "RPCs by method and final gRPC code",
                             ["method", "code"], registry=self.registry)
        self.latency = Histogram(f"{service}_rpc_seconds", "Unary RPC latency by method",
                                 ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.streams = Gauge(f"{service}_streams_open", "Server streams open now",
                             ["method"], registry=self.registry)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                began = time.perf_counter()
                try:
                    return await inner(request, context)
                finally:
                    self.latency.labels(method).observe(time.perf_counter() - began)
                    self.calls.labels(method, _code(context)).inc()

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                gauge = self.streams.labels(method)
                gauge.inc()
                try:
                    async for item in inner_stream(request, context):
                        yield item
                finally:
                    gauge.dec()
                    self.calls.labels(method, _code(context)).inc()

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler

    def serve(self, addr: HostPort) -> Any:
        """Serve /metrics (text format) on `addr` from a thread; returns the server
        (call `.shutdown()` to stop)."""
        server, _thread = start_http_server(addr.port, addr=addr.host, registry=self.registry)
        return server


def _code(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)
