"""Webex Contact Center media forking over gRPC, see docs/gateways/webex_cc.md.

Webex Contact Center (a flow's Media Forking activity, once a caller reaches an agent) opens
one bidirectional gRPC stream per conversation to the partner's registered data source URL
and sends ``ConversationAudioForkingRequest`` messages (:mod:`webex_cc_proto`): the
conversation id, the customer's org id, and chunks of one party's audio (``CALLER`` or
``AGENT``, LINEAR16, MULAW or ALAW, 8 or 16 kHz). The gateway answers once, when Webex
half-closes the stream: ``status_message`` "ok", or an ``error_code`` and a gRPC status on
an error.

Authentication: Webex puts a JWS in the ``authorization`` metadata. It is RS256, issued by
one of Cisco's identity brokers (``iss``; the broker's keys are read from
``<iss>/oauth2/v2/keys/verificationjwk`` for issuers on the allow-list only) and carries the
data source's URL (``com.cisco.datasource.url``) and schema id
(``com.cisco.datasource.schema.uuid``), both checked against the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
from google.protobuf.message import DecodeError
from prometheus_client import Counter
from pydantic import Field

from nes2net_gateways._auth import server_tls_context
from nes2net_gateways._common import (
    AGENT_ROLE,
    RateGuard,
    StopCall,
    call_start,
    check_roles,
    discard_events,
    feed,
    metrics_registry,
    run_call,
)
from nes2net_gateways.jwks import (
    JwksKeys,
    JwtVerifier,
    KeysUnavailable,
    TokenRejected,
    check_jwks_url,
)
from nes2net_gateways.webex_cc_proto import (
    AGENT,
    ALAW,
    CALLER,
    ERROR_INVALID_AUDIO_FORMAT,
    ERROR_NONE,
    ERROR_STREAM_FAILURE,
    LINEAR16,
    METHOD,
    MULAW,
    ForkingRequest,
    ForkingResponse,
)
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig
from nes2net_stream.service.auth import is_loopback
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd
from nes2net_stream.service.ratelimit import KeyedBuckets

#: Cisco's identity brokers (production and test), as listed by Cisco's media forking sample
ISSUERS = ["https://idbroker.webex.com/idb", "https://idbroker-eu.webex.com/idb",
           "https://idbroker-b-us.webex.com/idb", "https://idbroker-ca.webex.com/idb"]
KEYS_PATH = "/oauth2/v2/keys/verificationjwk"
#: the media forking schema's id in Cisco's schema repository (webex/dataSourceSchemas)
SCHEMA_UUID = "523e1b7f-4693-47bc-b84e-a7b7a505fb0b"
#: bytes a request may hold besides its audio (ids, org, role id, timestamp, additional info)
ENVELOPE = 4096
URL_CLAIM, SCHEMA_CLAIM = "com.cisco.datasource.url", "com.cisco.datasource.schema.uuid"
ENCODINGS = {LINEAR16: "pcm_s16le", MULAW: "mulaw", ALAW: "alaw"}
CODEC_NAMES = {LINEAR16: "linear16", MULAW: "pcmu", ALAW: "pcma"}
#: protocol error code -> (gRPC status, the response's error_code)
STATUS = {
    "unsupported_format": (grpc.StatusCode.INVALID_ARGUMENT, ERROR_INVALID_AUDIO_FORMAT),
    "bad_audio_frame": (grpc.StatusCode.INVALID_ARGUMENT, ERROR_INVALID_AUDIO_FORMAT),
    "bad_message": (grpc.StatusCode.INVALID_ARGUMENT, ERROR_STREAM_FAILURE),
    "frame_too_large": (grpc.StatusCode.RESOURCE_EXHAUSTED, ERROR_STREAM_FAILURE),
    "duplicate_call_id": (grpc.StatusCode.ALREADY_EXISTS, ERROR_STREAM_FAILURE),
    "too_many_calls": (grpc.StatusCode.RESOURCE_EXHAUSTED, ERROR_STREAM_FAILURE),
    "rate_limited": (grpc.StatusCode.RESOURCE_EXHAUSTED, ERROR_STREAM_FAILURE),
    "call_too_long": (grpc.StatusCode.RESOURCE_EXHAUSTED, ERROR_STREAM_FAILURE),
    "shutting_down": (grpc.StatusCode.UNAVAILABLE, ERROR_STREAM_FAILURE),
    "start_timeout": (grpc.StatusCode.DEADLINE_EXCEEDED, ERROR_STREAM_FAILURE),  # end: timeout
    "idle_timeout": (grpc.StatusCode.DEADLINE_EXCEEDED, ERROR_STREAM_FAILURE),
    "unauthorized": (grpc.StatusCode.PERMISSION_DENIED, ERROR_STREAM_FAILURE),  # org refused
}


class WebexCcConfig(GatewayConfig):
    """``[gateways.webex_cc]`` settings (see docs/gateways/webex_cc.md)."""

    port: int = Field(9210, ge=0, le=65535)
    tls_cert: str = ""
    tls_key: str = ""
    datasource_url: str = ""
    schema_uuid: str = SCHEMA_UUID
    issuers: list[str] = Field(default_factory=lambda: list(ISSUERS), min_length=1)
    jwks_file: str = ""
    jwks_refresh_s: float = Field(3600.0, ge=60.0, le=86_400.0)
    leeway_s: float = Field(60.0, ge=0.0, le=600.0)
    customer_org_ids: list[str] = Field(default_factory=list)
    max_streams_per_s: float = Field(50.0, gt=0.0)


class WebexTokens(JwtVerifier):
    """Media forking JWS: the issuer picks the key set; data source URL and schema checked."""

    def __init__(self, cfg: WebexCcConfig):
        self.by_issuer = {
            iss: JwksKeys(url=iss.rstrip("/") + KEYS_PATH, file=cfg.jwks_file,
                          refresh_s=cfg.jwks_refresh_s) for iss in cfg.issuers}
        first = next(iter(self.by_issuer.values()))
        super().__init__(first, issuer=cfg.issuers[0], audience=None, leeway_s=cfg.leeway_s,
                         require=("exp", "iss", "aud", "sub", "jti"))
        self.url, self.schema = cfg.datasource_url, cfg.schema_uuid

    async def verify(self, token: str | None) -> dict[str, Any]:
        """The token's claims (TokenRejected, KeysUnavailable)."""
        try:
            issuer = jwt.decode(token or "", options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            raise TokenRejected("missing or malformed token") from None
        keys = self.by_issuer.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            raise TokenRejected(f"issuer {str(issuer)[:80]!r} is not in issuers")
        claims = await self.verify_with(token, keys, issuer)
        if claims.get(URL_CLAIM) != self.url:
            raise TokenRejected(f"{URL_CLAIM} {str(claims.get(URL_CLAIM))[:120]!r} is not "
                                "this data source's URL")
        if claims.get(SCHEMA_CLAIM) != self.schema:
            raise TokenRejected(f"{SCHEMA_CLAIM} {str(claims.get(SCHEMA_CLAIM))[:60]!r} is not "
                                "the media forking schema")
        return claims

    async def close(self) -> None:
        """Close the key sets' HTTP clients."""
        for keys in self.by_issuer.values():
            await keys.close()


class WebexCcGateway(Gateway):
    """gRPC server of Webex Contact Center media forking (see the module docstring)."""

    name = "webex_cc"
    transport = "custom"
    Config = WebexCcConfig

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: WebexCcConfig = config  # type: ignore[assignment]
        self.tokens: WebexTokens | None = None
        self._server: grpc.aio.Server | None = None
        self._tls: tuple[bytes, bytes] | None = None  # key, certificate chain (PEM)
        self._limit = KeyedBuckets(self.cfg.max_streams_per_s,
                                   max(1.0, 2 * self.cfg.max_streams_per_s))
        self.streams = Counter("nes2net_webex_cc_streams_total",
                               "Media forking gRPC streams, by gRPC status code at their end",
                               ["code"], registry=metrics_registry(ctx))

    # ------------------------------------------------------------------ configuration
    def check_config(self) -> None:
        """Require the data source URL when authentication is enforced; check TLS and keys."""
        cfg = self.cfg
        check_roles(cfg, self.name)
        if bool(cfg.tls_cert) != bool(cfg.tls_key):
            raise ConfigError("gateways.webex_cc.tls_key: tls_cert and tls_key go together")
        if cfg.tls_cert:
            server_tls_context("gateways.webex_cc", cfg.tls_cert, cfg.tls_key)  # checks them
            self._tls = (Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())
        elif not is_loopback(cfg.host):
            self.log.warning("gRPC without TLS beyond loopback: Webex connects over TLS only, "
                             "so terminate it in a proxy in front, or set tls_cert/tls_key")
        if cfg.auth == "off":
            self.log.warning("media forking token validation is off (auth = \"off\")")
            return
        if not cfg.datasource_url:
            if self.auth_required:
                raise ConfigError(
                    "gateways.webex_cc.datasource_url: authentication is required (the "
                    "gateway listens beyond loopback or auth = \"required\"); set it to the "
                    "URL registered as the data source (the tokens' com.cisco.datasource.url)"
                    ", or auth = \"off\" on a trusted network only")
            self.log.warning("media forking token validation is off (no datasource_url)")
            return
        if not cfg.jwks_file:
            for i, issuer in enumerate(cfg.issuers):
                check_jwks_url(f"gateways.webex_cc.issuers[{i}]", issuer)
        self.tokens = WebexTokens(cfg)

    # ------------------------------------------------------------------ server
    async def start_serving(self) -> None:
        """Bind the gRPC port (with TLS when configured) and start serving."""
        cfg, lim = self.cfg, self.limits
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            # a hard cap; messages over max_frame_bytes (+ the envelope) are refused in _run
            ("grpc.max_receive_message_length", 4 * lim.max_frame_bytes + ENVELOPE),
            ("grpc.max_send_message_length", 1 << 16),
        ])
        service, method = METHOD.strip("/").split("/")
        handler = grpc.stream_stream_rpc_method_handler(  # requests parsed in _run, as bytes
            self._serve, response_serializer=ForkingResponse.SerializeToString)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),))
        address = f"{cfg.host}:{cfg.port}"
        if self._tls is not None:
            port = server.add_secure_port(address, grpc.ssl_server_credentials([self._tls]))
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"gateways.webex_cc: cannot bind {address}")
        await server.start()
        self._server, self.bound_port = server, port
        self.log.info("gateway listening", gateway=self.name, host=cfg.host, port=port,
                      tls=bool(cfg.tls_cert))

    async def prepare(self) -> None:
        """Load the issuers' key sets before the first stream (failures are logged)."""
        if self.tokens is None:
            return
        for issuer, keys in self.tokens.by_issuer.items():
            try:
                await keys.key_for(None)
            except KeysUnavailable as exc:
                self.log.warning("media forking signing keys unavailable at start",
                                 issuer=issuer, error=str(exc))

    async def stop_serving(self) -> None:
        """Refuse new streams; running ones end in the service's drain."""
        # new streams see ctx.draining and are refused with UNAVAILABLE

    async def close(self) -> None:
        """Stop the gRPC server and close the key sets' HTTP clients."""
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.stop(grace=2.0)
        if self.tokens is not None:
            await self.tokens.close()

    # ------------------------------------------------------------------ one stream
    async def _serve(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        remote = _peer(context.peer())
        try:
            await self._stream(requests, context, remote)
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
                      remote: str | None) -> None:
        if self.ctx.draining:
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, "shutting_down",
                               "the service is shutting down")
        if not self._limit.take(remote or ""):
            await self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited",
                               "too many new streams from this address")
        if self.tokens is not None:
            await self._authenticate(context, remote)
        handle = self.new_call(discard_events)
        failed: list[ProtocolError] = []

        async def on_error(err: ProtocolError) -> None:
            failed.append(err)

        end = await run_call(self, handle, lambda: self._run(requests, handle, remote),
                             remote=remote, on_error=on_error)
        if end.reason == "timeout":
            failed.append(ProtocolError(end.detail or "idle_timeout", "no message in time"))
        if failed:
            err = failed[0]
            status, error_code = STATUS.get(err.code, (grpc.StatusCode.INTERNAL,
                                                       ERROR_STREAM_FAILURE))
            with contextlib.suppress(Exception):
                await context.write(ForkingResponse(status_message=f"{err.code}: {err.message}",
                                                    error_code=error_code))
            await context.abort(status, f"{err.code}: {err.message}")
        if end.reason == "shutdown":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "shutting_down: service stopping")
        await context.write(ForkingResponse(status_message="ok", error_code=ERROR_NONE))

    async def _refuse(self, context: grpc.aio.ServicerContext, status: grpc.StatusCode,
                      reason: str, message: str) -> None:
        self.ctx.metrics.calls_rejected.labels(reason=reason).inc()
        await context.abort(status, f"{reason}: {message}")

    async def _authenticate(self, context: grpc.aio.ServicerContext, remote: str | None
                            ) -> None:
        assert self.tokens is not None
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                token = value[7:] if value[:7].lower() == "bearer " else value
        try:
            await self.tokens.verify(token)
        except TokenRejected as exc:
            self.log.warning("stream refused: token", remote=remote, reason=str(exc))
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "unauthorized",
                               f"token refused: {exc}")
        except KeysUnavailable as exc:
            self.log.error("media forking signing keys unavailable", error=str(exc))
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, "unauthorized",
                               "signing keys unavailable")

    async def _run(self, requests: Any, handle: CallHandle, remote: str | None) -> CallEnd:
        lim, cfg = self.limits, self.cfg
        guard = RateGuard(lim)
        stream = _Conversation(self)
        it = aiter(requests)
        while True:
            if self.ctx.draining:
                raise StopCall(CallEnd("shutdown"))
            timeout = lim.idle_timeout_s if handle.started else lim.start_timeout_s
            try:
                raw = await asyncio.wait_for(anext(it), timeout)
            except StopAsyncIteration:
                return CallEnd("stop", "stream completed")
            except TimeoutError:
                code = "idle_timeout" if handle.started else "start_timeout"
                raise StopCall(CallEnd("timeout", code)) from None
            role, data = stream.on_message(parse_request(raw, lim.max_frame_bytes), handle,
                                           remote)
            if cfg.customer_org_ids and stream.org not in cfg.customer_org_ids:
                raise ProtocolError("unauthorized", f"customer org {stream.org[:80]!r} is not in "
                                    "customer_org_ids")
            if data:
                feed(handle, data, role)
                guard.check(handle)


def parse_request(raw: bytes, max_audio: int) -> Any:
    """A request from its bytes (ProtocolError: too large, or not a request)."""
    if len(raw) > max_audio + ENVELOPE:
        raise ProtocolError("frame_too_large", f"request of {len(raw)} bytes (limit "
                            f"{max_audio} bytes of audio)")
    try:
        return ForkingRequest.FromString(raw)
    except DecodeError:
        raise ProtocolError("bad_message", "not a ConversationAudioForkingRequest") from None


class _Conversation:
    """The message rules of one stream: one conversation, one audio format, known roles."""

    def __init__(self, gateway: WebexCcGateway):
        self.gw = gateway
        self.conversation = ""
        self.org = ""
        self.fmt: tuple[int, int] | None = None
        self.legs: dict[str, str] = {}
        self.started_at = time.monotonic()

    def on_message(self, msg: Any, handle: CallHandle, remote: str | None
                   ) -> tuple[str, bytes]:
        """The role and audio bytes of ``msg``; starts the call at the first (ProtocolError)."""
        if not msg.HasField("audio"):
            raise ProtocolError("bad_message", "a request without audio")
        audio = msg.audio
        if audio.encoding not in ENCODINGS:
            raise ProtocolError("unsupported_format", f"audio encoding {audio.encoding} is "
                                "not LINEAR16, MULAW or ALAW")
        fmt = (audio.encoding, audio.sample_rate_hertz)
        if not handle.started:
            if not msg.conversation_id:
                raise ProtocolError("bad_message", "the first request has no conversation_id")
            self.conversation, self.org, self.fmt = msg.conversation_id, msg.customer_org_id, fmt
            self._start(handle, remote)
        elif msg.conversation_id and msg.conversation_id != self.conversation:
            raise ProtocolError("bad_message", "conversation_id changed within the stream")
        elif fmt != self.fmt:
            raise ProtocolError("unsupported_format", f"audio format changed mid-call "
                                f"(encoding {fmt[0]}, {fmt[1]} Hz)")
        if audio.role == CALLER:
            role = self.gw.cfg.customer_role
        elif audio.role == AGENT:
            role = AGENT_ROLE
        else:
            raise ProtocolError("bad_message", f"audio of participant role {audio.role} "
                                "(neither CALLER nor AGENT)")
        if audio.role_id and self.legs.get(role) != audio.role_id:
            if role in self.legs:  # a new leg of that party: a transfer
                self.gw.log.info("participant leg changed", call_id=handle.call_id, role=role)
            self.legs[role] = audio.role_id[:128]
        return role, audio.audio_data

    def _start(self, handle: CallHandle, remote: str | None) -> None:
        cfg = self.gw.cfg
        assert self.fmt is not None
        encoding, rate = self.fmt
        metadata = {"provider": "webex_cc", "provider_call_id": self.conversation,
                    "custom": {"customer_org_id": self.org[:128],
                               "codec": CODEC_NAMES[encoding]}}
        handle.start(call_start(self.gw, call_id=self.conversation,
                                encoding=ENCODINGS[encoding], sample_rate=rate,
                                channels=(cfg.customer_role, AGENT_ROLE), metadata=metadata,
                                remote=remote))


def _peer(peer: str | None) -> str | None:
    """``ipv4:10.0.0.5:443`` -> ``10.0.0.5:443`` (gRPC's peer string)."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    return rest if kind in ("ipv4", "ipv6") else peer
