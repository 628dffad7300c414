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

from collections.abc import Callable
from typing import Any

import grpc
import jwt
from pydantic import Field

from nes2net_gateways._common import AGENT_ROLE, RateGuard, call_start, check_roles, feed
from nes2net_gateways._grpc_gateway import GrpcGateway, GrpcGatewayConfig, parse_message
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
from nes2net_stream.gateways.api import CallHandle, GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

#: Cisco's identity brokers (production), as listed by Cisco's media forking guide
ISSUERS = ["https://idbroker.webex.com/idb", "https://idbroker-eu.webex.com/idb",
           "https://idbroker-b-us.webex.com/idb", "https://idbroker-ca.webex.com/idb"]
KEYS_PATH = "/oauth2/v2/keys/verificationjwk"
#: the media forking schema's id in Cisco's schema repository (webex/dataSourceSchemas)
SCHEMA_UUID = "523e1b7f-4693-47bc-b84e-a7b7a505fb0b"
URL_CLAIM, SCHEMA_CLAIM = "com.cisco.datasource.url", "com.cisco.datasource.schema.uuid"
ENCODINGS = {LINEAR16: "pcm_s16le", MULAW: "mulaw", ALAW: "alaw"}
CODEC_NAMES = {LINEAR16: "linear16", MULAW: "pcmu", ALAW: "pcma"}
#: protocol error codes answered with ERROR_INVALID_AUDIO_FORMAT (others: STREAM_FAILURE)
FORMAT_ERRORS = frozenset({"unsupported_format", "bad_audio_frame"})


class WebexCcConfig(GrpcGatewayConfig):
    """``[gateways.webex_cc]`` settings (see docs/gateways/webex_cc.md)."""

    port: int = Field(9210, ge=0, le=65535)
    datasource_url: str = ""
    schema_uuid: str = SCHEMA_UUID
    issuers: list[str] = Field(default_factory=lambda: list(ISSUERS), min_length=1)
    jwks_file: str = ""
    jwks_refresh_s: float = Field(3600.0, ge=60.0, le=86_400.0)
    leeway_s: float = Field(60.0, ge=0.0, le=600.0)
    customer_org_ids: list[str] = Field(default_factory=list)


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


class WebexCcGateway(GrpcGateway):
    """gRPC server of Webex Contact Center media forking (see the module docstring)."""

    name = "webex_cc"
    Config = WebexCcConfig
    method = METHOD
    response_serializer = staticmethod(ForkingResponse.SerializeToString)
    #: Cisco's media forking sample serves its own health service (same messages) unsigned
    health_services = ("grpc.health.v1.Health", "com.cisco.wcc.ccai.v1.Health")

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: WebexCcConfig = config  # type: ignore[assignment]
        self.tokens: WebexTokens | None = None

    # ------------------------------------------------------------------ configuration
    def check_config(self) -> None:
        """Require the data source URL when authentication is enforced; check TLS and keys."""
        cfg = self.cfg
        check_roles(cfg, self.name)
        self.check_tls()
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

    async def close(self) -> None:
        """Stop the gRPC server and close the key sets' HTTP clients."""
        await super().close()
        if self.tokens is not None:
            await self.tokens.close()

    # ------------------------------------------------------------------ one stream
    async def authenticate(self, context: grpc.aio.ServicerContext, remote: str | None
                           ) -> None:
        """Check the JWS of the ``authorization`` metadata (UNAUTHENTICATED if refused)."""
        if self.tokens is None:
            return
        token = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                token = value[7:] if value[:7].lower() == "bearer " else value
        try:
            await self.tokens.verify(token)
        except TokenRejected as exc:
            self.log.warning("stream refused: token", remote=remote, reason=str(exc))
            await self.refuse(context, grpc.StatusCode.UNAUTHENTICATED, "unauthorized",
                              f"token refused: {exc}")
        except KeysUnavailable as exc:
            self.log.error("media forking signing keys unavailable", error=str(exc))
            await self.refuse(context, grpc.StatusCode.UNAVAILABLE, "unauthorized",
                              "signing keys unavailable")

    async def answer_error(self, context: grpc.aio.ServicerContext,
                           err: ProtocolError) -> None:
        """The one response, naming the error, before the error status."""
        code = ERROR_INVALID_AUDIO_FORMAT if err.code in FORMAT_ERRORS else ERROR_STREAM_FAILURE
        await context.write(ForkingResponse(status_message=f"{err.code}: {err.message}",
                                            error_code=code))

    async def answer_ok(self, context: grpc.aio.ServicerContext) -> None:
        """The one response of a conversation that ended well."""
        await context.write(ForkingResponse(status_message="ok", error_code=ERROR_NONE))

    async def run(self, next_message: Callable[[], Any], handle: CallHandle,
                  remote: str | None) -> CallEnd:
        """Start the call at the first message; feed each party's audio to its channel."""
        guard = RateGuard(self.limits)
        stream = _Conversation(self)
        while (raw := await next_message()) is not None:
            role, data = stream.on_message(parse_request(raw), handle, remote)
            if self.cfg.customer_org_ids and stream.org not in self.cfg.customer_org_ids:
                raise ProtocolError("unauthorized", f"customer org {stream.org[:80]!r} is not "
                                    "in customer_org_ids")
            if data:
                feed(handle, data, role)
                guard.check(handle)
        return CallEnd("stop", "stream completed")


def parse_request(raw: bytes) -> Any:
    """A request from its bytes (ProtocolError ``bad_message`` when it is not one)."""
    return parse_message(ForkingRequest, raw)


class _Conversation:
    """The message rules of one stream: one conversation, one audio format, known roles."""

    def __init__(self, gateway: WebexCcGateway):
        self.gw = gateway
        self.conversation = ""
        self.org = ""
        self.fmt: tuple[int, int] | None = None
        self.legs: dict[str, str] = {}

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
