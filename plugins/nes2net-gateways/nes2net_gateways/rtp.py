"""RTP (RFC 3550) for the SIPREC and Asterisk External Media gateways: parsing, ordering, ports.

:func:`parse_rtp` and :class:`RtpReceiver` are pure: a receiver turns the packets of one
stream into the payload bytes to feed, in order, filling short gaps (lost packets, or silence
an endpoint did not send) with the codec's silence so that stream time stays aligned with the
sender's clock, and dropping duplicates, late packets and other payload types (DTMF, comfort
noise). Nothing here raises on bad input: a datagram that is not RTP is counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nes2net_gateways._common import feed
from nes2net_gateways.rtp_payload import PayloadDecoder

if TYPE_CHECKING:
    from nes2net_stream.gateways.api import CallHandle

RTP_VERSION = 2
HEADER = 12
#: RTCP packet types (RFC 3550, 4585): a datagram whose second byte is one of these is RTCP
RTCP_TYPES = range(192, 224)
#: a jump of more sequence numbers than this (either way) starts a new stream
MAX_SEQ_JUMP = 3000
PORT_TRIES = 64

@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet (header fields and payload, padding and extensions removed)."""

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """The RTP packet in ``data``, or None for RTCP, wrong versions and malformed packets."""
    if len(data) < HEADER or data[0] >> 6 != RTP_VERSION or data[1] in RTCP_TYPES:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    start = HEADER + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(data) < start + 4:
            return None
        start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
    end = len(data)
    if b0 & 0x20:  # padding: the last byte counts the padding bytes
        pad = data[-1]
        if pad == 0:
            return None
        end -= pad
    if start > end:
        return None
    return RtpPacket(b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, bytes(data[start:end]))


def _seq_delta(new: int, old: int) -> int:
    """Signed distance between two 16-bit sequence numbers."""
    return (new - old + 0x8000) % 0x10000 - 0x8000


def _ts_delta(new: int, old: int) -> int:
    """Signed distance between two 32-bit timestamps."""
    return (new - old + 0x8000_0000) % 0x1_0000_0000 - 0x8000_0000


@dataclass
class RtpStats:
    """Counters of one stream (logged when the call ends)."""

    packets: int = 0
    lost: int = 0  # sequence numbers never seen (or seen too late to be put back)
    late: int = 0  # duplicates and packets too late to be put back in order
    reordered: int = 0  # out of order, put back in order (also counted in packets)
    other: int = 0  # other payload types (telephone-event, comfort noise), dropped
    invalid: int = 0  # not RTP, or from an address that does not send this stream
    resyncs: int = 0  # new SSRC or a jump in the sequence: a new stream from here
    concealed_s: float = 0.0  # lost audio concealed by repeating the last packet, fading
    filled_s: float = 0.0  # silence inserted for gaps


#: outcomes counted by ``<prefix>_packets_total{result}`` and the RtpStats field of each
PACKET_RESULTS = (("received", "packets"), ("lost", "lost"), ("late", "late"),
                  ("reordered", "reordered"), ("other", "other"), ("invalid", "invalid"))


@dataclass(frozen=True)
class RtpCounters:
    """The Prometheus counters of a gateway's RTP streams (see :func:`rtp_counters`)."""

    packets: Any
    concealed: Any
    filled: Any


def rtp_counters(prefix: str, streams: str, registry: Any) -> RtpCounters:
    """The RTP counters of a gateway: packets by result, seconds concealed and filled.

    ``<prefix>_packets_total{result}``, ``<prefix>_concealed_seconds_total`` and
    ``<prefix>_gap_fill_seconds_total`` (prefix ``nes2net_siprec_rtp``, for instance);
    ``streams`` names the streams in their help texts.
    """
    from prometheus_client import Counter

    packets = Counter(
        f"{prefix}_packets_total", f"RTP packets of {streams}, by outcome (received; lost; "
        "late; reordered: received out of order and put back in order, also counted as "
        "received; other payload types; invalid or from a foreign address)",
        ["result"], registry=registry)
    concealed = Counter(f"{prefix}_concealed_seconds_total",
                        f"Seconds of lost RTP audio of {streams} concealed by repeating the "
                        "last packet, fading", registry=registry)
    filled = Counter(f"{prefix}_gap_fill_seconds_total",
                     f"Seconds of silence inserted for RTP gaps of {streams} (silence "
                     "suppression, or loss beyond the concealed part)", registry=registry)
    return RtpCounters(packets, concealed, filled)


def count_rtp(now: RtpStats, was: RtpStats, counters: RtpCounters) -> RtpStats:
    """Add what ``now`` counts beyond ``was`` to the Prometheus counters; return a snapshot."""
    for result, name in PACKET_RESULTS:
        value, old = getattr(now, name), getattr(was, name)
        if value > old:
            counters.packets.labels(result=result).inc(value - old)
    if now.concealed_s > was.concealed_s:
        counters.concealed.inc(now.concealed_s - was.concealed_s)
    if now.filled_s > was.filled_s:
        counters.filled.inc(now.filled_s - was.filled_s)
    return RtpStats(**vars(now))


class RtpReceiver:
    """Orders the packets of one stream, conceals losses and fills gaps (module docstring).

    Args:
        payload_type: the negotiated payload type; others are counted and dropped.
        clock_rate: RTP clock of the payload format (units per second).
        decoder: turns payloads into audio bytes, conceals and makes silence
            (:mod:`nes2net_gateways.rtp_payload`).
        max_gap_s: longest gap filled; a longer one is filled only this far (stream time then
            runs behind the sender's clock by the rest).
        reorder: packets held back at most while waiting for a missing one (0: none; a
            packet arriving after the ones behind it were released is late). Packets in
            order are never held.
        conceal_s: longest part of a gap after lost packets that is concealed (0: none).
    """

    def __init__(self, payload_type: int, clock_rate: int, decoder: PayloadDecoder,
                 max_gap_s: float = 2.0, *, reorder: int = 4, conceal_s: float = 0.06):
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.decoder = decoder
        self.max_gap = int(max_gap_s * clock_rate)
        self.reorder = reorder
        self.conceal_units = int(conceal_s * clock_rate)
        self.stats = RtpStats()
        self._ssrc: int | None = None
        self._held: dict[int, RtpPacket] = {}  # by extended sequence number
        self._top: int | None = None  # highest extended sequence number accepted
        self._next: int | None = None  # extended sequence number of the next to release
        self._next_ts: int | None = None
        self._last = b""  # audio of the last packet released

    def push(self, packet: RtpPacket) -> list[bytes]:
        """Audio bytes to feed, in order, after ``packet`` arrived (maybe none yet)."""
        st = self.stats
        if packet.payload_type != self.payload_type:
            st.other += 1
            return []
        out: list[bytes] = []
        top = self._top
        if self._ssrc != packet.ssrc or (
                top is not None and abs(_seq_delta(packet.sequence, top)) > MAX_SEQ_JUMP):
            if self._ssrc is not None:
                st.resyncs += 1
                out += self.flush()
            self._ssrc = packet.ssrc
            self._top = self._next = self._next_ts = None
            self._last = b""
            top = None
        ext = packet.sequence if top is None else top + _seq_delta(packet.sequence, top)
        if self._next is not None and (ext < self._next or ext in self._held):
            st.late += 1
            return out
        st.packets += 1
        if top is not None and ext < top:
            st.reordered += 1
        self._held[ext] = packet
        self._top = ext if top is None else max(top, ext)
        if self._next is None:
            self._next = ext
        return out + self._release(self.reorder)

    def flush(self) -> list[bytes]:
        """Release every packet held back (the stream ended or paused); the gaps are lost."""
        return self._release(0)

    def _release(self, keep: int) -> list[bytes]:
        out: list[bytes] = []
        while self._held:
            first = min(self._held)
            if first != self._next and len(self._held) <= keep:
                break
            lost = first - (self._next if self._next is not None else first)
            self._emit(self._held.pop(first), lost, out)
            self._next = first + 1
        return out

    def _emit(self, packet: RtpPacket, lost: int, out: list[bytes]) -> None:
        st = self.stats
        st.lost += lost
        if self._next_ts is not None:
            gap = _ts_delta(packet.timestamp, self._next_ts)
            if gap > 0:
                fill = min(gap, self.max_gap)
                hidden = min(fill, self.conceal_units) if lost else 0
                if hidden:
                    out.append(self.decoder.conceal(self._last, hidden))
                    st.concealed_s += hidden / self.clock_rate
                if fill > hidden:
                    out.append(self.decoder.silence(fill - hidden))
                    st.filled_s += (fill - hidden) / self.clock_rate
        audio, units = self.decoder.decode(packet.payload)
        self._next_ts = (packet.timestamp + units) % 0x1_0000_0000
        if audio:
            out.append(audio)
            self._last = audio


def flush_held(receiver: RtpReceiver, handle: CallHandle, channel: str | None = None) -> None:
    """Feed what ``receiver`` still holds back to a call that is ending (errors ignored)."""
    if not handle.started or handle.session is None:
        return
    with contextlib.suppress(Exception):  # the call ends either way
        for audio in receiver.flush():
            feed(handle, audio, channel)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None] | None):
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.on_datagram is not None:
            self.on_datagram(data, addr)


@dataclass
class RtpPort:
    """A bound RTP socket (and its RTCP neighbour, whose packets are discarded)."""

    port: int
    rtp: asyncio.DatagramTransport
    rtcp: asyncio.DatagramTransport | None

    def close(self) -> None:
        """Close both sockets."""
        self.rtp.close()
        if self.rtcp is not None:
            self.rtcp.close()


async def _bind(host: str, port: int, proto: asyncio.DatagramProtocol
                ) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=(host, port))
    return transport  # type: ignore[return-value]


async def bind_rtp_port(host: str, port_min: int, port_max: int,
                        on_datagram: Callable[[bytes, Any], None]) -> RtpPort:
    """Bind an even RTP port in ``[port_min, port_max]`` (and the odd RTCP port after it).

    ``port_min = 0`` binds an ephemeral port with no RTCP socket. Ports in use (by other
    calls, or other ingest processes) are skipped; raises OSError when none is free after
    :data:`PORT_TRIES` attempts.
    """
    proto = _Datagrams(on_datagram)
    if port_min == 0:
        t = await _bind(host, 0, proto)
        return RtpPort(t.get_extra_info("sockname")[1], t, None)
    first, last = port_min + port_min % 2, port_max - 1
    if first > last:
        raise OSError(errno.EADDRNOTAVAIL, "the RTP port range holds no even port pair")
    pairs = (last - first) // 2 + 1
    start = random.randrange(pairs)
    for i in range(min(PORT_TRIES, pairs)):
        port = first + 2 * ((start + i) % pairs)
        try:
            rtp = await _bind(host, port, proto)
        except OSError:
            continue
        try:
            rtcp = await _bind(host, port + 1, _Datagrams(None))
        except OSError:
            rtp.close()
            continue
        return RtpPort(port, rtp, rtcp)
    raise OSError(errno.EADDRINUSE, f"no free RTP port pair in {port_min}-{port_max}")


def close_ports(ports: list[RtpPort]) -> None:
    """Close every port in ``ports`` (ignoring errors)."""
    for p in ports:
        with contextlib.suppress(Exception):
            p.close()
