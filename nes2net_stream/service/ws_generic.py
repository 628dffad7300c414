"""The generic WebSocket protocol handler (``/v1/stream``), see docs/protocol.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from nes2net_stream.logs import get_logger
from nes2net_stream.service.audio_decode import AudioFormatError
from nes2net_stream.service.context import ServiceContext
from nes2net_stream.service.errors import CLOSE_GOING_AWAY, CLOSE_NORMAL, ProtocolError
from nes2net_stream.service.events import AudioChunk, CallEnd, OutputEvent, Source
from nes2net_stream.service.protocol import parse_json, parse_start
from nes2net_stream.service.session import CallSession

log = get_logger("nes2net.ws")
OUTBOUND_LIMIT = 1000
DRAIN_POLL_S = 0.5


class Outbound:
    """Events for one client socket, sent by a background task.

    A slow reader loses window events (counted) but never alerts, and never slows the call.
    """

    def __init__(self, conn: ServerConnection):
        self.conn = conn
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.dropped = 0
        self.task = asyncio.create_task(self._run())

    def event(self, event: OutputEvent) -> None:
        """Queue an output event (the session's sink)."""
        if event.type == "window" and self.queue.qsize() >= OUTBOUND_LIMIT:
            self.dropped += 1
            return
        self.queue.put_nowait(json.dumps(event.to_dict(), separators=(",", ":")))

    def message(self, payload: dict[str, Any]) -> None:
        """Queue a control message."""
        self.queue.put_nowait(json.dumps(payload, separators=(",", ":")))

    async def _run(self) -> None:
        while (text := await self.queue.get()) is not None:
            try:
                await self.conn.send(text)
            except ConnectionClosed:
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
    out = Outbound(conn)
    session: CallSession | None = None
    end = CallEnd("disconnect")
    close_code, close_reason = CLOSE_NORMAL, "call ended"
    try:
        try:
            first = await asyncio.wait_for(conn.recv(), limits.start_timeout_s)
        except TimeoutError:
            raise ProtocolError("start_timeout", f"no start message within "
                                f"{limits.start_timeout_s:g} s") from None
        if isinstance(first, bytes):
            raise ProtocolError("audio_before_start", "send the JSON start message first")
        start = parse_start(parse_json(first, limits.max_text_bytes),
                            source=Source("websocket", "generic", _remote(conn)),
                            max_metadata_bytes=limits.max_metadata_bytes)
        session = ctx.open_call(start, sink=out.event)
        out.message({"type": "started", "call_id": start.call_id,
                     "score_channels": session.scored_roles, "model_id": ctx.engine.model_id,
                     "window_s": ctx.windows.window_s, "hop_s": ctx.windows.hop_s})
        end = await _stream(conn, ctx, session, out)
    except ProtocolError as err:
        ctx.metrics.protocol_errors.labels(code=err.code).inc()
        log.warning("protocol error", code=err.code, detail=err.message,
                    call_id=session.call_id if session else None, remote=_remote(conn))
        out.message(err.to_event())
        close_code, close_reason = err.close_code, err.code
        end = CallEnd("error", err.code)
    except ConnectionClosed:
        end = CallEnd("disconnect")
    except asyncio.CancelledError:
        end = CallEnd("shutdown")
        close_code, close_reason = CLOSE_GOING_AWAY, "shutting down"
        raise
    else:
        if end.reason == "shutdown":
            close_code, close_reason = CLOSE_GOING_AWAY, "shutting down"
    finally:
        if session is not None:
            await ctx.end_call(session, end)
        await out.flush()
        with contextlib.suppress(Exception):
            await conn.close(close_code, close_reason)


async def _stream(conn: ServerConnection, ctx: ServiceContext, session: CallSession,
                  out: Outbound) -> CallEnd:
    limits = ctx.limits
    t0 = time.monotonic()
    last_message = time.monotonic()
    while True:
        if ctx.draining:
            out.message(ProtocolError("shutting_down", "the service is shutting down; the "
                                      "call's summary follows").to_event())
            return CallEnd("shutdown")
        try:  # short waits so a drain is noticed even on a silent connection
            msg = await asyncio.wait_for(conn.recv(), DRAIN_POLL_S)
        except TimeoutError:
            if time.monotonic() - last_message > limits.idle_timeout_s:
                raise ProtocolError("idle_timeout", f"no message for "
                                    f"{limits.idle_timeout_s:g} s") from None
            continue
        last_message = time.monotonic()
        if isinstance(msg, bytes):
            if len(msg) > limits.max_frame_bytes:
                raise ProtocolError("frame_too_large", f"audio message of {len(msg)} bytes "
                                    f"exceeds the {limits.max_frame_bytes}-byte limit")
            try:
                session.feed(AudioChunk(msg))
            except AudioFormatError as exc:
                raise ProtocolError("bad_audio_frame", str(exc)) from None
            _check_rate(session, limits, time.monotonic() - t0)
            continue
        control = parse_json(msg, limits.max_text_bytes)
        kind = control["type"]
        if kind == "stop":
            return CallEnd("stop")
        if kind == "ping":
            out.message({"type": "pong", "call_id": session.call_id})
            continue
        if kind == "start":
            raise ProtocolError("bad_message", "start sent twice on one connection")
        raise ProtocolError("unknown_message", f"unknown message type {kind!r}")


def _check_rate(session: CallSession, limits: Any, elapsed: float) -> None:
    if session.audio_seconds > limits.max_call_s:
        raise ProtocolError("call_too_long", f"call exceeded {limits.max_call_s:g} s of audio")
    allowed = limits.realtime_burst_s + elapsed * limits.max_realtime_factor
    if session.audio_seconds > allowed:
        raise ProtocolError("rate_limited", f"{session.audio_seconds:.1f} s of audio in "
                            f"{elapsed:.1f} s exceeds {limits.max_realtime_factor:g}x real time")
