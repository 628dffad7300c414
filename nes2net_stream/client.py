"""A client of the generic streaming protocol: stream audio as a call and collect the events.

Used by ``nes2net-stream stream``, the demo, the load generator and the tests.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nes2net_stream.audio import av_codecs, g711
from nes2net_stream.audio.io import float_to_pcm16, load_audio, load_audio_channels

EventCallback = Callable[[dict[str, Any]], None]


def encode_samples(samples: np.ndarray, encoding: str) -> bytes:
    """float32 samples (frames, or frames x channels) to interleaved bytes."""
    pcm = float_to_pcm16(samples).reshape(-1)
    if encoding == "pcm_s16le":
        return pcm.astype("<i2").tobytes()
    if encoding == "mulaw":
        return g711.mulaw_encode(pcm).tobytes()
    if encoding == "alaw":
        return g711.alaw_encode(pcm).tobytes()
    raise ValueError(f"unsupported encoding {encoding!r}")


def start_message(call_id: str, encoding: str, sample_rate: int, channels: int = 1, *,
                  channel_roles: list[str] | None = None,
                  metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The generic protocol's ``start`` message for one call."""
    roles = channel_roles or (["caller"] if channels == 1 else ["caller", "agent"])
    return {"type": "start", "call_id": call_id, "encoding": encoding,
            "sample_rate": sample_rate, "channels": channels, "channel_roles": roles,
            "metadata": metadata or {}}


def update_message(metadata: dict[str, Any]) -> dict[str, Any]:
    """The generic protocol's ``update`` message: merge into the call's metadata (null removes)."""
    return {"type": "update", "metadata": metadata}


@dataclass
class StreamResult:
    """What came back for one streamed call."""

    call_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    sent_seconds: float = 0.0
    start_wall: float = 0.0

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Events of one type (``window``, ``state``, ``summary``, ``error``...)."""
        return [e for e in self.events if e.get("type") == kind]

    @property
    def summary(self) -> dict[str, Any] | None:
        """The first summary to arrive, if one did (one per scored channel: see ``summaries``)."""
        found = self.of_type("summary")
        return found[0] if found else None

    @property
    def summaries(self) -> dict[str, dict[str, Any]]:
        """Each channel's summary by role (a party that left has its own, earlier)."""
        return {e.get("channel", ""): e for e in self.of_type("summary")}


def audio_frames(x: np.ndarray, encoding: str, sample_rate: int, step: int, frame_ms: int
                 ) -> list[bytes]:
    """The binary messages of a call: ``step`` frames of samples each, or Opus packets.

    ``opus`` (mono only; PyAV needed) sends one packet of ``frame_ms`` per message at 32
    kbit/s; the per-sample encodings are encoded once and sliced.
    """
    if encoding == "opus":
        if x.shape[1] != 1 or frame_ms not in (10, 20, 40, 60):
            raise ValueError("opus streams are mono, in frames of 10, 20, 40 or 60 ms")
        return av_codecs.encode_packets("libopus", sample_rate, x[:, 0], bit_rate=32000,
                                        frame_ms=frame_ms)
    payload = encode_samples(x, encoding)
    size = len(payload) // max(1, x.shape[0]) * step
    return [payload[i:i + size] for i in range(0, len(payload), size)] if size else []


async def stream_samples(url: str, samples: np.ndarray, sample_rate: int, *,
                         call_id: str | None = None, encoding: str = "pcm_s16le",
                         channel_roles: list[str] | None = None, realtime: bool = True,
                         frame_ms: int = 20, token: str | None = None,
                         metadata: dict[str, Any] | None = None,
                         on_event: EventCallback | None = None, speed: float = 1.0,
                         extra_start: dict[str, Any] | None = None,
                         open_timeout: float = 10.0,
                         send_log: list[tuple[float, float]] | None = None,
                         updates: Sequence[tuple[float, dict[str, Any]]] = (),
                         channel_ends: Sequence[tuple[float, str]] = ()) -> StreamResult:
    """Stream samples (mono, or frames x channels) as one call and wait for its summary.

    ``send_log``, when given, gets one ``(seconds of audio sent so far, wall-clock time)`` pair
    per audio message, right after it was handed to the socket. ``updates`` are
    ``(seconds into the audio, metadata)`` pairs: each is sent as an ``update`` message once
    that much audio has been sent (e.g. the account the IVR identified); ``channel_ends``,
    ``(seconds, role)`` pairs, send a ``channel_end`` message for that role (a party left).
    """
    pending = sorted([(t, update_message(m)) for t, m in updates]
                     + [(t, {"type": "channel_end", "channel": role}) for t, role in channel_ends],
                     key=lambda u: u[0])
    call_id = call_id or f"call-{uuid.uuid4().hex[:12]}"
    x = samples if samples.ndim == 2 else samples[:, None]
    start = start_message(call_id, encoding, sample_rate, x.shape[1],
                          channel_roles=channel_roles, metadata=metadata)
    start.update(extra_start or {})
    headers = {"Authorization": f"Bearer {token}"} if token else None
    result = StreamResult(call_id=call_id)
    step = max(1, sample_rate * frame_ms // 1000)
    frames = audio_frames(x, encoding, sample_rate, step, frame_ms)
    async with connect(url, additional_headers=headers, max_size=None,
                       open_timeout=open_timeout, close_timeout=10) as ws:

        async def receive() -> None:
            try:
                async for msg in ws:
                    event = json.loads(msg)
                    result.events.append(event)
                    if on_event is not None:
                        on_event(event)
            except ConnectionClosed:
                pass

        receiver = asyncio.create_task(receive())
        await ws.send(json.dumps(start))
        t0 = result.start_wall = time.time()
        mono0 = time.monotonic()
        try:
            for k, frame in enumerate(frames):
                i = k * step
                while pending and pending[0][0] * sample_rate <= i:
                    await ws.send(json.dumps(pending.pop(0)[1]))
                await ws.send(frame)
                result.sent_seconds = min(i + step, x.shape[0]) / sample_rate
                if send_log is not None:
                    send_log.append((result.sent_seconds, time.time()))
                if realtime:
                    due = mono0 + (i + step) / sample_rate / speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif i % (step * 50) == 0:
                    await asyncio.sleep(0)
            for _, late in pending:  # past the end of the audio: before the stop
                await ws.send(json.dumps(late))
            await ws.send(json.dumps({"type": "stop"}))
        except ConnectionClosed:
            pass
        await receiver
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    del t0
    return result


async def stream_file(url: str, path: str | Path, *, sample_rate: int = 8000,
                      channel_roles: list[str] | None = None, **kwargs: Any) -> StreamResult:
    """Read an audio file (any format), resample it to ``sample_rate`` and stream it.

    Without ``channel_roles`` the file's channels are mixed into one call channel (the
    caller's). With them, the file must have that many channels (a stereo recording of both
    parties): each is streamed as its role, and every role is scored.
    """
    if not channel_roles:
        clip = load_audio(path, sample_rate=sample_rate)
        return await stream_samples(url, clip.samples, sample_rate, **kwargs)
    frames = load_audio_channels(path, sample_rate=sample_rate, channels=len(channel_roles))
    extra = {"score_channels": list(channel_roles), **(kwargs.pop("extra_start", None) or {})}
    return await stream_samples(url, frames, sample_rate, channel_roles=list(channel_roles),
                                extra_start=extra, **kwargs)
