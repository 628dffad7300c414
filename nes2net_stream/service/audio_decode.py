"""Decoding call audio bytes into per-channel float32 samples."""

from __future__ import annotations

import numpy as np

from nes2net_stream.audio import g711
from nes2net_stream.service.events import BYTES_PER_SAMPLE, ENCODINGS


class AudioFormatError(ValueError):
    """Audio bytes that do not fit the declared format (e.g. a partial sample frame)."""


def decode(data: bytes, encoding: str, channels: int) -> np.ndarray:
    """Decode interleaved audio bytes to float32 of shape (frames, channels) in [-1, 1]."""
    if encoding not in ENCODINGS:
        raise AudioFormatError(f"unsupported encoding {encoding!r}")
    if not 1 <= channels <= 8:
        raise AudioFormatError(f"channels must be 1..8, got {channels}")
    width = BYTES_PER_SAMPLE[encoding] * channels
    if len(data) % width:
        raise AudioFormatError(f"{len(data)} bytes is not a whole number of {width}-byte frames "
                               f"({encoding}, {channels} channel(s))")
    # one table lookup per G.711 sample; PCM scaled in place (per message: keep it cheap)
    if encoding == "pcm_s16le" or encoding == "pcm_s16be":
        x = np.frombuffer(data, dtype="<i2" if encoding == "pcm_s16le" else ">i2"
                          ).astype(np.float32)
        x *= 1.0 / 32768.0
    elif encoding == "mulaw":
        x = g711.MULAW_DECODE_F32.take(np.frombuffer(data, dtype=np.uint8))
    elif encoding == "alaw":
        x = g711.ALAW_DECODE_F32.take(np.frombuffer(data, dtype=np.uint8))
    else:
        x = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise AudioFormatError("float32 audio contains NaN or infinite samples")
        x = np.clip(x, -1.0, 1.0)
    return x.reshape(-1, channels)
