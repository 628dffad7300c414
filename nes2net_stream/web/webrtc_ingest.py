"""WebRTC ingest with aiortc: every audio track a client sends becomes one call.

A client POSTs an SDP offer (see :mod:`nes2net_stream.web.signalling`); the service answers
with every ICE candidate already in the SDP (aiortc gathers before answering). Each remote
audio track is read by a :class:`~nes2net_stream.web.webrtc_track.TrackCall` and goes
through the same pipeline as every other source. The call's events go back on
the client's ``events`` data channel when it opened one.

A track's end, a failed or closed connection, a ``stop`` message or ``DELETE`` on the peer
ends the call with its summary. Tracks are always drained (aiortc's receive queue is
unbounded) and peer connections are closed and forgotten when their calls are over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import weakref
from collections import deque
from collections.abc import Coroutine
from typing import Any

from prometheus_client import Counter, Gauge

from nes2net_stream.logs import get_logger
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd, OutputEvent
from nes2net_stream.service.ratelimit import TokenBucket
from nes2net_stream.service.ws_generic import CONTROL_BURST, MAX_CONTROL_PER_S
from nes2net_stream.settings import WebRTCSection
from nes2net_stream.web.signalling import OfferRequest, SignallingError, track_call_id
from nes2net_stream.web.webrtc_track import TrackCall

log = get_logger("nes2net.webrtc")
EVENTS_LABEL = "events"
PENDING_EVENTS = 256            # events held until the client's data channel opens
CHANNEL_BUFFER_LIMIT = 1 << 20  # above this many queued bytes, window events are skipped


class WebRTCPeer:
    """One client peer connection and the calls of its audio tracks."""

    def __init__(self, ingest: WebRTCIngest, pc: Any, request: OfferRequest,
                 remote: str | None):
        self.ingest = ingest
        self.pc = pc
        self.request = request
        self.remote = remote
        self.peer_id = uuid.uuid4().hex
        self.calls: list[TrackCall] = []
        self.end_reason: CallEnd | None = None
        self.channel: Any = None
        self.events_skipped = 0
        self._pending: deque[str] = deque(maxlen=PENDING_EVENTS)
        #: data channel messages: the generic protocol's limits on control messages
        self._control = TokenBucket(MAX_CONTROL_PER_S, CONTROL_BURST)
        self._connected = asyncio.Event()
        self._all_done = asyncio.Event()
        self._close_task: asyncio.Future[None] | None = None
        self.supervisor: asyncio.Task[None] | None = None
        pc.on("connectionstatechange", self._on_state)
        pc.on("datachannel", self._on_datachannel)

    @property
    def call_ids(self) -> list[str]:
        """Ids of the calls of this peer's audio tracks."""
        return [c.call_id for c in self.calls]

    def begin(self, tracks: list[Any]) -> None:
        """Start reading the audio tracks and supervising the connection."""
        self.calls = [TrackCall(self, t, track_call_id(self.request.call_id, i))
                      for i, t in enumerate(tracks)]
        self.supervisor = asyncio.create_task(self._supervise(),
                                              name=f"webrtc-peer-{self.peer_id}")

    def forward(self, event: OutputEvent) -> None:
        """The calls' event sink: the JSON event on the data channel."""
        if event.type == "window" and self.channel is not None and \
                self.channel.bufferedAmount > CHANNEL_BUFFER_LIMIT:
            self.events_skipped += 1
            return
        self._send_text(json.dumps(event.to_dict(), separators=(",", ":")))

    def send(self, message: dict[str, Any]) -> None:
        """A control message (``started``, ``error``, ``pong``) on the data channel."""
        self._send_text(json.dumps(message, separators=(",", ":")))

    def _send_text(self, text: str) -> None:
        ch = self.channel
        if ch is None or ch.readyState != "open":
            self._pending.append(text)
            return
        with contextlib.suppress(Exception):
            ch.send(text)

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != EVENTS_LABEL or self.channel is not None:
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("open", self._flush_pending)
        if channel.readyState == "open":
            self._flush_pending()

    def _flush_pending(self) -> None:
        while self._pending and self.channel is not None and self.channel.readyState == "open":
            text = self._pending.popleft()
            with contextlib.suppress(Exception):
                self.channel.send(text)

    def _on_message(self, message: Any) -> None:
        size = len(message.encode() if isinstance(message, str) else bytes(message))
        code = None
        if size > self.ingest.ctx.limits.max_text_bytes:
            code = "frame_too_large"
        elif not self._control.take():
            code = "rate_limited"
        if code is not None:  # as the generic protocol: an error, and the calls end
            if self.end_reason is None:
                self.send({"type": "error", "code": code,
                           "message": "data channel message over [limits] max_text_bytes"
                           if code == "frame_too_large" else
                           f"more than {MAX_CONTROL_PER_S:g} messages per second"})
                log.warning("webrtc data channel refused", peer_id=self.peer_id, code=code)
                self.ingest.spawn(self.hang_up(CallEnd("error", code)))
            return
        try:
            kind = json.loads(message).get("type") if isinstance(message, str) else None
        except (json.JSONDecodeError, AttributeError):
            kind = None
        if kind == "stop":
            self.ingest.spawn(self.hang_up(CallEnd("stop")))
        elif kind == "ping":
            self.send({"type": "pong"})
        else:
            self.send({"type": "error", "code": "unknown_message",
                       "message": 'data channel messages are {"type": "stop"} or '
                                  '{"type": "ping"}'})

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("webrtc connection state", peer_id=self.peer_id, state=state,
                 calls=self.call_ids)
        if state == "connected":
            self._connected.set()
        elif state == "failed":
            self.ingest.spawn(self.hang_up(CallEnd("disconnect", "connection_failed")))
        elif state == "closed" and self.end_reason is None:
            self.end_reason = CallEnd("stop", "peer_closed")

    def track_finished(self) -> None:
        """Called by each track once its call is over."""
        if all(c.done.is_set() for c in self.calls):
            self._all_done.set()

    async def hang_up(self, reason: CallEnd) -> None:
        """End every call of this peer (summaries published) and close the connection."""
        if self.end_reason is None:
            self.end_reason = reason
        for call in self.calls:
            if call.handle.started and not call.done.is_set():
                with contextlib.suppress(Exception):
                    await call.handle.end(self.end_reason)
        await self.close()

    async def close(self) -> None:
        """Close the peer connection (tracks end, readers finish) and forget the peer."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        await self._drain_channel()
        with contextlib.suppress(Exception):
            await self.pc.close()
        # closing ends the tracks of receivers that ran; a track that never received a packet
        # (the client never connected) has no decoder to end it, so its reader is cancelled
        tasks = [c.task for c in self.calls]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.ingest.release(self)
        log.info("webrtc peer closed", peer_id=self.peer_id, calls=self.call_ids,
                 reason=self.end_reason.reason if self.end_reason else None,
                 window_events_skipped=self.events_skipped)

    async def _drain_channel(self, timeout_s: float = 2.0) -> None:
        """Give queued events (the summaries) a moment to leave on the data channel."""
        ch = self.channel
        if ch is None or ch.readyState != "open":
            return
        if ch.bufferedAmount > ch.bufferedAmountLowThreshold:
            low = asyncio.Event()
            ch.once("bufferedamountlow", low.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(low.wait(), timeout_s)
        await asyncio.sleep(0.1)  # the SCTP acknowledgement of the last message

    async def _supervise(self) -> None:
        timeout = self.ingest.settings.connect_timeout_s
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            if self._close_task is None:
                log.warning("webrtc peer did not connect; closing", peer_id=self.peer_id,
                            timeout_s=timeout)
                await self.hang_up(CallEnd("timeout", "connection_timeout"))
            return
        await self._all_done.wait()
        await self.close()


_METRICS: weakref.WeakKeyDictionary[Any, tuple[Gauge, Counter]] = weakref.WeakKeyDictionary()


def _metrics(registry: Any) -> tuple[Gauge, Counter]:
    """The WebRTC metrics of a service's registry (created once per registry)."""
    if registry not in _METRICS:
        _METRICS[registry] = (
            Gauge("nes2net_webrtc_peers", "Open WebRTC peer connections", registry=registry),
            Counter("nes2net_webrtc_offers_total", "WebRTC offers, by result", ["result"],
                    registry=registry))
    return _METRICS[registry]


class WebRTCIngest:
    """The peer connections of one service process."""

    def __init__(self, ctx: Any, settings: WebRTCSection):
        self.ctx = ctx
        self.settings = settings
        self.peers: dict[str, WebRTCPeer] = {}
        self.accepting = True
        self._tasks: set[asyncio.Future[None]] = set()
        self.peers_gauge, self.offers = _metrics(ctx.metrics.registry)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background coroutine, keeping a reference until it finishes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def ice_servers(self) -> list[dict[str, Any]]:
        """The configured STUN/TURN servers in the browser's ``RTCIceServer`` form."""
        out = []
        for s in self.settings.ice_servers:
            entry: dict[str, Any] = {"urls": list(s.urls)}
            if s.username:
                entry |= {"username": s.username, "credential": s.credential}
            out.append(entry)
        return out

    def _refuse(self, status: int, code: str, message: str) -> SignallingError:
        self.offers.labels(result=code).inc()
        return SignallingError(status, code, message)

    def _check_capacity(self, request: OfferRequest) -> None:
        if not self.accepting or self.ctx.draining:
            raise self._refuse(503, "shutting_down", "the service is draining; retry elsewhere")
        if len(self.peers) >= self.settings.max_peers:
            self.ctx.metrics.calls_rejected.labels(reason="capacity").inc()
            raise self._refuse(429, "too_many_peers", f"{len(self.peers)} WebRTC peers are "
                               f"connected (limit {self.settings.max_peers})")
        reserved = {cid for p in self.peers.values() for cid in p.call_ids} | \
            {p.request.call_id for p in self.peers.values()}
        if request.call_id in self.ctx.calls or request.call_id in reserved:
            self.ctx.metrics.calls_rejected.labels(reason="duplicate").inc()
            raise self._refuse(409, "duplicate_call_id",
                               f"call_id {request.call_id!r} is already streaming")
        if len(self.ctx.calls) >= self.ctx.limits.max_calls:
            self.ctx.metrics.calls_rejected.labels(reason="capacity").inc()
            raise self._refuse(429, "too_many_calls", f"{len(self.ctx.calls)} calls active "
                               f"(limit {self.ctx.limits.max_calls})")

    async def offer(self, request: OfferRequest, remote: str | None) -> dict[str, Any]:
        """Answer an offer; raises SignallingError when it is refused."""
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

        self._check_capacity(request)
        config = RTCConfiguration(iceServers=[
            RTCIceServer(urls=s.urls, username=s.username or None,
                         credential=s.credential or None) for s in self.settings.ice_servers])
        pc = RTCPeerConnection(configuration=config)
        peer = WebRTCPeer(self, pc, request, remote)
        self.peers[peer.peer_id] = peer  # reserve the slot before the first await
        self.peers_gauge.set(len(self.peers))
        tracks: list[Any] = []
        pc.on("track", tracks.append)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=request.sdp,
                                                                    type="offer"))
            except Exception as exc:  # aiortc raises ValueError, KeyError, IndexError ...
                raise self._refuse(400, "bad_sdp", f"the SDP offer was not accepted: "
                                   f"{exc or type(exc).__name__}") from None
            audio = [t for t in tracks if t.kind == "audio"]
            if not audio:
                raise self._refuse(400, "no_audio_track", "the offer has no audio track that "
                                   "the client sends (an m=audio section with sendrecv or "
                                   "sendonly)")
            if len(audio) > self.settings.max_tracks_per_peer:
                raise self._refuse(400, "too_many_tracks", f"the offer sends {len(audio)} "
                                   f"audio tracks (limit {self.settings.max_tracks_per_peer})")
            for transceiver in pc.getTransceivers():
                if transceiver.kind != "audio":
                    transceiver.direction = "inactive"  # no video: nothing to decode
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            self.release(peer)
            with contextlib.suppress(Exception):
                await pc.close()
            raise
        peer.begin(audio)
        self.offers.labels(result="answered").inc()
        log.info("webrtc offer answered", peer_id=peer.peer_id, calls=peer.call_ids,
                 remote=remote)
        answer = pc.localDescription
        return {"type": answer.type, "sdp": answer.sdp, "peer_id": peer.peer_id,
                "call_ids": peer.call_ids, "events_channel": EVENTS_LABEL}

    async def hang_up(self, peer_id: str) -> bool:
        """End a peer's calls and close it; False if there is no such peer."""
        peer = self.peers.get(peer_id)
        if peer is None:
            return False
        await peer.hang_up(CallEnd("stop", "hangup_request"))
        return True

    def release(self, peer: WebRTCPeer) -> None:
        """Forget a closed peer."""
        if self.peers.get(peer.peer_id) is peer:
            del self.peers[peer.peer_id]
            self.peers_gauge.set(len(self.peers))

    def stop_accepting(self) -> None:
        """Refuse new offers and tell connected clients that the service is draining."""
        self.accepting = False
        for peer in list(self.peers.values()):
            peer.send(ProtocolError("shutting_down", "the service is shutting down; the "
                                    "calls' summaries follow").to_event())

    async def close(self) -> None:
        """Close every peer connection (their calls end with reason ``shutdown``)."""
        peers = list(self.peers.values())
        await asyncio.gather(*(p.hang_up(CallEnd("shutdown")) for p in peers),
                             return_exceptions=True)
        for peer in peers:
            if peer.supervisor is not None:
                peer.supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await peer.supervisor
