"""The generic WebSocket protocol handler (``/v1/stream``), see docs/protocol.md.

Per-connection limits beyond ``[limits]``: at most :data:`MAX_MESSAGES_PER_S` messages per
second on average (bursts of :data:`MESSAGE_BURST`) and :data:`MAX_CONTROL_PER_S` text messages
per second (bursts of :data:`CONTROL_BURST`), else ``rate_limited``; the outgoing queue holds at
most :data:`OUTBOUND_LIMIT` window events and :data:`OUTBOUND_HARD_LIMIT` messages in all (the
rest are dropped for this socket only: Redis still gets every event); a client that does not
read for ``idle_timeout_s`` while events wait is disconnected (the call ends as ``timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from nes2net_stream.audio import av_codecs
from nes2net_stream.logs import get_logger
from nes2net_stream.service.audio_decode import AudioFormatError
from nes2net_stream.service.context import ServiceContext
from nes2net_stream.service.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    ProtocolError,
)
from nes2net_stream.service.events import AudioChunk, CallEnd, OutputEvent, Source
from nes2net_stream.service.protocol import (
    PACKET_ENCODINGS,
    apply_update,
    parse_channel_end,
    parse_json,
    parse_start,
)
from nes2net_stream.service.ratelimit import TokenBucket, check_audio_rate
from nes2net_stream.service.session import CallSession
from nes2net_stream.service.ws_poll import Receiver

log = get_logger("nes2net.ws")
OUTBOUND_LIMIT = 1000
OUTBOUND_HARD_LIMIT = 2000
DRAIN_POLL_S = 0.5
MAX_MESSAGES_PER_S = 1000.0
MESSAGE_BURST = 2000.0
MAX_CONTROL_PER_S = 10.0
CONTROL_BURST = 50.0


class Outbound:
    """Events for one client socket, sent by a background task.

    A slow reader loses window events (counted) but never alerts, and never slows the call;
    a reader that takes more than ``send_timeout_s`` to accept one message is disconnected.
    """

    def __init__(self, conn: ServerConnection, send_timeout_s: float = 30.0):
        self.conn = conn
        self.send_timeout_s = send_timeout_s
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.dropped = 0
        self.stalled = False
        self.task = asyncio.create_task(self._run())

    def event(self, event: OutputEvent) -> None:
        """Queue an output event (the session's sink)."""
        size = self.queue.qsize()
        if size >= OUTBOUND_HARD_LIMIT or (event.type == "window" and size >= OUTBOUND_LIMIT):
            self.dropped += 1
            return
        self.queue.put_nowait(json.dumps(event.to_dict(), separators=(",", ":")))

    def message(self, payload: dict[str, Any]) -> None:
        """Queue a control message (dropped when the queue is at its hard limit)."""
        if self.queue.qsize() >= OUTBOUND_HARD_LIMIT:
            self.dropped += 1
            return
        self.queue.put_nowait(json.dumps(payload, separators=(",", ":")))

    async def _run(self) -> None:
        while (text := await self.queue.get()) is not None:
            try:
                async with asyncio.timeout(self.send_timeout_s):  # no task per event
                    await self.conn.send(text)
            except ConnectionClosed:
                return
            except TimeoutError:
                self.stalled = True
                log.warning("client is not reading its events; disconnecting",
                            remote=_remote(self.conn), queued=self.queue.qsize(),
                            timeout_s=self.send_timeout_s)
                self.conn.transport.abort()
                return

    async def flush(self, grace_s: float = 5.0) -> None:
        """Send what is queued (for up to ``grace_s``), then stop."""
        self.queue.put_nowait(None)
        try:
            await asyncio.wait_for(self.task, grace_s)
        except TimeoutError:
            self.task.cancel()


def _remote(conn: ServerConnection) -> str | None:
    addr = conn.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else None


async def handle_generic(conn: ServerConnection, ctx: ServiceContext) -> None:
    """Serve one call over the generic protocol."""
    limits = ctx.limits
    out = Outbound(conn, limits.idle_timeout_s)
    session: CallSession | None = None
    end = CallEnd("disconnect")
    close_code, close_reason = CLOSE_NORMAL, "call ended"
    try:
        try:
            first = await Receiver.of(conn).recv(limits.start_timeout_s)
        except TimeoutError:
            raise ProtocolError("start_timeout", f"no start message within "
                                f"{limits.start_timeout_s:g} s") from None
        if isinstance(first, bytes):
            raise ProtocolError("audio_before_start", "send the JSON start message first")
        first_msg = parse_json(first, limits.max_text_bytes)
        start = parse_start(first_msg, source=Source("websocket", "generic", _remote(conn)),
                            max_metadata_bytes=limits.max_metadata_bytes)
        # packet encodings (opus) are decoded here: the call itself carries 16-bit PCM
        packets = (av_codecs.PacketDecoder("libopus", start.sample_rate)
                   if first_msg["encoding"] in PACKET_ENCODINGS else None)
        session = ctx.open_call(start, sink=out.event)
        out.message({"type": "started", "call_id": start.call_id,
                     "score_channels": session.scored_roles, "model_id": ctx.engine.model_id,
                     "window_s": ctx.windows.window_s, "hop_s": ctx.windows.hop_s})
        end = await _stream(conn, ctx, session, out, packets)
    except ProtocolError as err:
        ctx.metrics.protocol_errors.labels(code=err.code).inc()
        log.warning("protocol error", code=err.code, detail=err.message,
                    call_id=session.call_id if session else None, remote=_remote(conn))
        out.message(err.to_event())
        close_code, close_reason = err.close_code, err.code
        end = CallEnd("error", err.code)
    except ConnectionClosed:
        end = _closed_end(conn, out)
    except asyncio.CancelledError:
        end = CallEnd("shutdown")
        close_code, close_reason = CLOSE_GOING_AWAY, "shutting down"
        raise
    except Exception as exc:  # a bug must end this call cleanly, never the service
        ctx.metrics.protocol_errors.labels(code="internal_error").inc()
        log.exception("connection failed", error=repr(exc), remote=_remote(conn),
                      call_id=session.call_id if session else None)
        out.message(ProtocolError("internal_error", "internal error").to_event())
        close_code, close_reason = CLOSE_INTERNAL, "internal_error"
        end = CallEnd("error", "internal_error")
    else:
        if end.reason == "shutdown":
            close_code, close_reason = CLOSE_GOING_AWAY, "shutting down"
    finally:
        if session is not None:
            await ctx.end_call(session, end)
        await out.flush()
        with contextlib.suppress(Exception):
            await conn.close(close_code, close_reason)


def _closed_end(conn: ServerConnection, out: Outbound) -> CallEnd:
    """Why the connection closed: a stalled reader, a keepalive timeout or the peer."""
    if out.stalled:
        return CallEnd("timeout", "client_not_reading")
    sent = conn.protocol.close_sent
    if sent is not None and sent.code == CLOSE_INTERNAL and "keepalive" in sent.reason:
        return CallEnd("timeout", "keepalive_timeout")
    return CallEnd("disconnect")


async def _stream(conn: ServerConnection, ctx: ServiceContext, session: CallSession,
                  out: Outbound, packets: av_codecs.PacketDecoder | None = None) -> CallEnd:
    limits = ctx.limits
    t0 = time.monotonic()
    last_message = time.monotonic()
    messages = TokenBucket(MAX_MESSAGES_PER_S, MESSAGE_BURST)
    controls = TokenBucket(MAX_CONTROL_PER_S, CONTROL_BURST)
    receiver = Receiver.of(conn)
    while True:
        if ctx.draining:
            out.message(ProtocolError("shutting_down", "the service is shutting down; the "
                                      "call's summary follows").to_event())
            return CallEnd("shutdown")
        try:  # short waits so a drain is noticed even on a silent connection
            msg = await receiver.recv(DRAIN_POLL_S)
        except TimeoutError:
            if conn.protocol.close_sent is not None:
                # the connection is closing (keepalive timeout, stalled reader): incoming
                # messages are no longer delivered, so this is not the client's silence
                return _closed_end(conn, out)
            if time.monotonic() - last_message > limits.idle_timeout_s:
                raise ProtocolError("idle_timeout", f"no message for "
                                    f"{limits.idle_timeout_s:g} s") from None
            continue
        last_message = time.monotonic()
        if not messages.take():
            raise ProtocolError("rate_limited", f"more than {MAX_MESSAGES_PER_S:g} messages per "
                                "second; send fewer, larger audio frames")
        if isinstance(msg, bytes):
            if len(msg) > limits.max_frame_bytes:
                raise ProtocolError("frame_too_large", f"audio message of {len(msg)} bytes "
                                    f"exceeds the {limits.max_frame_bytes}-byte limit")
            try:
                session.feed(AudioChunk(msg if packets is None else packets.decode(msg)))
            except (AudioFormatError, av_codecs.PacketError) as exc:
                raise ProtocolError("bad_audio_frame", str(exc)) from None
            _check_rate(session, limits, time.monotonic() - t0)
            continue
        if not controls.take():
            raise ProtocolError("rate_limited", f"more than {MAX_CONTROL_PER_S:g} control "
                                "messages per second")
        control = parse_json(msg, limits.max_text_bytes)
        kind = control["type"]
        if kind == "stop":
            return CallEnd("stop")
        if kind == "ping":
            out.message({"type": "pong", "call_id": session.call_id})
            continue
        if kind == "update":
            session.update_metadata(apply_update(control, session.metadata,
                                                 max_metadata_bytes=limits.max_metadata_bytes))
            continue
        if kind == "channel_end":
            session.end_channel(*parse_channel_end(control, session.start.channels))
            continue
        if kind == "start":
            raise ProtocolError("bad_message", "start sent twice on one connection")
        raise ProtocolError("unknown_message", f"unknown message type {kind!r}")


def _check_rate(session: CallSession, limits: Any, elapsed: float) -> None:
    check_audio_rate(session.audio_seconds, elapsed, limits)
