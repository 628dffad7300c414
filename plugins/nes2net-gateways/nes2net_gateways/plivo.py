"""Plivo audio streams gateway (``<Stream>`` XML element or the Stream REST API), listen only.

Plivo dials the service and sends JSON text messages: ``start`` (``callId``, ``streamId``,
``mediaFormat``, ``extra_headers``), ``media`` (base64 audio of one track), ``dtmf``,
``playedStream``, ``clearedAudio``; the stream ends when Plivo closes the socket. Plivo
documents no signature on the stream, so a shared token authenticates it: in the URL query
(checked on the upgrade) or in ``extraHeaders`` (checked on ``start``, before any audio).
See docs/gateways/plivo.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection

from nes2net_gateways._common import (
    AGENT_ROLE,
    QueryTokenGateway,
    b64decode,
    call_metadata,
    call_start,
    parse_json_object,
    remote_of,
)
from nes2net_gateways._json_media import (
    json_object,
    json_uint,
    serve_tracks,
    stream_call_id,
)
from nes2net_stream.gateways.api import CallHandle, GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

TRACKS = ("inbound", "outbound")


class PlivoConfig(GatewayConfig):
    """``[gateways.plivo]`` settings.

    Attributes:
        token: shared secret (letters and digits: Plivo's ``extraHeaders`` allows no others).
        token_key: name of the query parameter / ``extraHeaders`` key carrying it.
        customer_track: the track carrying the customer (``inbound`` for inbound calls).
        stream_in_call_id: call id ``<callId>:<streamId>`` (True) or just the callId.
        l16_byte_order: byte order of ``audio/x-l16`` payloads (Plivo does not document it).
    """

    path: str = "/v1/gateways/plivo"
    token: SecretStr = SecretStr("")
    token_key: str = "token"
    customer_track: Literal["inbound", "outbound"] = "inbound"
    stream_in_call_id: bool = True
    l16_byte_order: Literal["le", "be"] = "le"


# --------------------------------------------------------------------------- messages (pure)

@dataclass(frozen=True)
class PlivoStart:
    """A ``start`` message."""

    sequence: int | None
    call_id: str
    stream_id: str
    encoding: str  # "l16" or "mulaw"
    sample_rate: int
    account_id: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlivoMedia:
    """A ``media`` message: one track's audio."""

    sequence: int | None
    stream_id: str | None
    track: str
    payload: bytes


@dataclass(frozen=True)
class PlivoEvent:
    """Any other message (``dtmf``, ``playedStream``, ``clearedAudio``, ``stop``...)."""

    event: str
    sequence: int | None


PlivoMessage = PlivoStart | PlivoMedia | PlivoEvent




def parse_extra_headers(value: Any) -> dict[str, str]:
    """``extra_headers`` (``"a=1;b=2"`` or ``"a=1,b=2"``, or an object) as a dict."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}
    if not isinstance(value, str):
        raise ProtocolError("bad_message", "extra_headers must be a string of key=value pairs")
    out: dict[str, str] = {}
    for item in value.replace(",", ";").split(";"):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = val.strip()
    return out


def _media_format(fmt: Any) -> tuple[str, int]:
    if fmt is None:
        return "l16", 8000  # Plivo's default contentType audio/x-l16;rate=8000
    fmt = json_object(fmt, "start.mediaFormat")
    enc = fmt.get("encoding", "audio/x-l16")
    rate: Any = fmt.get("sampleRate")
    if isinstance(enc, str) and ";" in enc:  # contentType style "audio/x-l16;rate=16000"
        enc, _, param = enc.partition(";")
        if rate is None and param.strip().startswith("rate="):
            rate = param.strip()[5:]
    kind = {"audio/x-l16": "l16", "audio/l16": "l16", "audio/x-mulaw": "mulaw"}.get(
        enc.strip().lower() if isinstance(enc, str) else "")
    if kind is None:
        raise ProtocolError("unsupported_format", f"mediaFormat.encoding {enc!r}: use "
                            "audio/x-l16 or audio/x-mulaw")
    rate = 8000 if rate is None else rate
    if isinstance(rate, str) and rate.isascii() and rate.isdigit() and len(rate) <= 6:
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ProtocolError("unsupported_format", f"mediaFormat.sampleRate {rate!r}")
    return kind, rate


def parse_message(text: str | bytes, max_bytes: int) -> PlivoMessage:
    """Parse one Plivo audio stream message; raises only ProtocolError."""
    msg = parse_json_object(text, max_bytes, "Plivo message")
    event = msg.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError("bad_message", "a Plivo message needs a string 'event'")
    seq = json_uint(msg.get("sequenceNumber"), "sequenceNumber")
    if event == "start":
        start = json_object(msg.get("start"), "start.start")
        call_id, stream_id = start.get("callId"), start.get("streamId")
        if not isinstance(call_id, str) or not call_id:
            raise ProtocolError("bad_message", "start: 'callId' must be a string")
        if not isinstance(stream_id, str) or not stream_id:
            raise ProtocolError("bad_message", "start: 'streamId' must be a string")
        kind, rate = _media_format(start.get("mediaFormat"))
        account = start.get("accountId")
        return PlivoStart(seq, call_id, stream_id, kind, rate,
                          account if isinstance(account, str) and account else None,
                          parse_extra_headers(msg.get("extra_headers")))
    if event == "media":
        media = json_object(msg.get("media"), "media.media")
        track = media.get("track", "inbound")
        if track not in TRACKS:
            raise ProtocolError("bad_message", f"media: unknown track {track!r}")
        stream_id = msg.get("streamId")
        if stream_id is not None and not isinstance(stream_id, str):
            raise ProtocolError("bad_message", "'streamId' must be a string")
        return PlivoMedia(seq, stream_id, track, b64decode(media.get("payload"),
                                                           "media.payload"))
    return PlivoEvent(event, seq)


# --------------------------------------------------------------------------- the gateway

class PlivoGateway(QueryTokenGateway):
    """Plivo audio streams (listen only; DTMF and playback acknowledgements are ignored)."""

    name = "plivo"
    transport = "websocket"
    Config = PlivoConfig

    def _start(self, handle: CallHandle, msg: PlivoStart, remote: str | None,
               authed: bool) -> None:
        cfg: PlivoConfig = self.config  # type: ignore[assignment]
        custom = dict(msg.extra_headers)
        self._take_token(custom, authed, "extraHeaders key")
        call_id = stream_call_id(cfg, msg.call_id, msg.stream_id)
        meta = call_metadata(self.name, msg.call_id, stream_id=msg.stream_id, custom=custom,
                             account_id=msg.account_id)
        encoding = msg.encoding
        if encoding == "l16":
            encoding = "pcm_s16le" if cfg.l16_byte_order == "le" else "pcm_s16be"
        handle.start(call_start(self, call_id=call_id, encoding=encoding,
                                sample_rate=msg.sample_rate,
                                channels=(cfg.customer_role, AGENT_ROLE), metadata=meta,
                                remote=remote))

    async def _stream(self, conn: ServerConnection, handle: CallHandle, authed: bool
                      ) -> CallEnd:
        remote = remote_of(conn)

        def start(msg: PlivoStart) -> str:
            self._start(handle, msg, remote, authed)
            return msg.stream_id

        return await serve_tracks(self, conn, handle, provider="Plivo", parse=parse_message,
                                  start_type=PlivoStart, media_type=PlivoMedia,
                                  on_start=start, id_attr="stream_id", id_name="streamId")
