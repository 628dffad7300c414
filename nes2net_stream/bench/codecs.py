"""Audio encoded in RTP codecs with FFmpeg's encoders (PyAV), for benchmarks and tests.

The gateways only decode; these helpers make the other side: 20 ms packets of G.722, Opus or
AMR from float samples, as a provider or an SBC would send them.
"""

from __future__ import annotations

import numpy as np


def encode_packets(encoder: str, rate: int, samples: np.ndarray, *,
                   bit_rate: int | None = None, flush: bool = True) -> list[bytes]:
    """20 ms packets of float ``samples`` at ``rate`` from FFmpeg's ``encoder`` (via PyAV).

    ``flush`` also returns what the encoder holds back at the end (its look-ahead).
    """
    import av

    enc = av.CodecContext.create(encoder, "w")
    enc.sample_rate, enc.layout, enc.format = rate, "mono", "s16"
    if bit_rate:
        enc.bit_rate = bit_rate
    enc.open()
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    step, out = rate // 50, []
    for i in range(0, len(pcm) - step + 1, step):
        frame = av.AudioFrame.from_ndarray(pcm[None, i:i + step], format="s16", layout="mono")
        frame.sample_rate = rate
        out += [bytes(p) for p in enc.encode(frame)]
    return out + ([bytes(p) for p in enc.encode(None)] if flush else [])
