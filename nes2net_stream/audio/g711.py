"""G.711 mu-law and A-law codecs (ITU-T G.711), vectorised with lookup tables.

Python 3.13 removed :mod:`audioop`, so the codecs are written here: decoding is a 256-entry
table lookup; encoding follows the segment search of the recommendation.
"""

from __future__ import annotations

import numpy as np

_MULAW_BIAS = 0x84
_MULAW_BIAS14 = 0x21
_MULAW_CLIP14 = 8159


def _build_mulaw_decode() -> np.ndarray:
    table = np.zeros(256, dtype=np.int16)
    for byte in range(256):
        u = ~byte & 0xFF
        sign = u & 0x80
        exponent = (u >> 4) & 0x07
        mantissa = u & 0x0F
        magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
        table[byte] = -magnitude if sign else magnitude
    return table


def _build_alaw_decode() -> np.ndarray:
    table = np.zeros(256, dtype=np.int16)
    for byte in range(256):
        a = byte ^ 0x55
        sign = a & 0x80
        exponent = (a >> 4) & 0x07
        mantissa = a & 0x0F
        if exponent == 0:
            magnitude = (mantissa << 4) + 8
        else:
            magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
        table[byte] = magnitude if sign else -magnitude
    return table


MULAW_DECODE = _build_mulaw_decode()
ALAW_DECODE = _build_alaw_decode()
#: the same tables as float32 in [-1, 1) (exact: x / 32768 is a power-of-two scaling)
MULAW_DECODE_F32 = MULAW_DECODE.astype(np.float32) / 32768.0
ALAW_DECODE_F32 = ALAW_DECODE.astype(np.float32) / 32768.0


def mulaw_decode(data: bytes | np.ndarray) -> np.ndarray:
    """Decode mu-law bytes to 16-bit linear PCM samples."""
    codes = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    return MULAW_DECODE[np.asarray(codes, dtype=np.uint8)]


def alaw_decode(data: bytes | np.ndarray) -> np.ndarray:
    """Decode A-law bytes to 16-bit linear PCM samples."""
    codes = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    return ALAW_DECODE[np.asarray(codes, dtype=np.uint8)]


def _segment(magnitude: np.ndarray, base: int) -> np.ndarray:
    """G.711 segment number (0..7): the largest ``s`` with ``magnitude >= base << s``."""
    seg = np.zeros(magnitude.shape, dtype=np.int32)
    for s in range(1, 8):
        seg = np.where(magnitude >= (base << s), s, seg)
    return seg


def mulaw_encode(pcm: np.ndarray) -> np.ndarray:
    """Encode 16-bit linear PCM samples to mu-law bytes (14-bit reference algorithm)."""
    x = np.asarray(pcm, dtype=np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(x), _MULAW_CLIP14) + _MULAW_BIAS14
    exponent = _segment(magnitude, 0x20)
    mantissa = (magnitude >> (exponent + 1)) & 0x0F
    code = np.where(magnitude > 0x1FFF, 0x7F, (exponent << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    """Encode 16-bit linear PCM samples to A-law bytes."""
    x = np.asarray(pcm, dtype=np.int32)
    sign = np.where(x >= 0, 0x80, 0)
    magnitude = np.where(x < 0, -(x >> 3) - 1, x >> 3)  # 13-bit magnitude
    exponent = _segment(magnitude, 0x10)
    mantissa = (magnitude >> np.maximum(exponent, 1)) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
