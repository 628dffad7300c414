"""One Asterisk External Media call: its RTP port, its stream and the internal call it feeds.

A :class:`MediaCall` is created when the ARI application registers a call with the control
API. It owns one RTP port (and the RTCP port after it), accepts packets from the first
sender only (symmetric RTP, optionally restricted to ``media_networks``), orders them and
fills gaps with :class:`~nes2net_gateways.rtp.RtpReceiver`, and feeds the call until the
application deletes it, the media stops for ``media_timeout_s``, a limit is passed or the
service drains. The summary is published whatever ended it.

Asterisk sends exactly the format the application asked for (no negotiation), with its own
payload-type numbers; signed linear is big-endian (network order) on RTP. The payload type of
the first audio packet is checked against the format: one that names a different codec is an
``unsupported_format`` error, except the documented case of ``format=slin`` delivering
μ-law, which is decoded to what was asked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nes2net_gateways._common import RateGuard, feed
from nes2net_gateways.call_task import CallTask
from nes2net_gateways.rtp import (
    RTCP_TYPES,
    RtpPort,
    RtpReceiver,
    RtpStats,
    count_rtp,
    flush_held,
    parse_rtp,
)
from nes2net_gateways.rtp_payload import CODECS, conceal_audio
from nes2net_stream.audio.g711 import MULAW_DECODE
from nes2net_stream.gateways.api import CallHandle
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

if TYPE_CHECKING:
    from nes2net_gateways.asterisk_rtp import AsteriskRtpGateway

TICK_S = 0.5
METRICS_EVERY_S = 5.0
#: static payload types (RFC 3551 and Asterisk's table) that are not the audio itself
COMFORT_NOISE = frozenset({13, 19})
#: static audio payload types of other codecs: PCMU, GSM, G.723, DVI4, LPC, PCMA, G.722,
#: L16 (10, 11), QCELP, MPA, G.728, DVI4, G.729
STATIC_AUDIO = {0: "PCMU", 3: "GSM", 4: "G723", 5: "DVI4", 6: "DVI4", 7: "LPC", 8: "PCMA",
                9: "G722", 10: "L16", 11: "L16", 12: "QCELP", 14: "MPA", 15: "G728",
                16: "DVI4", 17: "DVI4", 18: "G729"}


@dataclass(frozen=True)
class MediaFormat:
    """An Asterisk format name as External Media sends it over RTP."""

    name: str  # Asterisk's format name (the ``format`` of /channels/externalMedia)
    codec: str  # key of :data:`nes2net_gateways.rtp_payload.CODECS`
    clock_rate: int  # RTP clock
    payload_type: int | None  # fixed by RFC 3551; None: Asterisk's own number, learned

    @property
    def encoding(self) -> str:
        """Encoding of the internal call."""
        return CODECS[self.codec].encoding

    @property
    def sample_rate(self) -> int:
        """Sample rate of the internal call."""
        return CODECS[self.codec].rate(self.clock_rate)


FORMATS: dict[str, MediaFormat] = {f.name: f for f in (
    MediaFormat("ulaw", "PCMU", 8000, 0),
    MediaFormat("alaw", "PCMA", 8000, 8),
    MediaFormat("g722", "G722", 8000, 9),
    MediaFormat("g729", "G729", 8000, 18),  # needs a G.729 codec module in Asterisk
    MediaFormat("gsm", "GSM", 8000, 3),
    MediaFormat("opus", "OPUS", 48000, None),
    *(MediaFormat(f"slin{k or ''}", "L16", rate, None) for k, rate in (
        (None, 8000), (12, 12000), (16, 16000), (24, 24000), (32, 32000), (44, 44100),
        (48, 48000), (96, 96000), (192, 192000))),
)}


class _MulawAsL16:
    """μ-law payloads decoded to big-endian 16-bit samples (``format=slin`` sending PCMU)."""

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        return MULAW_DECODE[np.frombuffer(payload, np.uint8)].astype(">i2").tobytes(), \
            len(payload)

    def silence(self, units: int) -> bytes:
        return b"\x00\x00" * units

    def conceal(self, last: bytes, units: int) -> bytes:
        return conceal_audio(last, units, "pcm_s16be")


class MediaCall(CallTask):
    """One registered call and its RTP stream (see the module docstring)."""

    def __init__(self, gateway: AsteriskRtpGateway, handle: CallHandle, fmt: MediaFormat,
                 call_url: str):
        super().__init__(gateway.ctx, handle, f"asterisk_rtp:{handle.call_id}")
        self.gw = gateway
        self.fmt = fmt
        self.call_url = call_url
        self.call_id = handle.call_id or ""
        self.port: RtpPort | None = None
        self.receiver = RtpReceiver(-1, fmt.clock_rate, CODECS[fmt.codec].decoder(fmt.clock_rate),
                                    reorder=gateway.cfg.rtp_reorder_packets,
                                    conceal_s=gateway.cfg.rtp_conceal_ms / 1000.0)
        self.latched: tuple[str, int] | None = None
        self.created = time.monotonic()
        self.last_packet: float | None = None
        self._guard = RateGuard(gateway.limits)
        self._counted = RtpStats()
        self._metrics_at = self.created + METRICS_EVERY_S
        self.log = gateway.log.bind(call_id=self.call_id)

    # ------------------------------------------------------------------ RTP in
    def on_datagram(self, data: bytes, addr: Any) -> None:
        """A datagram on the call's port: check its sender, order it, feed the call."""
        if self.end is not None or not self.handle.started:
            return
        stats = self.receiver.stats
        try:
            source = (addr[0], addr[1])
            if self.latched is None:
                if not self.gw.media_allowed(source[0]):
                    stats.invalid += 1
                    return
                self.latched = source  # symmetric RTP: one sender from here
            elif source != self.latched:
                stats.invalid += 1
                return
            if len(data) > self.gw.limits.max_frame_bytes:
                raise ProtocolError("frame_too_large", f"RTP packet of {len(data)} bytes")
            if len(data) > 1 and data[1] in RTCP_TYPES:
                return  # RTCP multiplexed on the RTP port: not needed
            packet = parse_rtp(data)
            if packet is None:
                stats.invalid += 1
                return
            self.last_packet = time.monotonic()
            if self.receiver.payload_type < 0 and not self._learn(packet.payload_type):
                stats.other += 1
                return
            for payload in self.receiver.push(packet):
                feed(self.handle, payload)
            self._guard.check(self.handle)
        except ProtocolError as err:
            self.gw.ctx.metrics.protocol_errors.labels(code=err.code).inc()
            self.log.warning("protocol error", code=err.code, detail=err.message)
            self.finish(CallEnd("error", err.code))
        except Exception as exc:  # never let one call's packet break the event loop
            self.log.exception("gateway failure", error=repr(exc))
            self.finish(CallEnd("error", "internal_error"))

    def _learn(self, pt: int) -> bool:
        """Check the first audio packet's payload type against the format and keep it.

        False for a packet to skip (comfort noise; with a fixed payload type, other dynamic
        types such as telephone events); ProtocolError for another codec's static type.
        """
        fmt = self.fmt
        if pt in COMFORT_NOISE:
            return False
        if pt in STATIC_AUDIO and pt != fmt.payload_type and \
                not (fmt.codec == "L16" and STATIC_AUDIO[pt] == "L16"):
            if fmt.name != "slin" or pt != 0:
                raise ProtocolError("unsupported_format", f"payload type {pt} "
                                    f"({STATIC_AUDIO[pt]}) on a call registered with format "
                                    f"{fmt.name}")
            self.log.warning("format slin delivers PCMU (a known Asterisk behaviour); "
                             "decoding it as such")
            self.receiver.decoder = _MulawAsL16()
        elif fmt.payload_type is not None and pt != fmt.payload_type:
            return False
        self.receiver.payload_type = pt
        return True

    # ------------------------------------------------------------------ lifecycle
    def tick(self, now: float) -> float:
        """End the call on its start or media timeout or a passed limit."""
        if self.last_packet is None:
            if now - self.created > self.gw.limits.start_timeout_s:
                self.finish(CallEnd("timeout", "start_timeout"))
        elif now - self.last_packet > self.gw.cfg.media_timeout_s:
            self.finish(CallEnd("timeout", "idle_timeout"))
        else:
            try:
                self._guard.check(self.handle)
            except ProtocolError as err:
                self.finish(CallEnd("error", err.code))
        if now >= self._metrics_at:
            self._count()
            self._metrics_at = now + METRICS_EVERY_S
        return TICK_S

    def _count(self) -> None:
        self._counted = count_rtp(self.receiver.stats, self._counted, self.gw.rtp)

    async def close(self) -> None:
        """Close the port and publish the summary."""
        if self.port is not None:
            self.port.close()
        if self.end is None or self.end.reason != "error":
            flush_held(self.receiver, self.handle)
        self._count()
        st = self.receiver.stats
        self.log.info("media stream ended", packets=st.packets, lost=st.lost, late=st.late,
                      reordered=st.reordered, other=st.other, invalid=st.invalid,
                      concealed_s=round(st.concealed_s, 3), filled_s=round(st.filled_s, 3))
        try:
            await self.handle.end(self.end or CallEnd("shutdown"))
        finally:
            self.gw.forget(self)

    def state(self) -> dict[str, Any]:
        """What the control API reports of the call."""
        st = self.receiver.stats
        session = self.handle.session
        return {"call_id": self.call_id, "format": self.fmt.name,
                "port": self.port.port if self.port else None,
                "media_from": f"{self.latched[0]}:{self.latched[1]}" if self.latched else None,
                "packets": st.packets, "lost": st.lost, "late": st.late,
                "reordered": st.reordered, "invalid": st.invalid,
                "concealed_s": round(st.concealed_s, 3),
                "audio_s": round(session.audio_seconds, 3) if session else 0.0,
                "ended": self.end.reason if self.end else None}
