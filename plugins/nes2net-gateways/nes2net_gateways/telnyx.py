"""Telnyx media streaming gateway (Call Control ``streaming_start`` or TeXML ``<Stream>``).

Telnyx dials the service and sends JSON text frames: ``connected``, ``start`` (``stream_id``,
``start.call_control_id``, ``media_format``), ``media`` (base64 RTP payload of one track),
``dtmf``, ``mark``, ``error``, ``stop``. Telnyx documents that media frame order is not
guaranteed, so frames are re-ordered per track by ``media.chunk`` within a small window.
PCMU, PCMA and L16 payloads are samples; G.722, Opus and AMR-WB payloads (``stream_codec``
for HD calls) are decoded per track, after re-ordering, by FFmpeg through PyAV
(``rtp_payload``; AMR-WB's packing, which the stream does not state, is read off its first
payload).
Authentication: the ``stream_auth_token`` given to Telnyx, checked on the upgrade. See
docs/gateways/telnyx.md.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, SecretStr
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from nes2net_gateways._auth import bearer_token, query_params, require_secret, secret_equal
from nes2net_gateways._common import (
    AGENT_ROLE,
    RateGuard,
    b64decode,
    call_metadata,
    call_start,
    check_roles,
    parse_json_object,
    remote_of,
    serve_ws_call,
)
from nes2net_gateways._json_media import (
    check_first_start,
    check_media,
    feed_track,
    json_messages,
    json_object,
    json_uint,
    stream_call_id,
)
from nes2net_gateways.rtp_payload import CODECS, PayloadDecoder
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig, HandshakeRejected
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

TRACKS = ("inbound", "outbound")
#: media_format.encoding -> internal encoding (L16 byte order is configurable) or, for the
#: compressed codecs, the key of ``rtp_payload.CODECS`` decoding them
ENCODINGS = {"PCMU": "mulaw", "AUDIO/X-MULAW": "mulaw", "PCMA": "alaw", "AUDIO/X-ALAW": "alaw",
             "L16": "l16", "AUDIO/L16": "l16", "AUDIO/X-L16": "l16",
             "G722": "G722", "AUDIO/G722": "G722", "OPUS": "OPUS", "AUDIO/OPUS": "OPUS",
             "AMR-WB": "AMR-WB", "AUDIO/AMR-WB": "AMR-WB"}
#: RTP clock rate of the decoded codecs (RFC 3551: G.722 on an 8 kHz clock; RFC 7587: Opus
#: 48 kHz; RFC 4867: AMR-WB 16 kHz)
CLOCK_RATES = {"G722": 8000, "OPUS": 48000, "AMR-WB": 16000}


class TelnyxConfig(GatewayConfig):
    """``[gateways.telnyx]`` settings.

    Attributes:
        stream_auth_token: the value given to Telnyx as ``stream_auth_token``.
        token_query_param: query parameter that may carry the token instead (``stream_url``
            such as ``wss://host/v1/gateways/telnyx?token=...``).
        customer_track: the track carrying the customer (``inbound`` for inbound calls).
        stream_in_call_id: call id ``<call_control_id>:<stream_id>`` (True) or the former.
        reorder_window: frames held per track to restore order (0: no re-ordering).
        l16_byte_order: byte order of ``L16`` payloads (RTP L16 is big-endian).
    """

    path: str = "/v1/gateways/telnyx"
    stream_auth_token: SecretStr = SecretStr("")
    token_query_param: str = "token"
    customer_track: Literal["inbound", "outbound"] = "inbound"
    stream_in_call_id: bool = True
    reorder_window: int = Field(10, ge=0, le=500)
    l16_byte_order: Literal["be", "le"] = "be"


# --------------------------------------------------------------------------- messages (pure)

@dataclass(frozen=True)
class TelnyxStart:
    """A ``start`` frame."""

    sequence: int | None
    call_control_id: str
    stream_id: str
    encoding: str
    sample_rate: int
    ani: str | None = None
    dnis: str | None = None
    account_id: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TelnyxMedia:
    """A ``media`` frame: one track's RTP payload and its position."""

    sequence: int | None
    track: str
    chunk: int | None
    payload: bytes


@dataclass(frozen=True)
class TelnyxEvent:
    """Any other frame (``connected``, ``dtmf``, ``mark``, ``error``, ``stop``...)."""

    event: str
    sequence: int | None
    detail: str | None = None


TelnyxMessage = TelnyxStart | TelnyxMedia | TelnyxEvent




def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _custom(value: Any) -> dict[str, Any]:
    """``custom_parameters`` as an object, or as a list of ``{name, value}`` pairs."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("name"), str)
                                       for p in value):
        return {p["name"]: p.get("value") for p in value}
    raise ProtocolError("bad_message", "start.custom_parameters must be an object or a list "
                        "of {name, value}")


def _parse_start(msg: dict[str, Any], seq: int | None) -> TelnyxStart:
    start = json_object(msg.get("start"), "start.start")
    ccid = start.get("call_control_id")
    stream_id = msg.get("stream_id") or start.get("stream_id")
    if not isinstance(ccid, str) or not ccid:
        raise ProtocolError("bad_message", "start: 'call_control_id' must be a string")
    if not isinstance(stream_id, str) or not stream_id:
        raise ProtocolError("bad_message", "start: 'stream_id' must be a string")
    fmt = json_object(start.get("media_format") or {}, "start.media_format")
    enc_name = fmt.get("encoding", "PCMU")
    enc = ENCODINGS.get(enc_name.upper()) if isinstance(enc_name, str) else None
    if enc is None:
        raise ProtocolError("unsupported_format", f"media_format.encoding {enc_name!r} is not "
                            "supported: set stream_codec to PCMU, PCMA, L16, G722, OPUS or "
                            "AMR-WB")
    if enc in CODECS and not CODECS[enc].available:
        raise ProtocolError("unsupported_format", f"media_format.encoding {enc_name!r} needs "
                            "PyAV (the 'webrtc' extra): set stream_codec to PCMU, PCMA or L16")
    rate = fmt.get("sample_rate", 8000)
    if isinstance(rate, str) and rate.isascii() and rate.isdigit() and len(rate) <= 6:
        rate = int(rate)
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ProtocolError("unsupported_format", f"media_format.sample_rate {rate!r}")
    channels = fmt.get("channels", 1)
    # an Opus stream may be declared stereo (RFC 7587 always names 2); it decodes to mono
    if channels not in ((1, "1", 2, "2") if enc == "OPUS" else (1, "1")):
        raise ProtocolError("unsupported_format", f"media_format.channels {channels!r}: "
                            "each Telnyx track is mono")
    custom = _custom(start.get("custom_parameters"))
    for key in ("client_state", "call_session_id"):
        if _opt_str(start.get(key)):
            custom = {**custom, key: start[key]}
    return TelnyxStart(seq, ccid, stream_id, enc, rate, _opt_str(start.get("from")),
                       _opt_str(start.get("to")), _opt_str(start.get("user_id")), custom)


def parse_message(text: str | bytes, max_bytes: int) -> TelnyxMessage:
    """Parse one Telnyx media streaming frame; raises only ProtocolError."""
    msg = parse_json_object(text, max_bytes, "Telnyx frame")
    event = msg.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError("bad_message", "a Telnyx frame needs a string 'event'")
    seq = json_uint(msg.get("sequence_number"), "sequence_number")
    if event == "start":
        return _parse_start(msg, seq)
    if event == "media":
        media = json_object(msg.get("media"), "media.media")
        track = media.get("track", "inbound")
        if track not in TRACKS:
            raise ProtocolError("bad_message", f"media: unknown track {track!r}")
        chunk = json_uint(media.get("chunk"), "media.chunk")
        return TelnyxMedia(seq, track, chunk, b64decode(media.get("payload"), "media.payload"))
    detail = None
    if event == "error":
        payload = msg.get("payload")
        detail = str(payload)[:300] if payload is not None else None
    return TelnyxEvent(event, seq, detail)


class ReorderBuffer:
    """Restores the order of one track's frames by chunk number within a bounded window.

    A frame that is next in order is released at once; frames ahead of a gap wait until the
    gap is filled or more than ``window`` frames are waiting (then the gap is given up as
    lost). Frames older than what was released are dropped (late or duplicate).

    Attributes:
        lost: frames skipped over when a gap was given up.
        late: frames dropped because they came after their place was passed.
        reordered: frames that arrived ahead of an earlier one.
    """

    def __init__(self, window: int):
        self.window = window
        self.next: int | None = None
        self._heap: list[tuple[int, bytes]] = []
        self._held: set[int] = set()
        self.lost = self.late = self.reordered = 0

    def push(self, chunk: int | None, payload: bytes) -> list[bytes]:
        """Add a frame; return the payloads now releasable, in order."""
        if chunk is None or self.window == 0:
            return [payload]
        if self.next is None:  # chunks count from 1; a late joiner starts where it is
            self.next = min(chunk, 1) if chunk <= self.window + 1 else chunk
        if chunk < self.next or chunk in self._held:
            self.late += 1
            return []
        if chunk > self.next:
            self.reordered += 1
        heapq.heappush(self._heap, (chunk, payload))
        self._held.add(chunk)
        out = self._drain()
        if len(self._heap) > self.window:
            first = self._heap[0][0]
            self.lost += first - self.next
            self.next = first
            out += self._drain()
        return out

    def _drain(self) -> list[bytes]:
        out = []
        while self._heap and self._heap[0][0] == self.next:
            chunk, payload = heapq.heappop(self._heap)
            self._held.discard(chunk)
            out.append(payload)
            self.next = chunk + 1
        return out

    def flush(self) -> list[bytes]:
        """Release everything still held, in order (end of the stream)."""
        out = []
        while self._heap:
            chunk, payload = heapq.heappop(self._heap)
            if self.next is not None:
                self.lost += chunk - self.next
            self.next = chunk + 1
            out.append(payload)
        self._held.clear()
        return out


# --------------------------------------------------------------------------- the gateway

class TelnyxGateway(Gateway):
    """Telnyx media streaming (listen only; marks and DTMF are ignored, errors logged)."""

    name = "telnyx"
    transport = "websocket"
    Config = TelnyxConfig

    def check_config(self) -> None:
        """Require ``stream_auth_token`` when authentication is enforced."""
        cfg: TelnyxConfig = self.config  # type: ignore[assignment]
        check_roles(cfg, self.name)
        require_secret(self, "stream_auth_token", cfg.stream_auth_token.get_secret_value())

    def check_handshake(self, request: Request, remote: str | None) -> None:
        """Refuse upgrades without the configured token (HTTP 401)."""
        cfg: TelnyxConfig = self.config  # type: ignore[assignment]
        expected = cfg.stream_auth_token.get_secret_value()
        if cfg.auth == "off" or not expected:
            return
        given = bearer_token(request.headers) or \
            query_params(request.path).get(cfg.token_query_param)
        if given is None:
            raise HandshakeRejected(401, "missing stream auth token")
        if not secret_equal(given, expected):
            raise HandshakeRejected(401, "invalid stream auth token")

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """Serve one Telnyx stream."""
        await serve_ws_call(self, conn, lambda handle: self._stream(conn, handle))

    def _start(self, handle: CallHandle, msg: TelnyxStart, remote: str | None) -> str:
        cfg: TelnyxConfig = self.config  # type: ignore[assignment]
        call_id = stream_call_id(cfg, msg.call_control_id, msg.stream_id)
        meta = call_metadata(self.name, msg.call_control_id, stream_id=msg.stream_id,
                             ani=msg.ani, dnis=msg.dnis, custom=msg.custom,
                             account_id=msg.account_id)
        encoding, rate = msg.encoding, msg.sample_rate
        if encoding == "l16":
            encoding = "pcm_s16be" if cfg.l16_byte_order == "be" else "pcm_s16le"
        elif encoding in CODECS:  # decoded here: the codec's own output, whatever was declared
            codec = CODECS[encoding]
            encoding, rate = codec.encoding, codec.rate(CLOCK_RATES[msg.encoding])
        handle.start(call_start(self, call_id=call_id, encoding=encoding,
                                sample_rate=rate,
                                channels=(cfg.customer_role, AGENT_ROLE), metadata=meta,
                                remote=remote))
        return call_id

    async def _stream(self, conn: ServerConnection, handle: CallHandle) -> CallEnd:
        cfg: TelnyxConfig = self.config  # type: ignore[assignment]
        remote = remote_of(conn)
        guard = RateGuard(self.limits)
        buffers = {t: ReorderBuffer(cfg.reorder_window) for t in TRACKS}
        decoders: dict[str, PayloadDecoder] = {}  # per track, for G.722 and Opus

        def play(track: str, payloads: list[bytes]) -> None:
            for p in payloads:
                if p and decoders:
                    p = decoders[track].decode(p)[0]
                if p:
                    feed_track(handle, cfg, track, p, guard)

        try:
            async for raw in json_messages(self, conn, handle, "Telnyx"):
                msg = parse_message(raw, self.limits.max_text_bytes)
                if isinstance(msg, TelnyxStart):
                    check_first_start(handle)
                    self._start(handle, msg, remote)
                    if msg.encoding in CODECS:
                        codec, clock = CODECS[msg.encoding], CLOCK_RATES[msg.encoding]
                        decoders.update((t, codec.decoder(clock)) for t in TRACKS)
                elif isinstance(msg, TelnyxMedia):
                    check_media(handle, None, None, "stream")
                    play(msg.track, buffers[msg.track].push(msg.chunk, msg.payload))
                elif msg.event == "error":
                    self.log.warning("Telnyx reported an error", detail=msg.detail,
                                     call_id=handle.call_id)
                elif msg.event == "stop":
                    for track, buf in buffers.items():
                        play(track, buf.flush())
                    return CallEnd("stop")
            return CallEnd("disconnect", "closed without a stop frame")
        finally:
            stats = {t: (b.reordered, b.late, b.lost) for t, b in buffers.items() if
                     b.reordered or b.late or b.lost}
            if stats:
                self.log.info("media order repaired", call_id=handle.call_id,
                              reordered_late_lost=stats)
            bad = {t: n for t, d in decoders.items() if (n := getattr(d, "errors", 0))}
            if bad:
                self.log.warning("undecodable payloads dropped", call_id=handle.call_id,
                                 per_track=bad)
