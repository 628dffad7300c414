"""Azure Communication Services (Call Automation) audio streaming gateway, listen only.

Call Automation dials the service over WebSocket (``MediaStreamingOptions`` with transport
``websocket`` and the gateway's ``wss://`` URL) and sends JSON text messages: one
``AudioMetadata`` (PCM, 16 or 24 kHz, mono), then ``AudioData`` with base64 16-bit
little-endian PCM, per participant (``participantRawID``) when the stream is *unmixed*, without
a participant when it is *mixed*. Every upgrade carries an RS256 JWT of Call Automation in
``Authorization: Bearer`` (audience: the ACS resource id) and the call's
``x-ms-call-connection-id``/``x-ms-call-correlation-id`` headers. See docs/gateways/acs.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from pydantic import Field
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from nes2net_gateways._auth import bearer_token, query_params
from nes2net_gateways._common import (
    RateGuard,
    b64decode,
    call_metadata,
    call_start,
    check_call_id,
    check_roles,
    feed,
    metrics_registry,
    parse_json_object,
    remote_of,
    serve_ws_call,
)
from nes2net_gateways._json_media import json_messages, json_object
from nes2net_gateways.acs_participants import LATE_ROLES, ParticipantChannels
from nes2net_gateways.jwks import (
    JwksKeys,
    JwtVerifier,
    KeysUnavailable,
    TokenRejected,
    check_jwks_url,
)
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig, HandshakeRejected
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

ISSUER = "https://acscallautomation.communication.azure.com"
JWKS_URL = "https://acscallautomation.communication.azure.com/calling/keys"
CONNECTION_HEADER = "x-ms-call-connection-id"
CORRELATION_HEADER = "x-ms-call-correlation-id"
MAX_PARTICIPANT_ID = 256
IGNORED_KINDS = frozenset({"DtmfData", "TranscriptionMetadata", "TranscriptionData"})


class AcsConfig(GatewayConfig):
    """``[gateways.acs]`` settings.

    Attributes:
        audience: the ACS resource's immutable id, the ``aud`` of Call Automation's tokens.
        issuer: the tokens' ``iss``.
        jwks_url: where Call Automation publishes its signing keys.
        jwks_file: a local copy of that key set instead of the URL (offline networks).
        jwks_refresh_s: how old the cached key set may get before it is loaded again.
        leeway_s: clock skew allowed on the tokens' lifetime.
        customer_id_prefixes: ``participantRawID`` prefixes of the customer (``4:``: a
            phone number on the PSTN).
        customer_param: URL query parameter naming the customer's raw id exactly.
        stream_in_call_id: call id ``<connection id>:<subscription id>`` (True) or just the
            call connection id.
    """

    path: str = "/v1/gateways/acs"
    audience: str = ""
    issuer: str = ISSUER
    jwks_url: str = JWKS_URL
    jwks_file: str = ""
    jwks_refresh_s: float = Field(3600.0, ge=60.0, le=86_400.0)
    leeway_s: float = Field(60.0, ge=0.0, le=600.0)
    customer_id_prefixes: list[str] = Field(default_factory=lambda: ["4:"], max_length=16)
    customer_param: str = "customer"
    stream_in_call_id: bool = True


# --------------------------------------------------------------------------- messages (pure)

@dataclass(frozen=True)
class AcsAudioMetadata:
    """An ``AudioMetadata`` message."""

    subscription_id: str | None
    sample_rate: int


@dataclass(frozen=True)
class AcsAudio:
    """An ``AudioData`` message (participant None: mixed audio)."""

    participant: str | None
    payload: bytes
    silent: bool


@dataclass(frozen=True)
class AcsOther:
    """Any other message (DTMF, transcription, kinds added later)."""

    kind: str


AcsMessage = AcsAudioMetadata | AcsAudio | AcsOther


def _inner(msg: dict[str, Any], kind: str) -> dict[str, Any]:
    key = kind[0].lower() + kind[1:]  # AudioMetadata -> audioMetadata
    return json_object(msg.get(key), f"{kind}.{key}")


def _parse_metadata(meta: dict[str, Any]) -> AcsAudioMetadata:
    enc, rate, ch = meta.get("encoding"), meta.get("sampleRate"), meta.get("channels", 1)
    mono = ch in (1, "1") or (isinstance(ch, str) and ch.lower() == "mono")
    if not isinstance(enc, str) or enc.upper() != "PCM" or not mono or \
            isinstance(rate, bool) or not isinstance(rate, int):
        raise ProtocolError("unsupported_format", f"AudioMetadata {str(enc)[:20]!r}/"
                            f"{str(rate)[:10]!r} Hz/{str(ch)[:10]!r} channel(s): Call "
                            "Automation streams PCM 16 or 24 kHz mono")
    sub = meta.get("subscriptionId")
    if sub is not None and not isinstance(sub, str):
        raise ProtocolError("bad_message", "AudioMetadata: 'subscriptionId' must be a string")
    return AcsAudioMetadata(sub or None, rate)


def _parse_audio(data: dict[str, Any]) -> AcsAudio:
    who = data.get("participantRawID", data.get("participantRawId"))
    if who is not None and (not isinstance(who, str) or len(who) > MAX_PARTICIPANT_ID):
        raise ProtocolError("bad_message", "AudioData: 'participantRawID' must be a string of "
                            f"at most {MAX_PARTICIPANT_ID} characters")
    silent = data.get("silent", False)
    if not isinstance(silent, bool):
        raise ProtocolError("bad_message", "AudioData: 'silent' must be true or false")
    raw = data.get("data")
    payload = b"" if raw in (None, "") and silent else b64decode(raw, "AudioData.data")
    return AcsAudio(who or None, payload, silent)


def parse_message(text: str | bytes, max_bytes: int) -> AcsMessage:
    """Parse one Call Automation streaming message; raises only ProtocolError."""
    msg = parse_json_object(text, max_bytes, "ACS message")
    kind = msg.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("bad_message", "an ACS message needs a string 'kind'")
    if kind == "AudioMetadata":
        return _parse_metadata(_inner(msg, kind))
    if kind == "AudioData":
        return _parse_audio(_inner(msg, kind))
    return AcsOther(kind[:40])


# --------------------------------------------------------------------------- the gateway

class AcsGateway(Gateway):
    """Azure Communication Services Call Automation audio streaming (listen only)."""

    name = "acs"
    transport = "websocket"
    Config = AcsConfig

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self._verifier: JwtVerifier | None = None
        #: audio and messages received but not scored, by reason (no per-call labels)
        self.ignored = Counter("nes2net_acs_ignored_total",
                               "Call Automation input not scored: participants beyond the "
                               "fourth (participant), message kinds not known (unknown_kind)",
                               ["reason"], registry=metrics_registry(ctx))

    def check_config(self) -> None:
        """Require the audience when authentication is enforced; check the key source."""
        cfg: AcsConfig = self.config  # type: ignore[assignment]
        check_roles(cfg, self.name)
        if not all(p for p in cfg.customer_id_prefixes):
            raise ConfigError("gateways.acs.customer_id_prefixes: empty prefix (it would match "
                              "every participant)")
        if cfg.auth == "off":
            self.log.warning("Call Automation token validation is off (auth = \"off\")")
            return
        if not cfg.audience:
            if self.auth_required:
                raise ConfigError(
                    "gateways.acs.audience: authentication is required (the service listens "
                    "beyond loopback or auth = \"required\"); set it to the ACS resource's "
                    "immutable resource id, or auth = \"off\" on a trusted network only")
            self.log.warning("Call Automation token validation is off (no audience)")
            return
        if not cfg.jwks_file:
            check_jwks_url("gateways.acs.jwks_url", cfg.jwks_url)
        keys = JwksKeys(url=cfg.jwks_url, file=cfg.jwks_file, refresh_s=cfg.jwks_refresh_s)
        self._verifier = JwtVerifier(keys, issuer=cfg.issuer, audience=cfg.audience,
                                     leeway_s=cfg.leeway_s)

    async def check_handshake(self, request: Request, remote: str | None) -> None:
        """Refuse upgrades without a valid Call Automation token (401; 503 without keys)."""
        if self._verifier is None:
            return
        headers = request.headers
        token = bearer_token(headers) or bearer_token(headers, "Authentication")
        try:
            await self._verifier.verify(token)
        except TokenRejected as exc:
            raise HandshakeRejected(401, f"Call Automation token refused: {exc}") from None
        except KeysUnavailable as exc:
            self.log.error("Call Automation signing keys unavailable", error=str(exc))
            raise HandshakeRejected(503, "signing keys unavailable") from None

    async def prepare(self) -> None:
        """Load the key set before the first call (a failure is logged; upgrades retry)."""
        if self._verifier is None:
            return
        try:
            keys = await self._verifier.keys.key_for(None)
        except KeysUnavailable as exc:
            self.log.error("Call Automation signing keys unavailable at start: upgrades get "
                           "503 until they load", error=str(exc))
        else:
            self.log.info("Call Automation signing keys loaded", keys=len(keys))

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """Serve one Call Automation audio stream."""
        await serve_ws_call(self, conn, lambda handle: self._stream(conn, handle))

    async def close(self) -> None:
        """Close the key set's HTTP client."""
        if self._verifier is not None:
            await self._verifier.keys.close()

    def _start(self, conn: ServerConnection, handle: CallHandle, msg: AcsAudioMetadata,
               roles: tuple[str, ...], params: dict[str, str]) -> dict[str, Any]:
        """Start the call; ``params``: the URL's query without the customer parameter."""
        cfg: AcsConfig = self.config  # type: ignore[assignment]
        headers = conn.request.headers if conn.request is not None else {}
        connection = headers.get(CONNECTION_HEADER) or params.pop("call_id", None) or \
            msg.subscription_id
        if connection is None:
            raise ProtocolError("bad_message", f"no {CONNECTION_HEADER} header, call_id "
                                "parameter or subscriptionId to name the call")
        connection = check_call_id(connection, f"{CONNECTION_HEADER}")
        call_id = connection
        if cfg.stream_in_call_id and msg.subscription_id:
            call_id = f"{connection}:{msg.subscription_id}"
        custom: dict[str, Any] = dict(params)
        if headers.get(CORRELATION_HEADER):
            custom["correlation_id"] = headers[CORRELATION_HEADER][:128]
        meta = call_metadata(self.name, connection, stream_id=msg.subscription_id,
                             custom=custom)
        handle.start(call_start(self, call_id=call_id, encoding="pcm_s16le",
                                sample_rate=msg.sample_rate, channels=roles, metadata=meta,
                                remote=remote_of(conn), open_on_audio=LATE_ROLES))
        return meta

    async def _stream(self, conn: ServerConnection, handle: CallHandle) -> CallEnd:
        cfg: AcsConfig = self.config  # type: ignore[assignment]
        params = query_params(conn.request.path if conn.request is not None else "")
        parties = ParticipantChannels(cfg.customer_role, cfg.customer_id_prefixes,
                                      params.pop(cfg.customer_param, None))
        guard = RateGuard(self.limits)
        async for raw in json_messages(self, conn, handle, "Call Automation"):
            msg = parse_message(raw, self.limits.max_text_bytes)
            if isinstance(msg, AcsAudioMetadata):
                if handle.started:
                    raise ProtocolError("bad_message", "AudioMetadata sent twice")
                parties.metadata = self._start(conn, handle, msg, parties.roles, params)
            elif isinstance(msg, AcsAudio):
                if not handle.started:
                    raise ProtocolError("audio_before_start", "AudioData before AudioMetadata")
                channel, new = parties.channel_of(msg.participant)
                if channel is None:  # a fifth party: counted, logged when the stream ends
                    if new:
                        self.ignored.labels(reason="participant").inc()
                    continue
                if new:
                    handle.update_metadata(parties.metadata)
                if msg.payload:
                    feed(handle, msg.payload, channel)
                    guard.check(handle)
            elif msg.kind not in IGNORED_KINDS:
                parties.unknown_kinds.add(msg.kind)
                self.ignored.labels(reason="unknown_kind").inc()
        if parties.dropped or parties.unknown_kinds:
            self.log.warning("stream ended with audio or messages not scored",
                             call_id=handle.call_id, participants_ignored=parties.dropped,
                             unknown_kinds=sorted(parties.unknown_kinds))
        return CallEnd("stop", "closed by Call Automation")
