"""Bandwidth Programmable Voice media streams gateway (BXML ``<StartStream>``), listen only.

Bandwidth dials the ``destination`` WebSocket and sends JSON text messages with an
``eventType``: ``start`` (``metadata``: account, call and stream ids, the tracks and their
``mediaFormat``; ``streamParams``: the ``<StreamParam>`` pairs), ``media`` (``track`` and a
base64 μ-law ``payload``), ``stop``. Bandwidth documents no credentials on the stream itself,
so a shared token authenticates it: in the ``destination`` URL's query (checked on the
upgrade) or as a ``<StreamParam>`` (checked on ``start``, before any audio). See
docs/gateways/bandwidth.md.
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
    warn_untracked_customer,
)
from nes2net_stream.gateways.api import CallHandle, GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

TRACKS = ("inbound", "outbound")
#: (encoding lower-cased, sampleRate) -> internal encoding; Bandwidth streams μ-law 8 kHz
FORMATS: dict[tuple[str, int], str] = {("audio/pcmu", 8000): "mulaw"}


class BandwidthConfig(GatewayConfig):
    """``[gateways.bandwidth]`` settings.

    Attributes:
        token: shared secret, in the ``destination`` query or a ``<StreamParam>``.
        token_key: name of the query parameter / ``<StreamParam>`` carrying it.
        customer_track: the track carrying the customer (``inbound`` for inbound calls).
        stream_in_call_id: call id ``<callId>:<streamId>`` (True) or just the callId.
    """

    path: str = "/v1/gateways/bandwidth"
    token: SecretStr = SecretStr("")
    token_key: str = "token"
    customer_track: Literal["inbound", "outbound"] = "inbound"
    stream_in_call_id: bool = True


# --------------------------------------------------------------------------- messages (pure)

@dataclass(frozen=True)
class BandwidthStart:
    """A ``start`` message."""

    sequence: int | None
    call_id: str
    stream_id: str
    account_id: str | None
    stream_name: str | None
    tracks: tuple[str, ...]
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BandwidthMedia:
    """A ``media`` message: one track's μ-law audio."""

    sequence: int | None
    track: str
    payload: bytes
    stream_id: None = None  # media messages name no stream; one stream per connection


@dataclass(frozen=True)
class BandwidthEvent:
    """Any other message (``stop``, events Bandwidth may add later)."""

    event: str
    sequence: int | None


BandwidthMessage = BandwidthStart | BandwidthMedia | BandwidthEvent


def _text(obj: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_message", f"start: metadata '{key}' must be a non-empty string")
    return value


def _track(entry: Any) -> str:
    """One ``metadata.tracks`` entry: its name, once its media format is checked."""
    entry = json_object(entry, "start: metadata.tracks[]")
    name = entry.get("name")
    if name not in TRACKS:
        raise ProtocolError("bad_message", f"start: unknown track {name!r}")
    fmt = entry.get("mediaFormat")
    if fmt is not None:
        fmt = json_object(fmt, "start: tracks[].mediaFormat")
        enc, rate = fmt.get("encoding"), fmt.get("sampleRate", 8000)
        rate = json_uint(rate, "start: tracks[].mediaFormat.sampleRate")
        if (enc.lower() if isinstance(enc, str) else "", rate) not in FORMATS:
            raise ProtocolError("unsupported_format", f"track {name}: mediaFormat {enc!r} "
                                f"{rate!r} Hz; Bandwidth streams audio/PCMU 8000 Hz")
    return name


def _params(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    value = json_object(value, "start: streamParams")
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}


def _parse_start(msg: dict[str, Any], seq: int | None) -> BandwidthStart:
    meta = json_object(msg.get("metadata"), "start: metadata")
    tracks_raw = meta.get("tracks")
    if not isinstance(tracks_raw, list) or not tracks_raw or len(tracks_raw) > len(TRACKS):
        raise ProtocolError("bad_message", "start: metadata.tracks must list one or two tracks")
    tracks = tuple(_track(t) for t in tracks_raw)
    if len(set(tracks)) != len(tracks):
        raise ProtocolError("bad_message", "start: a track is listed twice")
    return BandwidthStart(seq, _text(meta, "callId") or "", _text(meta, "streamId") or "",
                          _text(meta, "accountId", required=False),
                          _text(meta, "streamName", required=False), tracks,
                          _params(msg.get("streamParams")))


def parse_message(text: str | bytes, max_bytes: int) -> BandwidthMessage:
    """Parse one Bandwidth media stream message; raises only ProtocolError."""
    msg = parse_json_object(text, max_bytes, "Bandwidth message")
    event = msg.get("eventType")
    if not isinstance(event, str) or not event:
        raise ProtocolError("bad_message", "a Bandwidth message needs a string 'eventType'")
    seq = json_uint(msg.get("sequenceNumber"), "sequenceNumber")
    if event == "start":
        return _parse_start(msg, seq)
    if event == "media":
        track = msg.get("track", "inbound")
        if track not in TRACKS:
            raise ProtocolError("bad_message", f"media: unknown track {track!r}")
        return BandwidthMedia(seq, track, b64decode(msg.get("payload"), "media.payload"))
    return BandwidthEvent(event, seq)


# --------------------------------------------------------------------------- the gateway

class BandwidthGateway(QueryTokenGateway):
    """Bandwidth media streams (listen only)."""

    name = "bandwidth"
    transport = "websocket"
    Config = BandwidthConfig

    def _start(self, handle: CallHandle, msg: BandwidthStart, remote: str | None,
               authed: bool) -> None:
        cfg: BandwidthConfig = self.config  # type: ignore[assignment]
        custom = dict(msg.params)
        self._take_token(custom, authed, "<StreamParam> named")
        call_id = stream_call_id(cfg, msg.call_id, msg.stream_id)
        if msg.stream_name and msg.stream_name != msg.stream_id:
            custom.setdefault("streamName", msg.stream_name)
        meta = call_metadata(self.name, msg.call_id, stream_id=msg.stream_id, custom=custom,
                             account_id=msg.account_id)
        warn_untracked_customer(self, msg.tracks, call_id)
        handle.start(call_start(self, call_id=call_id, encoding="mulaw", sample_rate=8000,
                                channels=(cfg.customer_role, AGENT_ROLE), metadata=meta,
                                remote=remote))

    async def _stream(self, conn: ServerConnection, handle: CallHandle, authed: bool
                      ) -> CallEnd:
        remote = remote_of(conn)
        started: tuple[str, ...] = ()

        def start(msg: BandwidthStart) -> str:
            nonlocal started
            self._start(handle, msg, remote, authed)
            started = msg.tracks
            return msg.stream_id

        def parse(text: str | bytes, max_bytes: int) -> BandwidthMessage:
            msg = parse_message(text, max_bytes)
            if isinstance(msg, BandwidthMedia) and started and msg.track not in started:
                raise ProtocolError("bad_message", f"media of track {msg.track!r}, which "
                                    f"start did not list ({', '.join(started)})")
            return msg

        return await serve_tracks(self, conn, handle, provider="Bandwidth", parse=parse,
                                  start_type=BandwidthStart, media_type=BandwidthMedia,
                                  on_start=start, id_attr="stream_id", id_name="streamId",
                                  closed=CallEnd("disconnect", "closed without a stop message"))
