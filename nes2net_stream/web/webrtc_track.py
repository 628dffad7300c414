"""One remote WebRTC audio track as one call: frames to 16-bit PCM, gaps, limits, the end.

aiortc decodes Opus to 48 kHz stereo, G.722 to 16 kHz mono and G.711 to 8 kHz mono
(``av.AudioFrame``, s16). Frames are down-mixed to mono and fed at their own sample rate to a
:class:`~nes2net_stream.gateways.api.CallHandle` (the pipeline resamples to 16 kHz). The call
starts with the first frame, so its sample rate is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from nes2net_stream.audio.io import float_to_pcm16, resample
from nes2net_stream.gateways.api import CallHandle
from nes2net_stream.logs import get_logger
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import AudioChunk, CallEnd, CallStart, Source
from nes2net_stream.service.ratelimit import check_audio_rate

if TYPE_CHECKING:
    from nes2net_stream.web.webrtc_ingest import WebRTCPeer

log = get_logger("nes2net.webrtc")
MAX_GAP_S = 60.0  # larger timestamp jumps are not treated as lost audio


def frame_to_pcm16(frame: Any) -> np.ndarray:
    """An ``av.AudioFrame`` (any sample format and layout) as mono int16 samples."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    data = data if frame.format.is_planar else data.reshape(-1, channels).T
    if data.dtype.kind == "f":
        data = float_to_pcm16(data.astype(np.float32))
    elif data.dtype != np.int16:
        raise ValueError(f"unsupported audio frame format {frame.format.name!r}")
    if channels == 1:
        return np.ascontiguousarray(data[0], dtype=np.int16)
    return (data.astype(np.int32).sum(axis=0) // channels).astype(np.int16)


class TrackCall:
    """Reads one remote audio track and drives its call."""

    def __init__(self, peer: WebRTCPeer, track: Any, call_id: str):
        self.peer = peer
        self.track = track
        self.call_id = call_id
        self.handle = CallHandle(peer.ingest.ctx, sink=peer.forward)
        self.done = asyncio.Event()
        self.rate = 0
        self._next_pts: int | None = None
        self.task = asyncio.create_task(self._run(), name=f"webrtc-track-{call_id}")

    async def _run(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        limits = self.peer.ingest.ctx.limits
        end: CallEnd | None = None
        try:
            while end is None:
                try:
                    frame = await asyncio.wait_for(self.track.recv(), limits.idle_timeout_s)
                except MediaStreamError:
                    end = self.peer.end_reason or CallEnd("stop", "track_ended")
                    break
                except TimeoutError:
                    end = CallEnd("timeout", f"no audio for {limits.idle_timeout_s:g} s")
                    break
                end = self._feed(frame)
        except asyncio.CancelledError:
            end = CallEnd("shutdown")
            raise
        except Exception as exc:  # a decoding bug must still end the call with its summary
            log.error("webrtc track failed", call_id=self.call_id, error=repr(exc))
            end = CallEnd("error", "internal_error")
        finally:
            if self.handle.started:
                with contextlib.suppress(Exception):
                    await self.handle.end(end or CallEnd("error", "internal_error"))
            self.done.set()
        await self._discard()

    def _feed(self, frame: Any) -> CallEnd | None:
        pcm = frame_to_pcm16(frame)
        rate = int(frame.sample_rate)
        if not self.handle.started:
            start = CallStart(call_id=self.call_id, encoding="pcm_s16le", sample_rate=rate,
                              channels=(self.peer.request.channel_role,),
                              score_channels=frozenset({self.peer.request.channel_role}),
                              source=Source("webrtc", "webrtc", self.peer.remote),
                              metadata=self.peer.request.metadata)
            try:
                session = self.handle.start(start)
            except ProtocolError as err:
                self.peer.send(err.to_event() | {"call_id": self.call_id})
                log.warning("webrtc call refused", call_id=self.call_id, code=err.code)
                return CallEnd("error", err.code)
            self.rate = rate
            ctx = self.peer.ingest.ctx
            self.peer.send({"type": "started", "call_id": self.call_id,
                            "score_channels": session.scored_roles,
                            "model_id": ctx.engine.model_id, "window_s": ctx.windows.window_s,
                            "hop_s": ctx.windows.hop_s, "sample_rate": rate})
        elif rate != self.rate:  # a codec change mid-call: keep the call's rate
            pcm = float_to_pcm16(resample(pcm.astype(np.float32) / 32768.0, rate, self.rate))
        self._check_gap(frame, pcm.size)
        self.handle.audio(AudioChunk(pcm.astype("<i2").tobytes()))
        session = self.handle.session
        assert session is not None
        try:  # a peer may send RTP faster than real time: the limits of every gateway apply
            check_audio_rate(session.audio_seconds, time.monotonic() - session.started_at,
                             self.peer.ingest.ctx.limits)
        except ProtocolError as err:
            return CallEnd("limit", err.code)
        return None

    def _check_gap(self, frame: Any, samples: int) -> None:
        """Tell the pipeline about audio lost in transit (RTP timestamps jump ahead)."""
        pts = frame.pts
        if pts is None or frame.time_base is None:
            return
        pts = int(pts * frame.time_base * self.rate)
        if self._next_pts is not None:
            gap = (pts - self._next_pts) / self.rate
            if 0.0 < gap <= MAX_GAP_S:
                self.handle.discontinuity(gap)
        self._next_pts = pts + samples

    async def _discard(self) -> None:
        """After the call ended, keep emptying the track's queue until it ends."""
        from aiortc.mediastreams import MediaStreamError

        self.peer.track_finished()
        with contextlib.suppress(MediaStreamError):
            while True:
                await self.track.recv()
