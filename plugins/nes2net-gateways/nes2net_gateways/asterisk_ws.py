"""Asterisk chan_websocket (media over WebSocket) gateway, see docs/gateways/asterisk_ws.md.

Asterisk (20.16.0, 21.11.0, 22.6.0, 23.0.0 and later) dials ``WebSocket/<client>/c(<codec>)``
and connects to the URI of a ``websocket_client.conf`` entry; the first TEXT frame is the
``MEDIA_START`` event, then BINARY frames carry raw audio in the channel's format and TEXT
frames carry events (``DTMF_END``, ``MEDIA_XOFF``/``MEDIA_XON``, ``STATUS``, ``ERROR``, ...).
Events come as plain text (``MEDIA_START connection_id:... format:ulaw ...``) or, from
20.18.0, 22.8.0 and 23.2.0 with ``f(json)``, as JSON objects. Asterisk ends the call by
closing the WebSocket. Authentication: HTTP Basic (``username``/``password`` of
``websocket_client.conf``) or a token (``Authorization: Bearer`` from a proxy, or a ``token``
query parameter added with the dial string's ``v(token=...)`` option).

:func:`parse_control` and :func:`parse_media_start` are pure and raise only
:class:`~nes2net_stream.service.errors.ProtocolError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedOK
from websockets.http11 import Request

from nes2net_gateways._auth import (
    basic_auth_ok,
    bearer_token,
    check_basic_pair,
    query_params,
    require_secret,
    secret_equal,
)
from nes2net_gateways._common import (
    RateGuard,
    check_metadata_size,
    check_roles,
    feed,
    remote_of,
    score_roles,
    serve_ws_call,
    ws_receive,
)
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig, HandshakeRejected
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd, CallStart, Source

#: Asterisk format name -> (encoding, sample rate); slin is host order (little-endian on x86/ARM)
FORMATS: dict[str, tuple[str, int]] = {
    "ulaw": ("mulaw", 8000), "alaw": ("alaw", 8000), "slin": ("pcm_s16le", 8000),
    "slin12": ("pcm_s16le", 12000), "slin16": ("pcm_s16le", 16000),
    "slin24": ("pcm_s16le", 24000), "slin32": ("pcm_s16le", 32000),
    "slin44": ("pcm_s16le", 44100), "slin48": ("pcm_s16le", 48000),
    "slin96": ("pcm_s16le", 96000), "slin192": ("pcm_s16le", 192000)}
#: events that need no action from a listen-only consumer
IGNORED = {"MEDIA_XOFF", "MEDIA_XON", "QUEUE_DRAINED", "STATUS", "MEDIA_BUFFERING_COMPLETED",
           "MEDIA_MARK_PROCESSED"}
EVENT_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}\Z")


@dataclass(frozen=True)
class Control:
    """One control event: its name and fields (plain-text ``key:value`` pairs or JSON)."""

    event: str
    fields: dict[str, Any]


def parse_control(text: str) -> Control:
    """Parse a TEXT frame in either control format (ProtocolError if malformed)."""
    body = text.strip()
    if body.startswith("{"):
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise ProtocolError("bad_json", "control message is not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
            raise ProtocolError("bad_message", "JSON control message needs an 'event' string")
        event = doc.pop("event")
        fields = doc
    else:
        event, *tokens = body.split() or [""]
        fields = {}
        for tok in tokens:
            key, sep, value = tok.partition(":")
            if sep and key:
                fields[key] = value
            else:
                fields.setdefault("args", []).append(tok)
    if not EVENT_RE.match(event):
        raise ProtocolError("bad_message", f"invalid control event name {event[:40]!r}")
    return Control(event, fields)


@dataclass(frozen=True)
class MediaStart:
    """The ``MEDIA_START`` event."""

    connection_id: str
    channel: str
    channel_id: str
    format: str
    encoding: str
    sample_rate: int
    optimal_frame_size: int | None
    ptime: int | None
    variables: dict[str, str]

    @property
    def call_id(self) -> str:
        """The channel's unique id (Asterisk >= 20.17/21.12/22.7/23.1), else the connection id."""
        return self.channel_id or self.connection_id


def _opt_int(fields: dict[str, Any], key: str) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ProtocolError("bad_message", f"MEDIA_START '{key}' must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON Infinity
        raise ProtocolError("bad_message", f"MEDIA_START '{key}' must be an integer") from None
    if not 0 <= number <= 1_000_000:
        raise ProtocolError("bad_message", f"MEDIA_START '{key}' out of range")
    return number


def _opt_str(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key, "")
    if not isinstance(value, str) or len(value) > 256:
        raise ProtocolError("bad_message", f"MEDIA_START '{key}' must be a short string")
    return value


def parse_media_start(ctrl: Control) -> MediaStart:
    """Validate a ``MEDIA_START`` event (ProtocolError if unusable)."""
    if ctrl.event != "MEDIA_START":
        raise ProtocolError("bad_message", f"expected MEDIA_START first, got {ctrl.event}")
    f = ctrl.fields
    connection_id, channel_id = _opt_str(f, "connection_id"), _opt_str(f, "channel_id")
    if not (connection_id or channel_id):
        raise ProtocolError("bad_message", "MEDIA_START has neither channel_id nor "
                            "connection_id")
    fmt = _opt_str(f, "format")
    if fmt not in FORMATS:
        raise ProtocolError("unsupported_format", f"format {fmt[:32]!r} is not supported; "
                            f"dial with c(ulaw), c(alaw) or c(slin...)")
    variables = f.get("channel_variables", {})
    if not isinstance(variables, dict):
        raise ProtocolError("bad_message", "'channel_variables' must be an object")
    encoding, rate = FORMATS[fmt]
    return MediaStart(connection_id, _opt_str(f, "channel"), channel_id, fmt, encoding, rate,
                      _opt_int(f, "optimal_frame_size"), _opt_int(f, "ptime"),
                      {str(k): str(v) for k, v in variables.items()})


class AsteriskWsConfig(GatewayConfig):
    """``[gateways.asterisk_ws]`` settings (see docs/gateways/asterisk_ws.md)."""

    path: str = "/v1/gateways/asterisk"
    username: str = ""
    password: str = ""
    token: str = ""
    ani_variable: str = "NES2NET_ANI"
    dnis_variable: str = "NES2NET_DNIS"


class AsteriskWebSocketGateway(Gateway):
    """Asterisk chan_websocket media stream (listen-only)."""

    name = "asterisk_ws"
    transport = "websocket"
    Config = AsteriskWsConfig
    subprotocols = ("media",)

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: AsteriskWsConfig = config  # type: ignore[assignment]

    def check_config(self) -> None:
        """Basic credentials come in pairs; a secret is required when auth is."""
        check_roles(self.cfg, self.name)
        check_basic_pair(self, self.cfg.username, self.cfg.password)
        if self.cfg.token and len(self.cfg.token) < 16:
            raise ConfigError("gateways.asterisk_ws.token: must be at least 16 characters")
        require_secret(self, "password", self.cfg.password or self.cfg.token)

    def check_handshake(self, request: Request, remote: str | None) -> None:
        """Basic credentials or the token (Bearer header or ``token`` query parameter)."""
        cfg = self.cfg
        if cfg.auth == "off" or not (cfg.password or cfg.token):
            return
        headers = request.headers
        ok = bool(cfg.password) and basic_auth_ok(headers, cfg.username, cfg.password)
        if cfg.token:
            ok |= secret_equal(bearer_token(headers), cfg.token)
            ok |= secret_equal(query_params(request.path).get("token"), cfg.token)
        if not ok:
            raise HandshakeRejected(401, "missing or invalid credentials")

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """One channel's media stream: MEDIA_START, then audio until Asterisk closes."""
        await serve_ws_call(self, conn, lambda handle: self._run(conn, handle))

    async def _run(self, conn: ServerConnection, handle: CallHandle) -> CallEnd:
        try:
            first = await ws_receive(self, conn, started=False)
            if isinstance(first, bytes):
                raise ProtocolError("audio_before_start", "audio before MEDIA_START")
            self._start(handle, parse_media_start(parse_control(first)), conn)
            guard = RateGuard(self.limits)
            while True:
                msg = await ws_receive(self, conn, started=True)
                if isinstance(msg, bytes):
                    feed(handle, msg)
                    guard.check(handle)
                    continue
                ctrl = parse_control(msg)
                if ctrl.event == "MEDIA_START":
                    raise ProtocolError("bad_message", "MEDIA_START sent twice")
                if ctrl.event == "HANGUP":
                    return CallEnd("stop", "HANGUP event")
                if ctrl.event == "DTMF_END":
                    self.log.debug("dtmf", call_id=handle.call_id, digit=ctrl.fields.get("digit"))
                elif ctrl.event == "ERROR":
                    self.log.warning("asterisk reported an error", call_id=handle.call_id,
                                     error=str(ctrl.fields.get("error_text", ""))[:200])
                elif ctrl.event not in IGNORED:
                    self.log.debug("ignoring unknown event", name=ctrl.event)
        except ConnectionClosedOK:
            return CallEnd("stop", "websocket closed by asterisk")

    def _start(self, handle: CallHandle, ms: MediaStart, conn: ServerConnection) -> None:
        roles = (self.cfg.customer_role,)
        custom: dict[str, Any] = {"channel": ms.channel, "format": ms.format}
        if ms.optimal_frame_size is not None:
            custom["optimal_frame_size"] = ms.optimal_frame_size
        if ms.ptime is not None:
            custom["ptime"] = ms.ptime
        if ms.variables:
            custom["channel_variables"] = ms.variables
        meta: dict[str, Any] = {"provider": "asterisk_ws", "provider_call_id": ms.call_id,
                                "provider_stream_id": ms.connection_id}
        for key, var in (("ani", self.cfg.ani_variable), ("dnis", self.cfg.dnis_variable)):
            if var and ms.variables.get(var):
                meta[key] = ms.variables[var]
        meta["custom"] = custom
        check_metadata_size(meta, self.limits.max_metadata_bytes)
        handle.start(CallStart(ms.call_id, ms.encoding, ms.sample_rate, roles,  # type: ignore[arg-type]
                               score_roles(self.cfg, roles),
                               Source("gateway", self.name, remote_of(conn)), meta))
