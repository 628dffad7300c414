"""What the gRPC gateways share (Webex Contact Center, RingCX): one client-streaming method.

A contact-centre platform opens one gRPC stream per conversation and streams messages; the
gateway reads them as raw bytes (its subclass parses them, so that a malformed or oversized
message becomes a protocol error of that call, with a summary) and ends the stream with a
gRPC status. :class:`GrpcGateway` owns the server (TLS, ``SO_REUSEPORT`` with several ingest
processes, a hard cap on message size), the per-address rate of new streams, the drain, the
``nes2net_<gateway>_streams_total{code}`` counter, and the frame of one stream: refuse or
authenticate, run the call, map its end to a status.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import Counter
from pydantic import Field

from nes2net_gateways._auth import server_tls_context
from nes2net_gateways._common import StopCall, discard_events, metrics_registry, run_call
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig
from nes2net_stream.service.auth import is_loopback
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd
from nes2net_stream.service.ratelimit import KeyedBuckets

#: bytes a message may hold besides its audio (ids, names, timestamps, maps)
ENVELOPE = 4096
#: gRPC health checking's HealthCheckResponse (field 1, status): SERVING, NOT_SERVING
SERVING, NOT_SERVING = b"\x08\x01", b"\x08\x02"
#: protocol error code -> the gRPC status a stream ends with (others: INTERNAL)
STATUS = {
    "unsupported_format": grpc.StatusCode.INVALID_ARGUMENT,
    "bad_audio_frame": grpc.StatusCode.INVALID_ARGUMENT,
    "bad_message": grpc.StatusCode.INVALID_ARGUMENT,
    "audio_before_start": grpc.StatusCode.INVALID_ARGUMENT,
    "frame_too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "duplicate_call_id": grpc.StatusCode.ALREADY_EXISTS,
    "too_many_calls": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "call_too_long": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "shutting_down": grpc.StatusCode.UNAVAILABLE,
    "start_timeout": grpc.StatusCode.DEADLINE_EXCEEDED,  # the call ends as `timeout`
    "idle_timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "unauthorized": grpc.StatusCode.PERMISSION_DENIED,  # a stream refused after its start
}


class GrpcGatewayConfig(GatewayConfig):
    """Settings of every gRPC gateway."""

    tls_cert: str = ""
    tls_key: str = ""
    max_streams_per_s: float = Field(50.0, gt=0.0)


def parse_message(cls: Any, raw: bytes) -> Any:
    """A protobuf message of ``cls`` from its bytes (ProtocolError ``bad_message`` if not)."""
    try:
        return cls.FromString(raw)
    except DecodeError:
        raise ProtocolError("bad_message", f"not a {cls.DESCRIPTOR.name}") from None


def peer_address(peer: str | None) -> str | None:
    """``ipv4:10.0.0.5:443`` -> ``10.0.0.5:443`` (gRPC's peer string)."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    return rest if kind in ("ipv4", "ipv6") else peer


class GrpcGateway(Gateway):
    """Base of the gRPC gateways: subclasses set :attr:`method` and implement :meth:`run`."""

    transport = "custom"
    #: the served method, ``/package.Service/Method``
    method: ClassVar[str] = ""
    #: True: the method streams responses back; False: it returns one response at the end
    stream_responses: ClassVar[bool] = True
    #: serializes the method's response messages
    response_serializer: ClassVar[Callable[[Any], bytes]]
    #: health services answered (``Check``: SERVING, NOT_SERVING while draining; no auth)
    health_services: ClassVar[tuple[str, ...]] = ("grpc.health.v1.Health",)

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.grpc_cfg: GrpcGatewayConfig = config  # type: ignore[assignment]
        self._server: grpc.aio.Server | None = None
        self._tls: tuple[bytes, bytes] | None = None  # key, certificate chain (PEM)
        rate = self.grpc_cfg.max_streams_per_s
        self._limit = KeyedBuckets(rate, max(1.0, 2 * rate))
        self.streams = Counter(f"nes2net_{self.name}_streams_total",
                               f"{self.name} gRPC streams, by the gRPC status they ended with",
                               ["code"], registry=metrics_registry(ctx))

    # ------------------------------------------------------------------ subclass hooks
    async def authenticate(self, context: grpc.aio.ServicerContext, remote: str | None
                           ) -> None:
        """Refuse the stream (:meth:`refuse`) unless its caller may send; default: allow."""

    async def run(self, next_message: Callable[[], Any], handle: CallHandle,
                  remote: str | None) -> CallEnd:
        """The call of one stream: ``await next_message()`` gives each message's bytes."""
        raise NotImplementedError

    async def answer_error(self, context: grpc.aio.ServicerContext,
                           err: ProtocolError) -> None:
        """Send a response describing ``err`` before the error status (default: none)."""

    async def answer_ok(self, context: grpc.aio.ServicerContext) -> Any:
        """Send (or return) the response of a stream that ended well."""
        return None

    # ------------------------------------------------------------------ configuration
    def check_tls(self) -> None:
        """Check and read ``tls_cert``/``tls_key`` (ConfigError naming the key)."""
        cfg, section = self.grpc_cfg, f"gateways.{self.name}"
        if bool(cfg.tls_cert) != bool(cfg.tls_key):
            raise ConfigError(f"{section}.tls_key: tls_cert and tls_key go together")
        if cfg.tls_cert:
            server_tls_context(section, cfg.tls_cert, cfg.tls_key)  # checks them
            self._tls = (Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())
        elif not is_loopback(cfg.host):
            self.log.warning("gRPC without TLS beyond loopback: the platform connects over "
                             "TLS, so terminate it in a proxy in front, or set tls_cert/tls_key")

    # ------------------------------------------------------------------ server
    async def start_serving(self) -> None:
        """Bind the gRPC port (with TLS when configured) and start serving."""
        cfg = self.grpc_cfg
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            # a hard cap; messages over max_frame_bytes (+ the envelope) are refused by run()
            ("grpc.max_receive_message_length", 4 * self.limits.max_frame_bytes + ENVELOPE),
            ("grpc.max_send_message_length", 1 << 16),
        ])
        service, method = self.method.strip("/").split("/")
        make = grpc.stream_stream_rpc_method_handler if self.stream_responses \
            else grpc.stream_unary_rpc_method_handler
        handler = make(self._serve, response_serializer=self.response_serializer)
        health = grpc.unary_unary_rpc_method_handler(self._health)  # raw bytes both ways
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),
             *(grpc.method_handlers_generic_handler(name, {"Check": health})
               for name in self.health_services)))
        address = f"{cfg.host}:{cfg.port}"
        if self._tls is not None:
            port = server.add_secure_port(address, grpc.ssl_server_credentials([self._tls]))
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"gateways.{self.name}: cannot bind {address}")
        await server.start()
        self._server, self.bound_port = server, port
        self.log.info("gateway listening", gateway=self.name, host=cfg.host, port=port,
                      tls=self._tls is not None)

    async def stop_serving(self) -> None:
        """Refuse new streams (they see the drain); running ones end in the service's drain."""

    async def close(self) -> None:
        """Stop the gRPC server."""
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.stop(grace=2.0)

    async def refuse(self, context: grpc.aio.ServicerContext, status: grpc.StatusCode,
                     reason: str, message: str) -> None:
        """End the stream before its call starts, counted as a rejected call."""
        self.ctx.metrics.calls_rejected.labels(reason=reason).inc()
        await context.abort(status, f"{reason}: {message}")

    async def _health(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """A health check: serving, unless the service is draining (any service name)."""
        return NOT_SERVING if self.ctx.draining else SERVING

    # ------------------------------------------------------------------ one stream
    async def _serve(self, requests: Any, context: grpc.aio.ServicerContext) -> Any:
        remote = peer_address(context.peer())
        try:
            return await self._stream(requests, context, remote)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:  # never let one stream's failure reach the server
            self.log.exception("gateway failure", error=repr(exc), remote=remote)
            await context.abort(grpc.StatusCode.INTERNAL, "internal_error")
        finally:
            code = context.code()
            self.streams.labels(code=code.name if isinstance(code, grpc.StatusCode)
                                else "OK").inc()

    async def _stream(self, requests: Any, context: grpc.aio.ServicerContext,
                      remote: str | None) -> Any:
        if self.ctx.draining:
            await self.refuse(context, grpc.StatusCode.UNAVAILABLE, "shutting_down",
                              "the service is shutting down")
        if not self._limit.take((remote or "").rpartition(":")[0]):  # per address, not port
            await self.refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited",
                              "too many new streams from this address")
        await self.authenticate(context, remote)
        handle = self.new_call(discard_events)
        failed: list[ProtocolError] = []

        async def on_error(err: ProtocolError) -> None:
            failed.append(err)

        reader = _Reader(self, requests, handle)
        end = await run_call(self, handle, lambda: self.run(reader.next, handle, remote),
                             remote=remote, on_error=on_error)
        if end.reason == "timeout":
            failed.append(ProtocolError(end.detail or "idle_timeout", "no message in time"))
        if failed:
            err = failed[0]
            with contextlib.suppress(Exception):
                await self.answer_error(context, err)
            await context.abort(STATUS.get(err.code, grpc.StatusCode.INTERNAL),
                                f"{err.code}: {err.message}")
        if end.reason == "shutdown":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "shutting_down: service stopping")
        return await self.answer_ok(context)


class _Reader:
    """The next message's bytes of one stream, with the start/idle timeouts and the drain."""

    def __init__(self, gateway: GrpcGateway, requests: Any, handle: CallHandle):
        self.gw, self.it, self.handle = gateway, aiter(requests), handle

    async def next(self) -> bytes | None:
        """The next message (None when the client ended the stream); StopCall on a timeout."""
        if self.gw.ctx.draining:
            raise StopCall(CallEnd("shutdown"))
        lim = self.gw.limits
        started = self.handle.started
        timeout = lim.idle_timeout_s if started else lim.start_timeout_s
        try:
            raw = await asyncio.wait_for(anext(self.it), timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise StopCall(CallEnd("timeout", "idle_timeout" if started else "start_timeout")
                           ) from None
        if len(raw) > lim.max_frame_bytes + ENVELOPE:
            raise ProtocolError("frame_too_large", f"message of {len(raw)} bytes (limit "
                                f"{lim.max_frame_bytes} bytes of audio)")
        return raw
