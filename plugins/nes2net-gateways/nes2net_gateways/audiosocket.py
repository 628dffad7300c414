"""Asterisk AudioSocket gateway (TCP), see docs/gateways/audiosocket.md.

Asterisk connects to ``host:port`` and sends frames of 1-byte kind, 2-byte big-endian payload
length, payload: first the 16-byte call UUID (kind ``0x01``), then signed-linear 16-bit
little-endian mono audio (``0x10`` = 8 kHz; ``0x11``-``0x18`` = 12, 16, 24, 32, 44.1, 48, 96,
192 kHz since Asterisk 20.17.0, 21.12.0, 22.7.0 and 23.1.0), DTMF (``0x03``, since 20.14.0,
21.9.0, 22.4.0 and 23.0.0), hang-up (``0x00``) or an error (``0xFF``). The protocol has no
authentication: connections are accepted only from ``allowed_networks``.

The byte parsing (:class:`FrameDecoder`) and the frame sequence rules (:class:`StreamState`)
are pure and raise only :class:`~nes2net_stream.service.errors.ProtocolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from nes2net_gateways._common import (
    RateGuard,
    StopCall,
    address_in,
    check_roles,
    discard_events,
    feed,
    parse_networks,
    remote_of,
    run_call,
    score_roles,
)
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig
from nes2net_stream.service.auth import is_loopback
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd, CallStart, Source

KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_ERROR = 0x00, 0x01, 0x03, 0xFF
#: audio kinds and their sample rates (asterisk/asterisk include/asterisk/res_audiosocket.h)
AUDIO_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100,
               0x16: 48000, 0x17: 96000, 0x18: 192000}
#: Asterisk's bit flags in an 0xFF payload (CyCoreSystems/audiosocket README)
ASTERISK_ERRORS = {0x01: "caller hung up", 0x02: "frame forwarding error", 0x04: "memory error"}
#: our 1-byte application error codes sent in an 0xFF frame before closing
ERROR_CODES = {"bad_message": 0x10, "unknown_message": 0x10, "bad_audio_frame": 0x10,
               "audio_before_start": 0x11, "frame_too_large": 0x12, "start_timeout": 0x13,
               "idle_timeout": 0x13, "duplicate_call_id": 0x14, "too_many_calls": 0x15,
               "shutting_down": 0x15, "call_too_long": 0x16, "rate_limited": 0x16,
               "unsupported_format": 0x17, "internal_error": 0x1F}
LOOPBACK = ["127.0.0.0/8", "::1/128"]
HEADER = 3


@dataclass(frozen=True)
class Frame:
    """One AudioSocket frame."""

    kind: int
    payload: bytes


class FrameDecoder:
    """Splits a byte stream into frames; refuses payloads over ``max_payload`` bytes."""

    def __init__(self, max_payload: int):
        self.max_payload = max_payload
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)

    def push(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def frames(self) -> Iterator[Frame]:
        """Yield the complete frames in order; ProtocolError when an oversized one comes up."""
        while len(self._buf) >= HEADER:
            kind = self._buf[0]
            length = int.from_bytes(self._buf[1:3], "big")
            if length > self.max_payload:
                raise ProtocolError("frame_too_large", f"frame kind 0x{kind:02x} announces "
                                    f"{length} bytes (limit {self.max_payload})")
            if len(self._buf) < HEADER + length:
                return
            payload = bytes(self._buf[HEADER:HEADER + length])
            del self._buf[:HEADER + length]
            yield Frame(kind, payload)


@dataclass(frozen=True)
class Event:
    """What a frame means for the call: ``start``, ``audio``, ``dtmf``, ``hangup``, ``error``."""

    type: str
    call_id: str = ""
    rate: int = 0
    data: bytes = b""
    detail: str = ""


class StreamState:
    """Frame sequence rules of one connection: UUID first and once, one audio rate, ..."""

    def __init__(self) -> None:
        self.call_id: str | None = None
        self.rate: int | None = None

    def on_frame(self, frame: Frame) -> Event:
        """Interpret a frame (ProtocolError on anything out of place)."""
        kind, payload = frame.kind, frame.payload
        if kind == KIND_HANGUP:
            return Event("hangup")
        if kind == KIND_ERROR:
            return Event("error", detail=describe_error(payload))
        if kind == KIND_UUID:
            if self.call_id is not None:
                raise ProtocolError("bad_message", "a second UUID frame on one connection")
            if len(payload) != 16:
                raise ProtocolError("bad_message",
                                    f"UUID frame of {len(payload)} bytes (expected 16)")
            self.call_id = str(uuid.UUID(bytes=payload))
            return Event("start", call_id=self.call_id)
        if kind not in AUDIO_RATES and kind != KIND_DTMF:
            raise ProtocolError("unknown_message", f"unknown frame kind 0x{kind:02x}")
        if self.call_id is None:
            raise ProtocolError("audio_before_start", f"frame kind 0x{kind:02x} before the "
                                "UUID frame")
        if kind == KIND_DTMF:
            return Event("dtmf", detail=payload[:1].decode("ascii", "replace"))
        rate = AUDIO_RATES[kind]
        if self.rate is not None and rate != self.rate:
            raise ProtocolError("unsupported_format", f"sample rate changed from {self.rate} "
                                f"to {rate} Hz mid-call")
        if len(payload) % 2:
            raise ProtocolError("bad_audio_frame",
                                f"audio payload of {len(payload)} bytes is not 16-bit samples")
        self.rate = rate
        return Event("audio", rate=rate, data=payload)


def describe_error(payload: bytes) -> str:
    """Human text of an 0xFF payload (Asterisk's bit flags, or the raw code)."""
    if not payload:
        return "error (no code)"
    code = payload[0]
    names = [text for bit, text in ASTERISK_ERRORS.items() if code & bit]
    return ", ".join(names) if names and len(payload) == 1 else f"error code {payload.hex()}"


def error_frame(code: str) -> bytes:
    """The 0xFF frame we send before closing on a protocol error."""
    return bytes([KIND_ERROR, 0, 1, ERROR_CODES.get(code, 0x1F)])


class AudioSocketConfig(GatewayConfig):
    """``[gateways.audiosocket]`` settings (see docs/gateways/audiosocket.md)."""

    allowed_networks: list[str] | None = None
    error_frames: bool = True
    port: int = Field(9092, ge=0, le=65535)


class AudioSocketGateway(Gateway):
    """Asterisk AudioSocket server (``AudioSocket()`` app, ``Dial(AudioSocket/...)``, ARI)."""

    name = "audiosocket"
    transport = "tcp"
    Config = AudioSocketConfig

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: AudioSocketConfig = config  # type: ignore[assignment]
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    def check_config(self) -> None:
        """Parse ``allowed_networks``; require it when listening beyond loopback."""
        check_roles(self.cfg, self.name)
        nets = self.cfg.allowed_networks
        if nets is None:
            if self.auth_required:
                raise ConfigError(
                    f"gateways.audiosocket.allowed_networks: host={self.cfg.host!r} is not "
                    "loopback (or auth = \"required\") and AudioSocket has no authentication: "
                    "list the networks of your Asterisk servers, e.g. [\"10.0.0.5/32\"]")
            nets = LOOPBACK
        self.networks = parse_networks("gateways.audiosocket.allowed_networks", nets)
        if not is_loopback(self.cfg.host) and self.cfg.auth == "off":
            self.log.warning("auth = \"off\": AudioSocket accepts connections from any address")

    def allowed(self, ip: str | None) -> bool:
        """True when ``ip`` may connect (always with ``auth = "off"``)."""
        return self.cfg.auth == "off" or address_in(ip, self.networks)

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                        ) -> None:
        """Serve one Asterisk connection; errors end only this connection."""
        peer = writer.get_extra_info("peername")
        remote = remote_of(writer)
        try:
            if not self.allowed(peer[0] if peer else None):
                self.ctx.metrics.calls_rejected.labels(reason="unauthorized").inc()
                self.log.warning("connection refused: address not in allowed_networks",
                                 remote=remote)
                return
            handle = self.new_call(discard_events)

            async def on_error(err: ProtocolError) -> None:
                if self.cfg.error_frames and not writer.is_closing():
                    writer.write(error_frame(err.code))
                    await asyncio.wait_for(writer.drain(), 2.0)

            await run_call(self, handle, lambda: self._run(reader, handle, remote),
                           remote=remote, on_error=on_error)
        except Exception as exc:  # never let one connection's failure reach the server
            self.log.error("connection failed", remote=remote, error=repr(exc))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _run(self, reader: asyncio.StreamReader, handle: CallHandle,
                   remote: str | None) -> CallEnd:
        lim = self.limits
        decoder = FrameDecoder(min(lim.max_frame_bytes, 0xFFFF))
        state = StreamState()
        guard = RateGuard(lim)
        while True:
            if self.ctx.draining:
                raise StopCall(CallEnd("shutdown"))
            started = state.call_id is not None
            timeout = lim.idle_timeout_s if started else lim.start_timeout_s
            try:
                data = await asyncio.wait_for(reader.read(1 << 16), timeout)
            except TimeoutError:
                raise ProtocolError("idle_timeout" if started else "start_timeout",
                                    f"no frame within {timeout:g} s") from None
            if not data:
                if decoder.pending:
                    raise ProtocolError("bad_message", f"connection closed inside a frame "
                                        f"({decoder.pending} bytes of it received)")
                return CallEnd("stop", "socket closed")
            decoder.push(data)
            for frame in decoder.frames():
                ev = state.on_frame(frame)
                if ev.type == "hangup":
                    return CallEnd("stop", "hangup frame")
                if ev.type == "error":
                    reason = "stop" if ev.detail == "caller hung up" else "error"
                    return CallEnd(reason, ev.detail)  # type: ignore[arg-type]
                if ev.type == "dtmf":
                    self.log.debug("dtmf", call_id=state.call_id, digit=ev.detail)
                elif ev.type == "audio" and ev.data:
                    if not handle.started:
                        self._start(handle, state.call_id or "", ev.rate, remote)
                    feed(handle, ev.data)
                    guard.check(handle)

    def _start(self, handle: CallHandle, call_id: str, rate: int, remote: str | None) -> None:
        roles = (self.cfg.customer_role,)
        metadata = {"provider": "audiosocket", "provider_call_id": call_id,
                    "custom": {"sample_rate": rate}}
        handle.start(CallStart(call_id, "pcm_s16le", rate, roles, score_roles(self.cfg, roles),
                               Source("gateway", self.name, remote), metadata))
