"""The internal event model: what every ingest source turns a call into, and what comes out.

Ingest side (provider-agnostic; gateways, the generic WebSocket protocol and WebRTC all
produce these and nothing downstream knows which provider a call came from):

* :class:`CallStart`: ids, audio format, channel roles, which roles to score, source, metadata.
* :class:`AudioChunk`: raw audio bytes, either interleaved frames of all channels or one
  channel's samples (providers such as Twilio send one track per message).
* :class:`CallEnd`: why the call ended.

Output side: :class:`OutputEvent` (window scores, state changes, call summaries), serialised to
the JSON documented in docs/events.md and published to Redis and to the call's own socket.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Encoding = Literal["pcm_s16le", "pcm_s16be", "mulaw", "alaw", "float32le"]
ENCODINGS: tuple[str, ...] = ("pcm_s16le", "pcm_s16be", "mulaw", "alaw", "float32le")
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_s16be": 2, "mulaw": 1, "alaw": 1, "float32le": 4}
EndReason = Literal["stop", "disconnect", "error", "timeout", "shutdown", "limit", "lost"]
EventType = Literal["window", "state", "summary"]
State = Literal["bona_fide", "suspicious", "spoof"]
SCHEMA = "nes2net.event/v1"
REPLICA_ID = os.environ.get("NES2NET_REPLICA_ID") or socket.gethostname()


@dataclass(frozen=True)
class Source:
    """Where a call comes from (published with every event).

    Attributes:
        kind: ``websocket``, ``gateway``, ``webrtc`` or ``tcp``.
        gateway: the protocol: ``generic``, ``twilio``, ``genesys`` ...
        remote: the peer address, if known.
    """

    kind: str
    gateway: str
    remote: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "gateway": self.gateway, "remote": self.remote}


@dataclass(frozen=True)
class CallStart:
    """A call begins.

    Attributes:
        call_id: unique among active calls.
        encoding: sample encoding of the audio bytes.
        sample_rate: input sample rate in Hz.
        channels: role of each channel in interleaved order, e.g. ``("caller", "agent")``.
        score_channels: roles whose audio is scored (``caller`` by default).
        source: provider/transport information.
        metadata: provider ids (call SID, ANI/DNIS...) and free client metadata.
        open_on_audio: scored roles whose channel opens with its first audio rather than at
            the start (a party who may never be heard, e.g. a third conference participant):
            until then it has no state and gets no summary; once open, its clock starts at
            the call's audio position, so its window times are call times.
    """

    call_id: str
    encoding: Encoding
    sample_rate: int
    channels: tuple[str, ...]
    score_channels: frozenset[str]
    source: Source
    metadata: dict[str, Any] = field(default_factory=dict)
    open_on_audio: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AudioChunk:
    """Audio bytes: all channels interleaved (``channel=None``) or one channel's samples."""

    data: bytes
    channel: str | None = None


@dataclass(frozen=True)
class CallEnd:
    """A call ended (normally, or not)."""

    reason: EndReason = "stop"
    detail: str | None = None


def new_event_id() -> str:
    """Time-ordered unique event id (UUIDv7-style: 48-bit ms timestamp + random bits)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | (rand & ((1 << 76) - 1))
    value = (value & ~(0xC << 60)) | (0x8 << 60)
    return str(uuid.UUID(int=value))


def utc_now() -> str:
    """ISO-8601 UTC timestamp with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class OutputEvent:
    """One published event (see docs/events.md for the JSON schema)."""

    type: EventType
    call_id: str
    channel: str
    source: Source
    model_id: str
    state: State | None
    body: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)
    ts: str = field(default_factory=utc_now)
    ts_unix: float = field(default_factory=time.time)

    @property
    def is_alert(self) -> bool:
        """State changes and call summaries go to the alert stream."""
        return self.type in ("state", "summary")

    def to_dict(self) -> dict[str, Any]:
        """The event's JSON document."""
        return {
            "schema": SCHEMA,
            "event_id": self.event_id,
            "type": self.type,
            "call_id": self.call_id,
            "channel": self.channel,
            "source": self.source.to_dict(),
            "metadata": self.metadata,
            "ts": self.ts,
            "ts_unix": round(self.ts_unix, 3),
            "model_id": self.model_id,
            "replica": REPLICA_ID,
            "state": self.state,
            **self.body,
        }


def lost_call_summary(last_state: dict[str, Any]) -> dict[str, Any]:
    """The ``summary`` of a channel whose process died, from its latest ``state`` event.

    Before the channel's first state, that is the state-less event journaled at its start.

    Published by the next process (alert journal): ``end_reason`` and ``degraded`` say what
    happened; what the summary counts is known only up to that state change, so the window
    count comes from its running score and ``duration_s`` is the stream time of its window's
    last sample (a lower bound); what is unknown is null.
    """
    running = last_state.get("running") or {}
    window = last_state.get("window") or {}
    keep = ("call_id", "channel", "source", "metadata", "model_id")
    return {
        "schema": SCHEMA, "event_id": new_event_id(), "type": "summary",
        **{k: last_state.get(k) for k in keep},
        "ts": utc_now(), "ts_unix": round(time.time(), 3), "replica": REPLICA_ID,
        "state": last_state.get("state"),
        "summary": {"end_reason": "lost", "detail": "process_lost",
                    "duration_s": window.get("end_s"), "speech_s": None,
                    "windows_scored": running.get("windows"), "windows_dropped": None,
                    "windows_skipped_for_load": None, "max_spoof_probability": None,
                    "mean_spoof_probability": None, "final_state": last_state.get("state"),
                    "wall_s": None},
        "running": running,
        "degraded": "process_lost",
    }

