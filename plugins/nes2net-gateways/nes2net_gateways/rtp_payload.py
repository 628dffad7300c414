"""RTP payload formats of the SIPREC, Asterisk External Media and Telnyx gateways; decoders.

G.711 (PCMU, PCMA) and L16 pass through as samples of the internal event model's encodings;
G.722 (RFC 3551: 16 kHz audio on an 8 kHz RTP clock), G.729 (RFC 3551: 10-byte frames, an
Annex B SID frame of 2 bytes last), GSM 06.10 (33-byte frames), Opus (RFC 7587: a 48 kHz
clock), AMR and AMR-WB (RFC 4867, re-packed by :mod:`rtp_amr`) are decoded here to 16-bit PCM
with FFmpeg's decoders through PyAV (installed with the ``webrtc`` extra). Each decoder also
says how many RTP clock units a payload covered, so the receiver can tell gaps from the
timestamps, makes silence for a gap of so many units, and conceals lost packets in the
decoded audio's own encoding (:func:`conceal_audio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nes2net_gateways.rtp_amr import (
    AMR,
    AMR_WB,
    NO_DATA,
    AmrFlavour,
    AmrPayloadError,
    depacketize,
    detect_octet_aligned,
    octet_aligned_in,
)
from nes2net_stream.audio import av_codecs, plc
from nes2net_stream.audio.av_codecs import PacketDecoder, PacketError
from nes2net_stream.audio.g711 import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode


class PayloadDecoder(Protocol):
    """Turns one stream's payloads into audio bytes of the call's encoding."""

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        """Audio bytes of ``payload`` and the RTP clock units it covers."""
        ...

    def silence(self, units: int) -> bytes:
        """Silence lasting ``units`` RTP clock units."""
        ...

    def conceal(self, last: bytes, units: int) -> bytes:
        """``units`` RTP clock units concealing lost packets after the audio ``last``."""
        ...


def conceal_audio(last: bytes, samples: int, encoding: str) -> bytes:
    """``samples`` samples of ``encoding`` concealing a loss after ``last`` (same encoding).

    The concealment rule is :func:`nes2net_stream.audio.plc.conceal`; G.711 is concealed in
    the linear domain and encoded again.
    """
    if encoding == "mulaw":
        return mulaw_encode(plc.conceal(mulaw_decode(last), samples)).tobytes()
    if encoding == "alaw":
        return alaw_encode(plc.conceal(alaw_decode(last), samples)).tobytes()
    dtype = ">i2" if encoding == "pcm_s16be" else "<i2"
    pcm = np.frombuffer(last[:len(last) - len(last) % 2], dtype).astype(np.int16)
    return plc.conceal(pcm, samples).astype(dtype).tobytes()


@dataclass(frozen=True)
class PayloadCodec:
    """One payload format: what the call receives and how to decode it."""

    name: str  # rtpmap encoding name, upper case
    encoding: str  # encoding of the internal event model
    sample_rate: int | None  # of the decoded audio; None: the RTP clock rate (G.711, L16)
    av_decoder: str | None = None  # FFmpeg decoder (G.722, Opus, AMR, AMR-WB)
    channels: tuple[int, ...] = (1,)  # rtpmap channel counts accepted
    amr: AmrFlavour | None = None  # RFC 4867 payloads, re-packed before decoding

    def rate(self, clock_rate: int) -> int:
        """Sample rate of the decoded audio for an RTP clock of ``clock_rate``."""
        return self.sample_rate or clock_rate

    def decoder(self, clock_rate: int, fmtp: str | None = None) -> PayloadDecoder:
        """A decoder for one stream.

        ``fmtp``: the stream's ``a=fmtp`` parameters (AMR: ``octet-align``); None when no
        SDP was seen, and an AMR stream's packing is then guessed from its first payload.
        """
        if self.av_decoder is None:
            return _Samples(self.encoding)
        if self.amr is not None:
            octet = None if fmtp is None else octet_aligned_in(fmtp)
            return _AmrDecoder(self.av_decoder, self.rate(clock_rate), clock_rate, self.amr,
                               octet)
        if self.name == "G729":
            return _G729Decoder(self.av_decoder, self.rate(clock_rate), clock_rate)
        return _AvDecoder(self.av_decoder, self.rate(clock_rate), clock_rate)

    @property
    def available(self) -> bool:
        """False when the decoder's library (PyAV) is not installed."""
        return self.av_decoder is None or av_codecs.available()


CODECS: dict[str, PayloadCodec] = {c.name: c for c in (
    PayloadCodec("PCMU", "mulaw", None),
    PayloadCodec("PCMA", "alaw", None),
    PayloadCodec("L16", "pcm_s16be", None),
    PayloadCodec("G722", "pcm_s16le", 16000, "g722"),
    PayloadCodec("OPUS", "pcm_s16le", 48000, "libopus", channels=(1, 2)),
    PayloadCodec("G729", "pcm_s16le", 8000, "g729"),
    PayloadCodec("GSM", "pcm_s16le", 8000, "gsm"),
    PayloadCodec("AMR-WB", "pcm_s16le", 16000, "amrwb", amr=AMR_WB),
    PayloadCodec("AMR", "pcm_s16le", 8000, "amrnb", amr=AMR),
)}


_SILENCE = {"mulaw": b"\xff", "alaw": b"\xd5", "pcm_s16be": b"\x00\x00"}


class _Samples:
    """G.711 and L16: the payload is the samples (a trailing partial sample is dropped)."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self.zero = _SILENCE[encoding]
        self.width = len(self.zero)

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        extra = len(payload) % self.width
        if extra:
            payload = payload[:-extra]
        return payload, len(payload) // self.width

    def silence(self, units: int) -> bytes:
        return self.zero * units

    def conceal(self, last: bytes, units: int) -> bytes:
        return conceal_audio(last, units, self.encoding)


class _AvDecoder:
    """An FFmpeg decoder (through PyAV) producing 16-bit mono PCM at ``rate``."""

    def __init__(self, name: str, rate: int, clock_rate: int):
        self.packets = PacketDecoder(name, rate)
        self.ratio = rate / clock_rate  # decoded samples per RTP clock unit
        self.errors = 0

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        try:
            pcm = self.packets.decode(payload)
        except PacketError:
            self.errors += 1
            return b"", 0
        return pcm, round(len(pcm) // 2 / self.ratio)

    def silence(self, units: int) -> bytes:
        return b"\x00\x00" * round(units * self.ratio)

    def conceal(self, last: bytes, units: int) -> bytes:
        return conceal_audio(last, round(units * self.ratio), "pcm_s16le")


class _AmrDecoder(_AvDecoder):
    """AMR / AMR-WB: RFC 4867 payloads re-packed into storage-format frames, then decoded.

    A NO_DATA frame (lost or not sent) becomes 20 ms of silence; a payload that does not fit
    the packing is dropped and counted in ``errors``.
    """

    def __init__(self, name: str, rate: int, clock_rate: int, flavour: AmrFlavour,
                 octet: bool | None):
        super().__init__(name, rate, clock_rate)
        self.flavour = flavour
        self.octet = octet

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        if self.octet is None:
            self.octet = detect_octet_aligned(payload, self.flavour)
        try:
            frames = depacketize(payload, self.flavour, self.octet)
        except AmrPayloadError:
            self.errors += 1
            return b"", 0
        out, units = [], 0
        for frame in frames:
            if frame[0] >> 3 == NO_DATA:
                pcm, n = b"\x00\x00" * self.flavour.samples, self.flavour.samples
            else:
                pcm, n = super().decode(frame)
            out.append(pcm)
            units += n
        return b"".join(out), units


class _G729Decoder(_AvDecoder):
    """G.729: 10-byte frames of 10 ms; an Annex B SID frame (2 bytes, last) becomes silence."""

    FRAME, SID, SAMPLES = 10, 2, 80

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        extra = len(payload) % self.FRAME
        if extra not in (0, self.SID):
            self.errors += 1
            return b"", 0
        pcm, units = super().decode(payload[:len(payload) - extra]) if len(payload) > extra \
            else (b"", 0)
        if extra:
            pcm, units = pcm + b"\x00\x00" * self.SAMPLES, units + self.SAMPLES
        return pcm, units
