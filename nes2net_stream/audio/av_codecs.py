"""Compressed audio packets to and from samples with FFmpeg's codecs through PyAV.

PyAV comes with the ``webrtc`` extra. The generic protocol's ``opus`` encoding decodes one
Opus packet (RFC 6716) per binary message with :class:`PacketDecoder`; the client, the
benchmarks and the tests make packets with :func:`encode_packets`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np


class PacketError(ValueError):
    """A packet the decoder rejects."""


def available() -> bool:
    """True when PyAV (the ``webrtc`` extra) is installed."""
    return importlib.util.find_spec("av") is not None


class PacketDecoder:
    """One stream's decoder: each packet to 16-bit little-endian mono PCM at ``rate``."""

    def __init__(self, decoder: str, rate: int):
        import av

        self._av: Any = av
        self.ctx: Any = av.CodecContext.create(decoder, "r")
        self.ctx.sample_rate, self.ctx.layout, self.ctx.format = rate, "mono", "s16"
        self.ctx.open()

    def decode(self, packet: bytes) -> bytes:
        """The PCM of one packet; PacketError for a packet the decoder rejects."""
        if not packet:
            raise PacketError("empty packet")
        try:
            frames = self.ctx.decode(self._av.Packet(packet))
        except (self._av.error.FFmpegError, ValueError) as exc:
            raise PacketError(f"undecodable packet ({str(exc)[:80]})") from None
        out = []
        for frame in frames:
            pcm = frame.to_ndarray()
            if pcm.dtype.kind == "f":  # a decoder that ignored the s16 request
                pcm = (np.clip(pcm, -1, 1) * 32767).astype("<i2")
            if pcm.ndim == 2 and pcm.shape[0] > 1:  # planar channels: keep the first
                pcm = pcm[:1]
            out.append(pcm.reshape(-1).astype("<i2", copy=False).tobytes())
        return b"".join(out)


def encode_packets(encoder: str, rate: int, samples: np.ndarray, *,
                   bit_rate: int | None = None, frame_ms: int = 20, flush: bool = True
                   ) -> list[bytes]:
    """Packets of ``frame_ms`` of float mono ``samples`` at ``rate`` from FFmpeg's ``encoder``.

    ``flush`` also returns what the encoder holds back at the end (its look-ahead).
    """
    import av

    enc = av.CodecContext.create(encoder, "w")
    enc.sample_rate, enc.layout, enc.format = rate, "mono", "s16"
    if bit_rate:
        enc.bit_rate = bit_rate
    enc.open()
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    step, out = rate * frame_ms // 1000, []
    for i in range(0, len(pcm) - step + 1, step):
        frame = av.AudioFrame.from_ndarray(pcm[None, i:i + step], format="s16", layout="mono")
        frame.sample_rate = rate
        out += [bytes(p) for p in enc.encode(frame)]
    return out + ([bytes(p) for p in enc.encode(None)] if flush else [])
