"""Genesys AudioHook protocol v2: message parsing, validation and server replies (no I/O).

Message shapes follow the AudioHook reference implementation
(purecloudlabs/audiohook-reference-implementation, ``app/audiohook/src/protocol/message.ts``
and ``validators.ts``): every message is ``{version: "2", id, type, seq, parameters}``; client
messages add ``serverseq`` and ``position`` (an ISO-8601 duration such as ``PT12.3S``), server
messages add ``clientseq``. ``seq`` starts at 1 and rises by exactly 1 on each side, and
``parameters`` is always present (``{}`` when empty).

Every parser here raises :class:`~nes2net_stream.service.errors.ProtocolError` only; its
message becomes the ``info`` of the ``disconnect`` sent back to Genesys.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from nes2net_stream.service.errors import ProtocolError

NULL_UUID = "00000000-0000-0000-0000-000000000000"
# \Z, not $ ("$" also matches before a trailing newline); [0-9], not \d (Unicode digits)
UUID_RE = re.compile(r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}"
                     r"-[0-9a-fA-F]{12}|00000000-0000-0000-0000-000000000000)\Z")
DURATION_RE = re.compile(r"^PT([0-9]{0,12}\.)?[0-9]{1,12}S\Z")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}-[A-Za-z]{2,3}\Z")
CLIENT_TYPES = ("open", "close", "ping", "paused", "resumed", "discarded", "update", "error")
CLOSE_REASONS = ("end", "error", "disconnect", "reconnect")
FORMATS = {"PCMU": 1, "L16": 2}  # bytes per sample
CHANNEL_NAMES = ("external", "internal")
MAX_SEQ = 2 ** 53 - 1

__all__ = [
    "NULL_UUID", "AudioHookSession", "ClientMessage", "Media", "OpenRequest", "audio_frames",
    "check_parameters", "choose_media", "format_duration", "is_uuid", "parse_client_message",
    "parse_duration", "parse_open",
]


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_message", message)


def is_uuid(value: Any) -> bool:
    """True for an RFC 4122 UUID string (or the null UUID), as AudioHook requires."""
    return isinstance(value, str) and UUID_RE.match(value) is not None


def _is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEQ


def parse_duration(value: Any) -> float:
    """Seconds of an AudioHook duration such as ``PT1.25S``."""
    if not isinstance(value, str) or not DURATION_RE.match(value):
        raise _bad(f"invalid duration {str(value)[:40]!r} (expected e.g. 'PT1.5S')")
    return float(value[2:-1])


def format_duration(seconds: float) -> str:
    """AudioHook duration of ``seconds`` (millisecond resolution)."""
    text = f"{max(0.0, seconds):.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


@dataclass(frozen=True)
class ClientMessage:
    """One validated client (Genesys) message."""

    type: str
    id: str
    seq: int
    serverseq: int
    position: float
    parameters: dict[str, Any]


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse and structurally validate a client message (JSON text)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "text message is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _bad("message must be a JSON object")
    if doc.get("version") != "2":
        raise _bad(f"unsupported protocol version {str(doc.get('version'))[:20]!r}")
    if not is_uuid(doc.get("id")):
        raise _bad("message 'id' must be a UUID")
    kind = doc.get("type")
    if not isinstance(kind, str):
        raise _bad("message 'type' must be a string")
    if not _is_seq(doc.get("seq")) or not _is_seq(doc.get("serverseq")):
        raise _bad("'seq' and 'serverseq' must be non-negative integers")
    params = doc.get("parameters")
    if not isinstance(params, dict):
        raise _bad(f"'{kind[:40]}' message has no 'parameters' object")
    position = parse_duration(doc.get("position"))
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_message",
                            f"'{kind[:40]}' is not a supported client message")
    return ClientMessage(kind, doc["id"], doc["seq"], doc["serverseq"], position, params)


def check_parameters(msg: ClientMessage) -> None:
    """Validate the parameters of a non-``open`` message (see :func:`parse_open`)."""
    p = msg.parameters
    if msg.type == "close" and p.get("reason") not in CLOSE_REASONS:
        raise _bad(f"'close' reason must be one of {list(CLOSE_REASONS)}")
    if msg.type in ("discarded", "resumed"):
        parse_duration(p.get("start"))
        parse_duration(p.get("discarded"))
    if msg.type == "ping" and "rtt" in p:
        parse_duration(p["rtt"])
    if msg.type == "update" and not (isinstance(p.get("language"), str)
                                     and LANGUAGE_RE.match(p["language"])):
        raise _bad("'update' needs a 'language' code such as 'en-US'")
    if msg.type == "error":
        code = p.get("code")
        if not (isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 10000) \
                or not isinstance(p.get("message"), str):
            raise _bad("'error' needs an integer 'code' (400..9999) and a 'message'")


@dataclass(frozen=True)
class Media:
    """One audio format: ``PCMU`` or ``L16``, channel names in interleaved order, rate."""

    format: str
    channels: tuple[str, ...]
    rate: int

    def to_json(self) -> dict[str, Any]:
        """The ``media`` entry echoed in ``opened``."""
        return {"type": "audio", "format": self.format, "channels": list(self.channels),
                "rate": self.rate}

    @property
    def frame_bytes(self) -> int:
        """Bytes per interleaved sample frame."""
        return FORMATS[self.format] * len(self.channels)


def _parse_media(entry: Any) -> Media | None:
    """A supported offer, or None for a well-formed offer we cannot take (e.g. another codec)."""
    if not isinstance(entry, dict):
        raise _bad("each 'media' offer must be an object")
    channels, rate = entry.get("channels"), entry.get("rate")
    fmt = entry.get("format")
    if entry.get("type") != "audio" or not isinstance(fmt, str) or fmt not in FORMATS:
        return None
    if not (isinstance(channels, list) and 1 <= len(channels) <= 2
            and all(c in CHANNEL_NAMES for c in channels) and len(set(channels)) == len(channels)):
        raise _bad("media 'channels' must list 'external' and/or 'internal' once each")
    if not (isinstance(rate, int) and not isinstance(rate, bool) and 8000 <= rate <= 48000):
        return None
    return Media(entry["format"], tuple(channels), rate)


@dataclass(frozen=True)
class OpenRequest:
    """Validated ``open`` parameters."""

    organization_id: str
    conversation_id: str
    participant: dict[str, str]
    media: tuple[Media, ...]
    language: str | None
    custom_config: dict[str, Any] | None
    continued_sessions: int

    @property
    def is_probe(self) -> bool:
        """A connection probe (Genesys tests the integration with null ids)."""
        return NULL_UUID in (self.conversation_id, self.participant.get("id"))


def parse_open(params: dict[str, Any]) -> OpenRequest:
    """Validate ``open`` parameters (organizationId, conversationId, participant, media ...)."""
    if not is_uuid(params.get("organizationId")) or not is_uuid(params.get("conversationId")):
        raise _bad("'open' needs UUID 'organizationId' and 'conversationId'")
    part = params.get("participant")
    if not isinstance(part, dict) or not is_uuid(part.get("id")):
        raise _bad("'open' needs a 'participant' object with a UUID 'id'")
    participant = {"id": part["id"]}
    for key in ("ani", "aniName", "dnis"):
        value = part.get(key, "")
        if not isinstance(value, str):
            raise _bad(f"participant '{key}' must be a string")
        participant[key] = value
    offers = params.get("media")
    if not isinstance(offers, list):
        raise _bad("'open' needs a 'media' list")
    media = tuple(m for m in (_parse_media(e) for e in offers) if m is not None)
    language = params.get("language")
    if language is not None and not (isinstance(language, str) and LANGUAGE_RE.match(language)):
        raise _bad("'language' must be a code such as 'en-US'")
    custom = params.get("customConfig")
    if custom is not None and not isinstance(custom, dict):
        raise _bad("'customConfig' must be an object")
    continued = params.get("continuedSessions", [])
    if not isinstance(continued, list):
        raise _bad("'continuedSessions' must be a list")
    return OpenRequest(params["organizationId"], params["conversationId"], participant, media,
                       language, custom, len(continued))


def choose_media(offers: tuple[Media, ...], prefer_format: str = "PCMU") -> Media | None:
    """The offer to accept: the customer (``external``) channel first, stereo, preferred codec.

    Ranking: offers carrying ``external`` before those without, then two channels before one
    (the agent can then be scored on request), then ``prefer_format``, then 8 kHz.
    """
    if not offers:
        return None
    return max(offers, key=lambda m: ("external" in m.channels, len(m.channels),
                                      m.format == prefer_format, m.rate == 8000))


def audio_frames(data: bytes, media: Media) -> int:
    """Number of sample frames in a binary message (ProtocolError if not whole frames)."""
    if not data or len(data) % media.frame_bytes:
        raise ProtocolError("bad_audio_frame", f"binary message of {len(data)} bytes is not a "
                            f"whole number of {media.frame_bytes}-byte {media.format} frames")
    return len(data) // media.frame_bytes


class AudioHookSession:
    """Sequence numbers of one AudioHook session (both directions) and server replies."""

    def __init__(self, session_id: str):
        self.id = session_id
        self.seq = 0  # last server seq sent
        self.clientseq = 0  # last client seq received

    def accept(self, msg: ClientMessage) -> None:
        """Check a client message's ``id``, ``seq`` (+1 exactly) and ``serverseq``."""
        if msg.seq != self.clientseq + 1:
            raise _bad(f"invalid seq {msg.seq} (expected {self.clientseq + 1})")
        self.clientseq = msg.seq
        if msg.serverseq > self.seq:
            raise _bad(f"serverseq {msg.serverseq} is ahead of the server's seq {self.seq}")
        if msg.id.lower() != self.id.lower():
            raise _bad("message 'id' does not match the audiohook-session-id header")

    def reply(self, kind: str, parameters: dict[str, Any] | None = None) -> str:
        """The JSON text of the next server message (``parameters`` always present)."""
        self.seq += 1
        return json.dumps({"version": "2", "type": kind, "seq": self.seq,
                           "clientseq": self.clientseq, "id": self.id,
                           "parameters": parameters or {}}, separators=(",", ":"))
