"""Exotel AgentStream gateway (Stream and Voicebot applets, ``calls/connect``), listen only.

Exotel dials the service over WebSocket and sends JSON text messages: ``connected``,
``start`` (``stream_sid``, ``call_sid``, ``account_sid``, ``from``, ``to``,
``custom_parameters``, ``media_format``), ``media`` (base64 audio: 16-bit little-endian PCM,
8 kHz by default, 16 or 24 kHz with ``?sample-rate=`` in the URL; μ-law or L16 with the
applet's ``MediaFormat``; a ``track`` when both tracks are streamed), ``dtmf``, ``mark``,
``stop``. The upgrade is authenticated with HTTP Basic (the API key and token written in the
``wss://`` URL). See docs/gateways/exotel.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from nes2net_gateways._auth import (
    basic_auth_ok,
    check_basic_pair,
    query_params,
    require_secret,
)
from nes2net_gateways._common import (
    AGENT_ROLE,
    b64decode,
    call_metadata,
    call_start,
    check_roles,
    parse_json_object,
    remote_of,
    serve_ws_call,
)
from nes2net_gateways._json_media import (
    json_object,
    json_uint,
    serve_tracks,
    stream_call_id,
)
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig, HandshakeRejected
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

TRACKS = ("inbound", "outbound")
RATES = (8000, 16000, 24000)
RATE_PARAM = "sample-rate"
#: media_format encodings -> the service's encoding ("base64": the applets' raw/slin PCM)
ENCODINGS = {"base64": "pcm_s16le", "slin": "pcm_s16le", "audio/x-l16": "pcm_s16le",
             "audio/l16": "pcm_s16le", "pcm": "pcm_s16le", "audio/x-mulaw": "mulaw",
             "mulaw": "mulaw", "audio/pcmu": "mulaw"}


class ExotelConfig(GatewayConfig):
    """``[gateways.exotel]`` settings.

    Attributes:
        username / password: HTTP Basic credentials: the API key and token written in the
            applet's URL (``wss://<key>:<token>@host/path``).
        customer_track: the track carrying the customer (``inbound``: the caller).
        stream_in_call_id: call id ``<call_sid>:<stream_sid>`` (True) or just the call SID.
    """

    path: str = "/v1/gateways/exotel"
    username: str = ""
    password: SecretStr = SecretStr("")
    customer_track: Literal["inbound", "outbound"] = "inbound"
    stream_in_call_id: bool = True


# --------------------------------------------------------------------------- messages (pure)

@dataclass(frozen=True)
class ExotelStart:
    """A ``start`` message (``sample_rate`` None: not given, the URL's or 8 kHz applies)."""

    sequence: int | None
    call_sid: str
    stream_sid: str
    account_sid: str | None
    caller: str | None
    called: str | None
    encoding: str
    sample_rate: int | None
    custom: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExotelMedia:
    """A ``media`` message (the decoded payload of one track)."""

    sequence: int | None
    stream_sid: str | None
    track: str
    payload: bytes


@dataclass(frozen=True)
class ExotelEvent:
    """Any other message (``connected``, ``dtmf``, ``mark``, ``stop``, unknown events)."""

    event: str
    sequence: int | None
    stream_sid: str | None


ExotelMessage = ExotelStart | ExotelMedia | ExotelEvent


def _opt_str(obj: dict[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise ProtocolError("bad_message", f"{what}: '{key}' must be a string")
    return value


def parse_media_format(fmt: Any) -> tuple[str, int | None]:
    """(encoding, sample rate or None) of a ``media_format`` (absent: slin, rate unknown)."""
    if fmt is None:
        return "pcm_s16le", None
    fmt = json_object(fmt, "start.media_format")
    raw = fmt.get("encoding", "base64")
    if not isinstance(raw, str):
        raise ProtocolError("unsupported_format", "media_format.encoding must be a string")
    name, _, params = raw.strip().lower().partition(";")
    rate: Any = fmt.get("sample_rate")
    if params.startswith("rate=") and rate is None:
        rate = params[5:]
    if name not in ENCODINGS:
        raise ProtocolError("unsupported_format", f"media_format encoding {raw[:40]!r}: "
                            "Exotel streams slin (base64), audio/L16 or audio/x-mulaw")
    rate = json_uint(rate, "media_format.sample_rate")
    if rate is not None and rate not in RATES:
        raise ProtocolError("unsupported_format", f"sample rate {rate} Hz: Exotel streams "
                            "8000, 16000 or 24000 Hz")
    if ENCODINGS[name] == "mulaw" and rate not in (None, 8000):
        raise ProtocolError("unsupported_format", "μ-law is 8000 Hz")
    return ENCODINGS[name], rate


def _parse_start(msg: dict[str, Any], seq: int | None) -> ExotelStart:
    start = json_object(msg.get("start"), "start.start")
    call_sid = _opt_str(start, "call_sid", "start")
    stream_sid = _opt_str(start, "stream_sid", "start") or _opt_str(msg, "stream_sid", "start")
    if call_sid is None or stream_sid is None:
        raise ProtocolError("bad_message", "start: 'call_sid' and 'stream_sid' are required")
    custom = json_object(start.get("custom_parameters") or {}, "start.custom_parameters")
    encoding, rate = parse_media_format(start.get("media_format"))
    return ExotelStart(seq, call_sid, stream_sid, _opt_str(start, "account_sid", "start"),
                       _opt_str(start, "from", "start"), _opt_str(start, "to", "start"),
                       encoding, rate, custom)


def parse_message(text: str | bytes, max_bytes: int) -> ExotelMessage:
    """Parse one Exotel AgentStream message; raises only ProtocolError."""
    msg = parse_json_object(text, max_bytes, "Exotel message")
    event = msg.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError("bad_message", "an Exotel message needs a string 'event'")
    seq = json_uint(msg.get("sequence_number"), "sequence_number")
    stream_sid = msg.get("stream_sid")
    if stream_sid is not None and not isinstance(stream_sid, str):
        raise ProtocolError("bad_message", "'stream_sid' must be a string")
    if event == "start":
        return _parse_start(msg, seq)
    if event == "media":
        media = json_object(msg.get("media"), "media.media")
        track = media.get("track", msg.get("track", "inbound"))
        if track not in TRACKS:
            raise ProtocolError("bad_message", f"media: unknown track {str(track)[:20]!r}")
        json_uint(media.get("chunk"), "media.chunk")
        return ExotelMedia(seq, stream_sid, track, b64decode(media.get("payload"),
                                                             "media.payload"))
    return ExotelEvent(event[:40], seq, stream_sid)


# --------------------------------------------------------------------------- the gateway

class ExotelGateway(Gateway):
    """Exotel AgentStream (listen only; DTMF, marks and clears are ignored)."""

    name = "exotel"
    transport = "websocket"
    Config = ExotelConfig

    def check_config(self) -> None:
        """Require Basic credentials when authentication is enforced."""
        cfg: ExotelConfig = self.config  # type: ignore[assignment]
        check_roles(cfg, self.name)
        check_basic_pair(self, cfg.username, cfg.password.get_secret_value())
        require_secret(self, "password", cfg.password.get_secret_value())
        if not cfg.username or cfg.auth == "off":
            self.log.warning("Exotel stream authentication is off (no username/password or "
                             "auth = \"off\"): allow only Exotel's addresses at the firewall")

    def check_handshake(self, request: Request, remote: str | None) -> None:
        """Refuse upgrades without the configured Basic credentials (HTTP 401)."""
        cfg: ExotelConfig = self.config  # type: ignore[assignment]
        if cfg.auth == "off" or not cfg.username:
            return
        if not basic_auth_ok(request.headers, cfg.username, cfg.password.get_secret_value()):
            raise HandshakeRejected(401, "missing or invalid Basic credentials")

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """Serve one Exotel stream."""
        await serve_ws_call(self, conn, lambda handle: self._stream(conn, handle))

    def _start(self, conn: ServerConnection, handle: CallHandle, msg: ExotelStart) -> None:
        cfg: ExotelConfig = self.config  # type: ignore[assignment]
        rate = msg.sample_rate
        if rate is None:  # the applet's ?sample-rate= (Exotel's own parameter) or 8 kHz
            given = query_params(conn.request.path if conn.request else "").get(RATE_PARAM)
            rate = next((r for r in RATES if str(r) == given), RATES[0])
        if msg.encoding == "mulaw":
            rate = 8000
        call_id = stream_call_id(cfg, msg.call_sid, msg.stream_sid)
        meta = call_metadata(self.name, msg.call_sid, stream_id=msg.stream_sid,
                             ani=msg.caller, dnis=msg.called, custom=msg.custom,
                             account_id=msg.account_sid)
        handle.start(call_start(self, call_id=call_id, encoding=msg.encoding, sample_rate=rate,
                                channels=(cfg.customer_role, AGENT_ROLE), metadata=meta,
                                remote=remote_of(conn)))

    async def _stream(self, conn: ServerConnection, handle: CallHandle) -> CallEnd:
        def start(msg: ExotelStart) -> str:
            self._start(conn, handle, msg)
            return msg.stream_sid

        return await serve_tracks(self, conn, handle, provider="Exotel", parse=parse_message,
                                  start_type=ExotelStart, media_type=ExotelMedia,
                                  on_start=start, id_attr="stream_sid", id_name="stream_sid")
