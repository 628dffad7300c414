"""One live call: decode, per-channel pipelines, scoring, alert policy, events.

A :class:`CallSession` is fed :class:`~nes2net_stream.service.events.AudioChunk` objects from
an ingest source (synchronously, in the event loop: decoding, resampling and VAD are cheap).
Windows go to the scoring engine; a per-call task awaits their scores in order, updates the
alert policy and publishes events. :meth:`CallSession.close` flushes the audio path, waits for
every pending window and publishes the call summary, whatever the reason the call ended.

A call holds at most :data:`MAX_INFLIGHT_WINDOWS` windows submitted but not yet scored; further
windows are skipped (counted as skipped for load, metric reason ``call_backlog``), so one call
cannot fill the engine's shared queue or grow its own backlog without bound. When the scoring
worker restarted (or the scorer went away) while the call was active, its later events carry
``"degraded": "engine_restart"`` (or ``"engine_stopped"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from nes2net_stream.audio.pipeline import ChannelPipeline
from nes2net_stream.audio.windows import SpeechWindow
from nes2net_stream.logs import get_logger
from nes2net_stream.service.audio_decode import decode
from nes2net_stream.service.calibrations import pick_calibration
from nes2net_stream.service.engine import (
    EngineRestarted,
    EngineStopped,
    WindowDropped,
    WindowResult,
)
from nes2net_stream.service.events import AudioChunk, CallEnd, CallStart, OutputEvent
from nes2net_stream.service.policy import ChannelPolicy

log = get_logger("nes2net.call")

EventSink = Callable[[OutputEvent], None]
#: windows of one call submitted to the engine and not yet scored (all channels together)
MAX_INFLIGHT_WINDOWS = 64
#: audio is decoded per packet but resampled, VAD-framed and windowed in blocks of at least
#: this many seconds: the per-block work is mostly fixed overhead, 20 ms packets are common,
#: and the audio path is chunk-invariant, so scores are unchanged (windows come at most this
#: much later)
COALESCE_S = 0.06
#: the audio-seconds counter is advanced per call in steps of this many seconds (and at the
#: call's end) rather than per packet: a shared counter costs a lock (and, with ingest workers,
#: a shared-memory write) per update
METRIC_EVERY_S = 1.0


@dataclass
class _Channel:
    role: str
    index: int
    pipeline: ChannelPipeline
    policy: ChannelPolicy
    windows_submitted: int = 0
    windows_scored: int = 0
    windows_dropped: int = 0
    windows_skipped: int = 0
    last_submitted: int = -1_000_000
    probability_sum: float = 0.0  # of the scored windows' spoof probabilities
    probability_max: float | None = None
    cache_key: str = field(default_factory=lambda: uuid.uuid4().hex)  # feature-cache stream
    held: list[np.ndarray] = field(default_factory=list)  # decoded audio not processed yet
    held_samples: int = 0


@dataclass
class _Pending:
    channel: _Channel
    window: SpeechWindow
    future: asyncio.Future[WindowResult]
    received: float
    hops: int = 1  # hops since the previously scored window of this channel


@dataclass
class _ChannelEnd:
    """Queued after a channel's last window: its summary follows the windows' scores."""

    channel: _Channel
    end: CallEnd


class CallSession:
    """State of one call from its start to its summary."""

    def __init__(self, start: CallStart, ctx: Any, sink: EventSink | None = None):
        self.start = start
        #: the call's metadata as of now (published with every event; see update_metadata)
        self.metadata: dict[str, Any] = start.metadata
        self.ctx = ctx
        self.sink = sink
        self.started_at = time.monotonic()
        self.ended: CallEnd | None = None
        self._channels: dict[str, _Channel] = {}
        # a calibration of this call's path, if configured: raw scores map through it
        picked = pick_calibration(ctx.calibrations, ctx.calibration_key, start.source.gateway,
                                  start.metadata)
        self.calibration_name, self.calibration = picked if picked else (None, None)
        self._alerts = ctx.alerts if self.calibration is None else dataclasses.replace(
            ctx.alerts, spoof_prior=self.calibration.spoof_prior)
        #: scored roles whose channel opens with its first audio: role -> interleaved index
        self._unopened: dict[str, int] = {}
        self._left: list[_Channel] = []  # channels ended before the call (end_channel)
        self._gaps_s = 0.0  # seconds of the provider's audio reported missing (discontinuity)
        #: each role's position in seconds of its audio received (gaps excluded); a role of
        #: ``open_on_audio`` joins at the call's clock with its first audio
        self._heard: dict[str, float] = {r: 0.0 for r in start.channels
                                         if r not in start.open_on_audio}
        for i, role in enumerate(start.channels):
            if role not in start.score_channels:
                continue
            if role in start.open_on_audio:
                self._unopened[role] = i
            else:
                self._channels[role] = self._new_channel(role, i)
        self._pending: asyncio.Queue[_Pending | _ChannelEnd | None] = asyncio.Queue()
        self._consumer = asyncio.create_task(self._consume(), name=f"call-{start.call_id}")
        #: the call's clock: seconds of audio received by its furthest channel (the limits use it)
        self.audio_seconds = 0.0
        self._audio_unreported = 0.0  # received, not yet added to the audio-seconds counter
        self._closing: asyncio.Future[list[OutputEvent]] | None = None
        self.log = log.bind(call_id=start.call_id, gateway=start.source.gateway)
        self._restarts_seen = ctx.engine.restarts
        self.degraded: str | None = None
        self._block = max(1, int(COALESCE_S * start.sample_rate))
        self._journal_channels()  # a process that dies now still owes a summary

    @property
    def call_id(self) -> str:
        """The call's id."""
        return self.start.call_id

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        """The platform's metadata of the call changed (e.g. a transfer): later events carry it.

        Only what the events publish changes; the calibration picked at the start stays.
        """
        if self.ended is not None or metadata == self.metadata:
            return
        changed = sorted(k for k in metadata.keys() | self.metadata.keys()
                         if metadata.get(k) != self.metadata.get(k))
        self.metadata = dict(metadata)
        self.log.info("call metadata updated", keys=changed)
        self._journal_channels()  # a lost summary must name the call as it is now

    def _journal_channels(self) -> None:
        """With the alert journal, record each scored channel as it stands (no alert)."""
        if self.ctx.publisher.journaling:
            for ch in self._channels.values():
                self._journal_channel(ch)

    def _journal_channel(self, ch: _Channel) -> None:
        self.ctx.publisher.channel_opened(self._event("state", ch, {"running": self._running(ch)}))

    def _new_channel(self, role: str, index: int) -> _Channel:
        start = self.start
        return _Channel(role, index, ChannelPipeline(start.sample_rate, self.ctx.vad,
                                                     self.ctx.windows),
                        ChannelPolicy(self._alerts))

    def _open(self, role: str) -> _Channel:
        """Open a channel of ``open_on_audio`` at its first audio, on the call's clock."""
        ch = self._new_channel(role, self._unopened.pop(role))
        at = self.audio_seconds + self._gaps_s
        ch.pipeline.advance(at)
        self._channels[role] = ch
        self.log.info("channel opened", role=role, at_s=round(at, 3))
        if self.ctx.publisher.journaling:  # from now on the process owes it a summary
            self._journal_channel(ch)
        return ch

    @property
    def scored_roles(self) -> list[str]:
        """Roles scored (those of ``open_on_audio`` included, opened or not)."""
        return [r for r in self.start.channels if r in self._channels or r in self._unopened]

    def feed(self, chunk: AudioChunk) -> None:
        """Decode and process audio; raises AudioFormatError on malformed bytes."""
        if self.ended is not None:
            return  # the call was ended (e.g. by a drain) while audio was still arriving
        received = time.monotonic()
        n_channels = 1 if chunk.channel is not None else len(self.start.channels)
        frames = decode(chunk.data, self.start.encoding, n_channels)
        seconds = frames.shape[0] / self.start.sample_rate
        # opened at the call's position before this chunk (interleaved audio opens them all)
        for role in [r for r in self._unopened if chunk.channel in (None, r)]:
            self._open(role)
        self._count(chunk.channel, seconds)
        if chunk.channel is not None:
            ch = self._channels.get(chunk.channel)
            if ch is not None:
                self._process(ch, frames[:, 0], received)
            return
        for ch in self._channels.values():
            self._process(ch, frames[:, ch.index], received)

    def _count(self, role: str | None, seconds: float) -> None:
        """Advance the call's clock (``audio_seconds``) to the furthest any role's audio reached.

        Per-channel audio counts for its role only, so the clock goes on when the first
        channel's party left, and the rate and length limits see every channel's audio.
        """
        if role is None:
            for r in self._heard:
                self._heard[r] += seconds
            ahead = seconds
        else:
            heard = self._heard.get(role, self.audio_seconds) + seconds
            self._heard[role] = heard
            ahead = heard - self.audio_seconds
        if ahead > 0.0:
            self.audio_seconds += ahead
            self._audio_unreported += ahead
            if self._audio_unreported >= METRIC_EVERY_S:
                self._report_audio()

    def end_channel(self, role: str, detail: str | None = None) -> None:
        """End one channel before the call (a party left).

        Its summary is published once its last windows are scored, and its later audio is
        ignored. A channel never heard gets none; an unknown, unscored or already ended role
        is a no-op.
        """
        if self.ended is not None:
            return
        if self._unopened.pop(role, None) is not None:
            return
        ch = self._channels.pop(role, None)
        if ch is None:
            return
        self._left.append(ch)
        self._finish(ch, time.monotonic())
        self._pending.put_nowait(_ChannelEnd(ch, CallEnd("stop", detail)))
        self.log.info("channel ended", channel=role, detail=detail)

    def _report_audio(self) -> None:
        self.ctx.metrics.audio_seconds.inc(self._audio_unreported)
        self._audio_unreported = 0.0

    def discontinuity(self, gap_s: float) -> None:
        """A gap of ``gap_s`` seconds in the provider's audio (pause, discard, packet loss)."""
        if self.ended is not None:
            return
        self._gaps_s += max(0.0, gap_s)
        for ch in self._channels.values():
            self._flush(ch, time.monotonic())
            ch.pipeline.advance(gap_s)

    def _process(self, ch: _Channel, samples: np.ndarray, received: float) -> None:
        ch.held.append(samples)
        ch.held_samples += samples.shape[0]
        if ch.held_samples >= self._block:
            self._flush(ch, received)

    def _flush(self, ch: _Channel, received: float) -> None:
        """Run the held audio of ``ch`` through its pipeline."""
        if not ch.held:
            return
        x = ch.held[0] if len(ch.held) == 1 else np.concatenate(ch.held)
        ch.held.clear()
        ch.held_samples = 0
        for window in ch.pipeline.push(x):
            self._submit(ch, window, received)

    def _finish(self, ch: _Channel, now: float) -> None:
        """The end of a channel's audio: its held audio, then the pipeline's last windows."""
        self._flush(ch, now)
        for window in ch.pipeline.finish():
            self._submit(ch, window, now)

    def _submit(self, ch: _Channel, window: SpeechWindow, received: float) -> None:
        # under overload every call keeps being scored, at a longer hop (engine.stride())
        gap = window.index - ch.last_submitted
        if not window.final and gap < self.ctx.engine.stride():
            ch.windows_skipped += 1
            self.ctx.metrics.windows_dropped.labels(reason="load_shedding_hop").inc()
            return
        if not window.final and self._pending.qsize() >= MAX_INFLIGHT_WINDOWS:
            ch.windows_skipped += 1
            self.ctx.metrics.windows_dropped.labels(reason="call_backlog").inc()
            return
        ch.windows_submitted += 1
        ch.last_submitted = window.index
        fut = self.ctx.engine.submit(window.samples, key=ch.cache_key,
                                     end=None if window.padded else window.stream_end)
        self._pending.put_nowait(_Pending(ch, window, fut, received, min(gap, window.index + 1)))

    async def close(self, end: CallEnd) -> list[OutputEvent]:
        """End the call: flush audio, wait for all scores, publish and return the summaries.

        Safe to call more than once and from several tasks (an ingest handler and a drain):
        the first reason wins and every caller waits until the summaries are out.
        """
        if self._closing is None:
            self.ended = end
            self._closing = asyncio.ensure_future(self._close(end))
        return await asyncio.shield(self._closing)

    async def _close(self, end: CallEnd) -> list[OutputEvent]:
        now = time.monotonic()
        self._report_audio()
        for ch in self._channels.values():
            self._finish(ch, now)
        self._pending.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._consumer
        self._check_restarts()
        for ch in self._channels.values():
            self.ctx.engine.forget(ch.cache_key)  # its cached features are no longer needed
        summaries = [self._summary(ch, end) for ch in self._channels.values()]
        for ev in summaries:
            self._emit(ev, None)
        every = [*self._left, *self._channels.values()]  # the log counts the leavers too
        self.log.info("call ended", reason=end.reason, detail=end.detail,
                      audio_s=round(self.audio_seconds, 2),
                      windows=sum(c.windows_scored for c in every),
                      states={c.role: c.policy.state for c in every})
        return summaries

    async def _consume(self) -> None:
        structlog.contextvars.bind_contextvars(call_id=self.call_id)
        while (item := await self._pending.get()) is not None:
            if isinstance(item, _ChannelEnd):  # every earlier window of it is scored now
                self.ctx.engine.forget(item.channel.cache_key)
                self._emit(self._summary(item.channel, item.end), None)
                continue
            try:
                result = await item.future
            except WindowDropped:
                item.channel.windows_dropped += 1
                continue
            except EngineRestarted:
                item.channel.windows_dropped += 1
                self._mark_degraded("engine_restart")
                continue
            except EngineStopped:
                item.channel.windows_dropped += 1
                self.ctx.metrics.windows_dropped.labels(reason="engine_stopped").inc()
                if not self.ctx.draining:
                    self._mark_degraded("engine_stopped")
                continue
            except Exception as exc:  # model failure on this batch
                item.channel.windows_dropped += 1
                self.ctx.metrics.windows_dropped.labels(reason="model_error").inc()
                self.log.error("window scoring failed", error=repr(exc))
                continue
            self._check_restarts()
            try:
                self._on_score(item, result)
            except Exception as exc:  # a bug here must not stop the call's later alerts
                self.log.exception("window event failed", error=repr(exc))

    def _check_restarts(self) -> None:
        restarts = self.ctx.engine.restarts
        if restarts != self._restarts_seen:
            self._restarts_seen = restarts
            self._mark_degraded("engine_restart")

    def _mark_degraded(self, reason: str) -> None:
        if self.degraded is None:
            self.degraded = reason
            self.log.warning("call scoring degraded", reason=reason)

    def _event(self, type_: str, ch: _Channel, body: dict[str, Any]) -> OutputEvent:
        if self.degraded is not None:
            body = {**body, "degraded": self.degraded}
        return OutputEvent(type=type_, call_id=self.call_id, channel=ch.role,  # type: ignore[arg-type]
                           source=self.start.source, model_id=self.ctx.engine.model_id,
                           state=ch.policy.state, body=body, metadata=self.metadata)

    def _running(self, ch: _Channel) -> dict[str, Any]:
        llr = ch.policy.running_llr
        prob = ch.policy.running_probability
        return {"llr": None if llr is None else round(llr, 5),
                "spoof_probability": None if prob is None else round(prob, 5),
                "windows": ch.windows_scored}

    def _on_score(self, item: _Pending, r: WindowResult) -> None:
        ch, w = item.channel, item.window
        llr, prob = r.llr, r.spoof_probability
        score: dict[str, Any] = {}
        if self.calibration is not None:
            llr = self.calibration.llr(r.raw)
            prob = self.calibration.probability(llr)
            score["calibration"] = self.calibration_name
        ch.windows_scored += 1
        ch.probability_sum += prob
        ch.probability_max = max(ch.probability_max or 0.0, prob)
        previous, state = ch.policy.update(llr, prob)
        window_body = {
            "window": {"index": w.index, "start_s": w.start_s, "end_s": w.end_s,
                       "speech_s": w.speech_s, "final": w.final},
            "score": {"spoof_probability": round(prob, 5), "llr": round(llr, 5),
                      "raw": round(r.raw, 5), **score},
            "running": self._running(ch),
            "timing": {"queue_delay_ms": round(1000 * r.queue_delay_s, 2),
                       "batch_size": r.batch_size,
                       "effective_hop_s": round(item.hops * self.ctx.windows.hop_s, 3)},
        }
        self._emit(self._event("window", ch, window_body), item.received)
        if state != previous:
            self.ctx.metrics.state_changes.labels(
                state=state, gateway=self.start.source.gateway).inc()
            body = {"previous_state": previous, "window": window_body["window"],
                    "score": window_body["score"], "running": window_body["running"]}
            self._emit(self._event("state", ch, body), item.received)
            self.log.info("state change", channel=ch.role, previous=previous, state=state,
                          running_spoof_probability=window_body["running"]["spoof_probability"])

    def _summary(self, ch: _Channel, end: CallEnd) -> OutputEvent:
        scored = ch.windows_scored
        body = {
            "summary": {
                "end_reason": end.reason,
                "detail": end.detail,
                "duration_s": round(ch.pipeline.duration_seconds, 3),
                "speech_s": round(ch.pipeline.speech_seconds, 3),
                "windows_scored": ch.windows_scored,
                "windows_dropped": ch.windows_dropped,
                "windows_skipped_for_load": ch.windows_skipped,
                "max_spoof_probability": (round(ch.probability_max, 5)
                                          if ch.probability_max is not None else None),
                "mean_spoof_probability": (round(ch.probability_sum / scored, 5)
                                           if scored else None),
                "final_state": ch.policy.state,
                "wall_s": round(time.monotonic() - self.started_at, 3),
            },
            "running": self._running(ch),
        }
        return self._event("summary", ch, body)

    def _emit(self, event: OutputEvent, received: float | None) -> None:
        self.ctx.publisher.publish(event, received=received)
        if self.sink is not None:
            try:
                self.sink(event)
            except Exception as exc:  # a broken client socket must not stop the call's alerts
                self.log.warning("event sink failed", error=repr(exc))
