"""Genesys Cloud AudioHook Monitor gateway (protocol v2), see docs/gateways/genesys.md.

Genesys connects to ``wss://<host><path>`` with the headers ``audiohook-organization-id``,
``audiohook-session-id``, ``audiohook-correlation-id``, ``x-api-key`` and an RFC 9421
signature (``signature``, ``signature-input``). The upgrade is refused (401/403) unless the
API key and signature verify (:mod:`.genesys_signature`). The session then runs the AudioHook
transactions (:mod:`.genesys_protocol`): ``open`` is answered with ``opened`` at once, ``ping``
with ``pong``, ``close`` with ``closed``; binary frames carry PCMU or L16 audio, stereo
interleaved with ``external`` (the customer) left and ``internal`` (the agent) right.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from nes2net_gateways._auth import require_secret, secret_equal
from nes2net_gateways._common import (
    AGENT_ROLE,
    RateGuard,
    check_metadata_size,
    check_roles,
    close_ws,
    discard_events,
    feed,
    remote_of,
    run_call,
    score_roles,
    ws_receive,
)
from nes2net_gateways.genesys_protocol import (
    NULL_UUID,
    AudioHookSession,
    Media,
    OpenRequest,
    audio_frames,
    check_parameters,
    choose_media,
    is_uuid,
    parse_client_message,
    parse_open,
)
from nes2net_gateways.genesys_signature import RequestView, verify_signature
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig, HandshakeRejected
from nes2net_stream.service.errors import CLOSE_NORMAL, ProtocolError
from nes2net_stream.service.events import CallEnd, CallStart, Source

#: components the signature must cover (as the AudioHook reference server requires)
REQUIRED_COMPONENTS = ("@request-target", "@authority", "audiohook-organization-id",
                       "audiohook-session-id", "audiohook-correlation-id", "x-api-key")
ID_HEADERS = ("audiohook-organization-id", "audiohook-session-id", "audiohook-correlation-id")
CLOSE_WAIT_S = 5.0
MIN_NONCE_LEN = 22


class GenesysCredential(BaseModel):
    """One API key / client secret pair of the Genesys AudioHook integration."""

    model_config = ConfigDict(extra="forbid")

    api_key: str
    client_secret: str = ""


class GenesysConfig(GatewayConfig):
    """``[gateways.genesys]`` settings (see docs/gateways/genesys.md)."""

    path: str = "/v1/gateways/genesys"
    api_key: str = ""
    client_secret: str = ""
    extra_credentials: list[GenesysCredential] = Field(default_factory=list)
    organization_ids: list[str] = Field(default_factory=list)
    max_signature_age_s: float = Field(10.0, gt=0.0, le=300.0)
    clock_skew_s: float = Field(3.0, ge=0.0, le=60.0)
    authority: str = ""
    prefer_format: Literal["PCMU", "L16"] = "PCMU"
    l16_byte_order: Literal["little", "big"] = "little"


@dataclass
class _Session:
    proto: AudioHookSession
    org_id: str
    correlation_id: str
    media: Media | None = None
    probe: bool = False
    paused: bool = False
    closed: bool = False
    disconnect_sent: bool = False
    gaps: int = 0
    gap_s: float = 0.0


class GenesysGateway(Gateway):
    """Genesys Cloud AudioHook Monitor (listen-only) over WebSocket."""

    name = "genesys"
    transport = "websocket"
    Config = GenesysConfig

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: GenesysConfig = config  # type: ignore[assignment]
        self._secrets: dict[str, bytes] = {}
        self._nonces: dict[str, float] = {}

    # ------------------------------------------------------------------ configuration

    def check_config(self) -> None:
        """Decode client secrets, check the organisation allow-list and the auth settings."""
        check_roles(self.cfg, self.name)
        require_secret(self, "api_key", self.cfg.api_key)
        pairs = [GenesysCredential(api_key=self.cfg.api_key, client_secret=self.cfg.client_secret)]
        for i, extra in enumerate(self.cfg.extra_credentials):
            if not extra.api_key:
                raise ConfigError(f"gateways.genesys.extra_credentials[{i}].api_key: empty")
            pairs.append(extra)
        for pair in pairs:
            if not pair.api_key:
                continue
            try:
                secret = base64.b64decode(pair.client_secret, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError("gateways.genesys.client_secret: not valid base64 (paste the "
                                  "client secret exactly as shown in the Genesys integration)"
                                  ) from None
            self._secrets[pair.api_key] = secret
        bad = [o for o in self.cfg.organization_ids if not is_uuid(o)]
        if bad:
            raise ConfigError(f"gateways.genesys.organization_ids: not UUIDs: {bad}")
        if self.auth_required and any(not s for s in self._secrets.values()):
            self.log.warning("an API key has no client secret: unsigned requests carrying it are "
                             "accepted (set client_secret to require signatures)")

    # ------------------------------------------------------------------ handshake

    def check_handshake(self, request: Request, remote: str | None) -> None:
        """Refuse the upgrade unless the AudioHook headers, API key and signature are valid."""
        headers = request.headers
        fields = {k.lower(): headers.get_all(k) for k in set(headers.keys())}
        for name in ID_HEADERS:
            if len(fields.get(name, [])) != 1 or not is_uuid(fields[name][0]):
                raise HandshakeRejected(400, f"missing or invalid {name} header")
        allowed = [o.lower() for o in self.cfg.organization_ids]
        if allowed and fields["audiohook-organization-id"][0].lower() not in allowed:
            raise HandshakeRejected(403, "organization not allowed")
        if self.cfg.auth == "off" or not self._secrets:
            return
        keys = fields.get("x-api-key", [])
        if len(keys) != 1 or not keys[0]:
            raise HandshakeRejected(401, "missing X-API-KEY header")
        api_key = keys[0]
        hosts = fields.get("host", [])
        view = RequestView("GET", request.path, self._authority(hosts[0] if hosts else ""),
                           fields)
        result = verify_signature(
            view, api_key=api_key, secret_for=self._secret_for, required=REQUIRED_COMPONENTS,
            max_age_s=self.cfg.max_signature_age_s, clock_skew_s=self.cfg.clock_skew_s,
            min_nonce_len=MIN_NONCE_LEN, now=time.time())
        if result.code == "unsigned":
            secret = self._secret_for(api_key)
            if secret is None:
                raise HandshakeRejected(401, "unknown API key")
            if secret:
                raise HandshakeRejected(401, "request is not signed")
            return
        if not result.ok:
            raise HandshakeRejected(401, f"signature verification failed ({result.code}: "
                                         f"{result.reason})")
        self._check_replay(result.nonce)

    def _secret_for(self, api_key: str) -> bytes | None:
        found = None
        for key, secret in self._secrets.items():
            if secret_equal(api_key, key):
                found = secret
        return found

    def _authority(self, host: str) -> str:
        if self.cfg.authority:
            return self.cfg.authority.lower()
        host = host.strip().lower()
        return host[:-4] if host.endswith(":443") else host

    def _check_replay(self, nonce: str) -> None:
        now = time.monotonic()
        horizon = self.cfg.max_signature_age_s + 2 * self.cfg.clock_skew_s
        if len(self._nonces) > 10_000:
            self._nonces = {k: t for k, t in self._nonces.items() if t > now}
        if self._nonces.get(nonce, 0.0) > now:
            raise HandshakeRejected(401, "signature nonce replayed")
        self._nonces[nonce] = now + horizon

    # ------------------------------------------------------------------ session

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """Run one AudioHook session: open transaction, audio, close transaction."""
        headers = conn.request.headers if conn.request else None

        def first(name: str, default: str = "") -> str:
            values = headers.get_all(name) if headers is not None else []
            return values[0] if values else default

        st = _Session(AudioHookSession(first("audiohook-session-id", NULL_UUID)),
                      first("audiohook-organization-id"), first("audiohook-correlation-id"))
        handle = self.new_call(discard_events)

        async def send(kind: str, params: dict[str, Any] | None = None) -> None:
            await conn.send(st.proto.reply(kind, params))

        async def on_error(err: ProtocolError) -> None:
            reason = "unauthorized" if err.code == "unauthorized" else "error"
            st.disconnect_sent = True
            await send("disconnect", {"reason": reason, "info": err.message[:300]})

        try:
            end = await run_call(self, handle, lambda: self._run(conn, st, handle, send),
                                 remote=remote_of(conn), on_error=on_error)
            if not st.closed:
                if end.reason == "shutdown" and not st.disconnect_sent:
                    with contextlib.suppress(Exception):
                        await send("disconnect", {"reason": "completed",
                                                  "info": "service shutting down"})
                await self._await_close(conn, st, send)
        finally:
            await close_ws(conn, CLOSE_NORMAL, "closed")

    async def _run(self, conn: ServerConnection, st: _Session, handle: CallHandle,
                   send: Any) -> CallEnd:
        msg = await ws_receive(self, conn, started=False)
        if isinstance(msg, bytes):
            raise ProtocolError("audio_before_start", "binary audio before the 'open' message")
        first = parse_client_message(msg)
        st.proto.accept(first)
        if first.type != "open":
            raise ProtocolError("bad_message", f"expected 'open', got '{first.type}'")
        req = parse_open(first.parameters)
        if req.organization_id.lower() != st.org_id.lower():
            raise ProtocolError("unauthorized", "organizationId does not match the "
                                "audiohook-organization-id header")
        st.media = choose_media(req.media, self.cfg.prefer_format)
        if req.is_probe:
            st.probe = True
            self.log.info("connection probe", session_id=st.proto.id, remote=remote_of(conn))
        elif st.media is None:
            raise ProtocolError("unsupported_format", "no offered media is supported (need "
                                "PCMU or L16 audio with 'external' and/or 'internal')")
        else:
            self._start(handle, st, req, conn)
        opened: dict[str, Any] = {"media": [st.media.to_json()] if st.media else [],
                                  "startPaused": False}
        await send("opened", opened)
        guard = RateGuard(self.limits)
        while True:
            msg = await ws_receive(self, conn, started=True)
            if isinstance(msg, bytes):
                self._audio(handle, st, msg)
                guard.check(handle)
                continue
            cm = parse_client_message(msg)
            st.proto.accept(cm)
            check_parameters(cm)
            if cm.type == "ping":
                await send("pong")
            elif cm.type == "close":
                await send("closed")
                st.closed = True
                return CallEnd("stop", f"close reason {cm.parameters['reason']}")
            elif cm.type == "paused":
                st.paused = True
                self._gap(handle, st, "paused", cm.position, 0.0)
            elif cm.type == "resumed":
                st.paused = False
                self._gap(handle, st, "resumed", cm.position, _seconds(cm.parameters["discarded"]))
            elif cm.type == "discarded":
                self._gap(handle, st, "discarded", cm.position,
                          _seconds(cm.parameters["discarded"]))
            elif cm.type == "update":  # the conversation's language changed
                language = cm.parameters["language"]
                self.log.info("language update", session_id=st.proto.id, language=language)
                if handle.session is not None:
                    meta = dict(handle.session.metadata)
                    meta["custom"] = {**meta.get("custom", {}), "language": language}
                    handle.update_metadata(meta)
            elif cm.type == "error":
                self.log.warning("client error message", session_id=st.proto.id,
                                 code=cm.parameters["code"],
                                 message=str(cm.parameters["message"])[:200])
            else:  # a second 'open' is ignored, as the reference server does
                self.log.warning("ignoring repeated 'open'", session_id=st.proto.id)

    def _start(self, handle: CallHandle, st: _Session, req: OpenRequest,
               conn: ServerConnection) -> None:
        media = st.media
        assert media is not None
        roles = tuple(self.cfg.customer_role if c == "external" else AGENT_ROLE
                      for c in media.channels)
        encoding = "mulaw" if media.format == "PCMU" else (
            "pcm_s16le" if self.cfg.l16_byte_order == "little" else "pcm_s16be")
        metadata = _metadata(req, st, media)
        try:
            check_metadata_size(metadata, self.limits.max_metadata_bytes)
        except ProtocolError:
            metadata["custom"].pop("custom_config", None)
            check_metadata_size(metadata, self.limits.max_metadata_bytes)
        source = Source("gateway", self.name, remote_of(conn))
        start = CallStart(req.conversation_id, encoding, media.rate, roles,  # type: ignore[arg-type]
                          score_roles(self.cfg, roles), source, metadata)
        try:
            handle.start(start)
        except ProtocolError as err:
            if err.code != "duplicate_call_id":
                raise
            handle.start(CallStart(f"{req.conversation_id}:{st.proto.id}", *_rest(start)))

    def _audio(self, handle: CallHandle, st: _Session, data: bytes) -> None:
        if st.probe:
            return
        if st.paused:
            raise ProtocolError("bad_message", "audio received while the stream is paused")
        assert st.media is not None
        audio_frames(data, st.media)
        feed(handle, data)

    def _gap(self, handle: CallHandle, st: _Session, kind: str, position: float,
             seconds: float) -> None:
        """Pause/discard: the provider skipped audio here; the pipeline clock skips it too."""
        st.gaps += 1
        st.gap_s += seconds
        if seconds > 0:
            handle.discontinuity(seconds)
        self.log.info("stream gap", session_id=st.proto.id, kind=kind, position_s=position,
                      discarded_s=seconds)

    async def _await_close(self, conn: ServerConnection, st: _Session, send: Any) -> None:
        """After a disconnect, answer Genesys's 'close' with 'closed' (bounded wait)."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        with contextlib.suppress(Exception):
            while (left := deadline - time.monotonic()) > 0:
                msg = await asyncio.wait_for(conn.recv(), left)
                if isinstance(msg, bytes):
                    continue
                with contextlib.suppress(ProtocolError):
                    cm = parse_client_message(msg)
                    st.proto.clientseq = max(st.proto.clientseq, cm.seq)
                    if cm.type == "close":
                        await send("closed")
                        return


def _seconds(duration: str) -> float:
    return float(duration[2:-1])


def _rest(start: CallStart) -> tuple[Any, ...]:
    return (start.encoding, start.sample_rate, start.channels, start.score_channels,
            start.source, start.metadata)


def _metadata(req: OpenRequest, st: _Session, media: Media) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "organization_id": req.organization_id, "correlation_id": st.correlation_id,
        "participant_id": req.participant["id"], "media": media.to_json()}
    if req.participant.get("aniName"):
        custom["ani_name"] = req.participant["aniName"]
    if req.language:
        custom["language"] = req.language
    if req.continued_sessions:
        custom["continued_sessions"] = req.continued_sessions
    if req.custom_config:
        custom["custom_config"] = req.custom_config
    meta: dict[str, Any] = {"provider": "genesys", "provider_call_id": req.conversation_id,
                            "provider_stream_id": st.proto.id}
    if req.participant.get("ani"):
        meta["ani"] = req.participant["ani"]
    if req.participant.get("dnis"):
        meta["dnis"] = req.participant["dnis"]
    meta["custom"] = custom
    return meta
