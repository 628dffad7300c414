"""RTP payload formats the SIPREC gateway records, and their decoders.

G.711 (PCMU, PCMA) and L16 pass through as samples of the internal event model's encodings;
G.722 (RFC 3551: 16 kHz audio on an 8 kHz RTP clock) and Opus (RFC 7587: a 48 kHz clock)
are decoded here to 16-bit PCM with FFmpeg's decoders through PyAV (installed with the
``webrtc`` extra). Each decoder also says how many RTP clock units a payload covered, so the
receiver can tell gaps from the timestamps, and makes silence for a gap of so many units.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Protocol


class PayloadDecoder(Protocol):
    """Turns one stream's payloads into audio bytes of the call's encoding."""

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        """Audio bytes of ``payload`` and the RTP clock units it covers."""
        ...

    def silence(self, units: int) -> bytes:
        """Silence lasting ``units`` RTP clock units."""
        ...


@dataclass(frozen=True)
class PayloadCodec:
    """One payload format: what the call receives and how to decode it."""

    name: str  # rtpmap encoding name, upper case
    encoding: str  # encoding of the internal event model
    sample_rate: int | None  # of the decoded audio; None: the RTP clock rate (G.711, L16)
    av_decoder: str | None = None  # FFmpeg decoder (G.722, Opus)
    channels: tuple[int, ...] = (1,)  # rtpmap channel counts accepted

    def rate(self, clock_rate: int) -> int:
        """Sample rate of the decoded audio for an RTP clock of ``clock_rate``."""
        return self.sample_rate or clock_rate

    def decoder(self, clock_rate: int) -> PayloadDecoder:
        """A decoder for one stream."""
        if self.av_decoder is None:
            return _Samples(2 if self.encoding == "pcm_s16be" else 1,
                            b"\xff" if self.encoding == "mulaw" else
                            b"\xd5" if self.encoding == "alaw" else b"\x00")
        return _AvDecoder(self.av_decoder, self.rate(clock_rate), clock_rate)

    @property
    def available(self) -> bool:
        """False when the decoder's library (PyAV) is not installed."""
        return self.av_decoder is None or importlib.util.find_spec("av") is not None


CODECS: dict[str, PayloadCodec] = {c.name: c for c in (
    PayloadCodec("PCMU", "mulaw", None),
    PayloadCodec("PCMA", "alaw", None),
    PayloadCodec("L16", "pcm_s16be", None),
    PayloadCodec("G722", "pcm_s16le", 16000, "g722"),
    PayloadCodec("OPUS", "pcm_s16le", 48000, "libopus", channels=(1, 2)),
)}


class _Samples:
    """G.711 and L16: the payload is the samples (a trailing partial sample is dropped)."""

    def __init__(self, width: int, silence: bytes):
        self.width = width
        self.zero = silence * width

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        extra = len(payload) % self.width
        if extra:
            payload = payload[:-extra]
        return payload, len(payload) // self.width

    def silence(self, units: int) -> bytes:
        return self.zero * units


class _AvDecoder:
    """An FFmpeg decoder (through PyAV) producing 16-bit mono PCM at ``rate``."""

    def __init__(self, name: str, rate: int, clock_rate: int):
        import av

        self._av: Any = av
        self.ctx: Any = av.CodecContext.create(name, "r")
        self.ctx.sample_rate = rate
        self.ctx.layout = "mono"
        self.ctx.format = "s16"
        self.ctx.open()
        self.ratio = rate / clock_rate  # decoded samples per RTP clock unit
        self.errors = 0

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        try:
            frames = self.ctx.decode(self._av.Packet(payload))
        except (self._av.error.FFmpegError, ValueError):
            self.errors += 1
            return b"", 0
        out, samples = [], 0
        for frame in frames:
            pcm = frame.to_ndarray()
            if pcm.dtype.kind == "f":  # a decoder that ignored the s16 request
                pcm = (pcm.clip(-1, 1) * 32767).astype("<i2")
            if pcm.ndim == 2 and pcm.shape[0] > 1:  # planar channels: keep the first
                pcm = pcm[:1]
            mono = pcm.reshape(-1).astype("<i2", copy=False)
            out.append(mono.tobytes())
            samples += mono.shape[0]
        return b"".join(out), round(samples / self.ratio)

    def silence(self, units: int) -> bytes:
        return b"\x00\x00" * round(units * self.ratio)
