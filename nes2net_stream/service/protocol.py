"""The generic streaming protocol (``/v1/stream``): parsing and validating control messages.

Pure functions, no I/O, so they can be fuzzed directly. See docs/protocol.md.
"""

from __future__ import annotations

import json
import re
from typing import Any

from nes2net_stream.audio import av_codecs
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallStart, Source

PROTOCOL_ENCODINGS = ("pcm_s16le", "mulaw", "alaw", "opus")
#: encodings sent as one compressed packet per binary message, decoded at the ingest edge
PACKET_ENCODINGS = ("opus",)
PROTOCOL_RATES = (8000, 16000, 48000)
# \Z, not $: "$" also matches before a trailing newline ("abc\n" is not a valid call id)
CALL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/=-]{0,127}\Z")
ROLE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
START_KEYS = {"type", "call_id", "encoding", "sample_rate", "channels", "channel_roles",
              "score_channels", "metadata"}
DEFAULT_ROLES = {1: ["caller"], 2: ["caller", "agent"]}


def parse_json(text: str | bytes, max_bytes: int) -> dict[str, Any]:
    """Parse one control message; it must be a JSON object with a string ``type``."""
    size = len(text) if isinstance(text, bytes) or len(text) > max_bytes else \
        len(text.encode("utf-8", "surrogatepass"))  # the limit is in UTF-8 bytes
    if size > max_bytes:
        raise ProtocolError("frame_too_large", f"text message of {size} bytes exceeds "
                            f"the {max_bytes}-byte limit")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, huge integers, deep nesting
        raise ProtocolError("bad_json", f"invalid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_message", "a control message must be a JSON object")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_message", "a control message needs a string 'type'")
    return msg


def _require(msg: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in msg:
        raise ProtocolError("bad_message", f"start: missing field {key!r}")
    value = msg[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError("bad_message", f"start: field {key!r} has the wrong type")
    return value


def _roles(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ProtocolError("bad_message", f"start: {field} must be a non-empty list")
    if not all(isinstance(r, str) and ROLE_RE.match(r) for r in value):
        raise ProtocolError("bad_message", f"start: {field} entries must be lower-case names "
                            "such as 'caller' or 'agent'")
    if len(set(value)) != len(value):
        raise ProtocolError("bad_message", f"start: {field} has duplicates")
    return list(value)


def parse_start(msg: dict[str, Any], *, source: Source, max_metadata_bytes: int = 8192
                ) -> CallStart:
    """Validate a ``start`` message and turn it into the internal :class:`CallStart`."""
    if msg.get("type") != "start":
        raise ProtocolError("bad_message", "the first message must be {\"type\": \"start\"}")
    unknown = sorted(set(msg) - START_KEYS)
    if unknown:
        raise ProtocolError("bad_message", f"start: unknown field(s) {unknown} (put extra "
                            "information under 'metadata')")
    call_id = _require(msg, "call_id", str)
    if not CALL_ID_RE.match(call_id):
        raise ProtocolError("bad_message", "start: call_id must be 1-128 characters of letters, "
                            "digits and . _ : @ + / = -")
    encoding = _require(msg, "encoding", str)
    if encoding not in PROTOCOL_ENCODINGS:
        raise ProtocolError("unsupported_format", f"encoding {encoding!r} is not supported; "
                            f"use one of {list(PROTOCOL_ENCODINGS)}")
    rate = _require(msg, "sample_rate", int)
    if rate not in PROTOCOL_RATES:
        raise ProtocolError("unsupported_format", f"sample_rate {rate} is not supported; use "
                            f"one of {list(PROTOCOL_RATES)}")
    channels = msg.get("channels", 1)
    if isinstance(channels, bool) or channels not in (1, 2):
        raise ProtocolError("unsupported_format", "channels must be 1 or 2")
    if encoding in PACKET_ENCODINGS:
        if channels != 1:
            raise ProtocolError("unsupported_format", f"{encoding} calls are mono: send one "
                                "connection per party")
        if not av_codecs.available():
            raise ProtocolError("unsupported_format", f"{encoding} needs PyAV (the 'webrtc' "
                                "extra) on the service; send pcm_s16le, mulaw or alaw")
        encoding = "pcm_s16le"  # what the packets decode to (see ws_generic)
    roles = (_roles(msg["channel_roles"], "channel_roles") if "channel_roles" in msg
             else DEFAULT_ROLES[channels])
    if len(roles) != channels:
        raise ProtocolError("bad_message", f"start: channel_roles has {len(roles)} entries "
                            f"for {channels} channel(s)")
    if "score_channels" in msg:
        score = _roles(msg["score_channels"], "score_channels")
        missing = [r for r in score if r not in roles]
        if missing:
            raise ProtocolError("bad_message", f"start: score_channels {missing} are not in "
                                "channel_roles")
    else:
        score = ["caller"] if "caller" in roles else [roles[0]]
    metadata = msg.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ProtocolError("bad_message", "start: metadata must be a JSON object")
    if len(json.dumps(metadata)) > max_metadata_bytes:
        raise ProtocolError("frame_too_large", f"start: metadata exceeds {max_metadata_bytes} "
                            "bytes")
    return CallStart(call_id=call_id, encoding=encoding, sample_rate=rate,
                     channels=tuple(roles), score_channels=frozenset(score), source=source,
                     metadata=metadata)


def apply_update(msg: dict[str, Any], current: dict[str, Any], *,
                 max_metadata_bytes: int = 8192) -> dict[str, Any]:
    """The call's metadata after an ``update`` message (``{"type": "update", "metadata": {}}``).

    Top-level keys of ``metadata`` replace the call's; a ``null`` value removes the key. The
    result obeys the start's size limit.
    """
    extra = set(msg) - {"type", "metadata"}
    if extra:
        raise ProtocolError("bad_message", f"update: unknown fields {sorted(extra)}")
    changes = msg.get("metadata")
    if not isinstance(changes, dict):
        raise ProtocolError("bad_message", "update: metadata must be a JSON object")
    merged = {**current, **changes}
    merged = {k: v for k, v in merged.items() if v is not None}
    if len(json.dumps(merged)) > max_metadata_bytes:
        raise ProtocolError("frame_too_large", f"update: metadata exceeds {max_metadata_bytes} "
                            "bytes")
    return merged


def parse_channel_end(msg: dict[str, Any], channels: tuple[str, ...]) -> tuple[str, str | None]:
    """Role and detail of a ``channel_end`` message: one party left a call that goes on.

    Example: ``{"type": "channel_end", "channel": "agent", "detail": "left"}``.
    """
    extra = set(msg) - {"type", "channel", "detail"}
    if extra:
        raise ProtocolError("bad_message", f"channel_end: unknown fields {sorted(extra)}")
    role, detail = msg.get("channel"), msg.get("detail")
    if not isinstance(role, str) or role not in channels:
        raise ProtocolError("bad_message", f"channel_end: channel must be one of the call's "
                            f"channels {list(channels)}")
    if detail is not None and (not isinstance(detail, str) or not ROLE_RE.match(detail)):
        raise ProtocolError("bad_message", "channel_end: detail must be a short lower-case name "
                            "such as 'left'")
    return role, detail
