"""AMR and AMR-WB RTP payloads (RFC 4867) turned into frames FFmpeg's decoders read.

An RTP payload holds a codec mode request (CMR), a table of contents (one entry per frame:
follow bit F, frame type FT, quality bit Q) and the frames' speech bits, either
*octet-aligned* (``octet-align=1`` in the SDP: every field padded to whole bytes) or
*bandwidth-efficient* (the default: the fields packed bit by bit). FFmpeg's ``amrnb`` and
``amrwb`` decoders read the storage format of RFC 4867 section 5 instead: per frame one header
byte (``0 FT(4) Q 0 0``) and the speech bits padded to whole bytes. This module converts the
one into the other; only the single-channel payloads without interleaving or CRCs that VoIP
equipment sends are read.
"""

from __future__ import annotations

from dataclasses import dataclass

#: speech bits per frame type: AMR (4.75-12.2 kbit/s, then SID) and AMR-WB (6.6-23.85, SID)
AMR_BITS = (95, 103, 118, 134, 148, 159, 204, 244, 39)
AMR_WB_BITS = (132, 177, 253, 285, 317, 365, 397, 461, 477, 40)
NO_DATA = 15  # frame type of a frame lost or not sent


class AmrPayloadError(ValueError):
    """A payload that is not a valid RFC 4867 payload in the expected packing."""


@dataclass(frozen=True)
class AmrFlavour:
    """AMR (narrowband) or AMR-WB: the frame sizes and the samples of one 20 ms frame."""

    bits: tuple[int, ...]
    samples: int  # per 20 ms frame, at the decoded rate

    def size(self, ft: int) -> int:
        """Speech bits of a frame of type ``ft`` (0 for NO_DATA and reserved types)."""
        return self.bits[ft] if ft < len(self.bits) else 0


AMR = AmrFlavour(AMR_BITS, 160)
AMR_WB = AmrFlavour(AMR_WB_BITS, 320)


class _Bits:
    """Reads a byte string MSB first."""

    def __init__(self, data: bytes):
        self.value = int.from_bytes(data, "big")
        self.total = len(data) * 8
        self.pos = 0

    def take(self, n: int) -> int:
        if self.pos + n > self.total:
            raise AmrPayloadError("payload shorter than its table of contents says")
        self.pos += n
        return (self.value >> (self.total - self.pos)) & ((1 << n) - 1)


def _storage_frame(ft: int, q: int, speech: int, nbits: int) -> bytes:
    """One storage-format frame: header byte and the speech bits padded to whole bytes."""
    nbytes = (nbits + 7) // 8
    body = (speech << (nbytes * 8 - nbits)).to_bytes(nbytes, "big") if nbytes else b""
    return bytes([(ft << 3) | (q << 2)]) + body


def _toc(reader: _Bits, octet: bool) -> list[tuple[int, int]]:
    entries = []
    while True:
        f, ft, q = reader.take(1), reader.take(4), reader.take(1)
        if octet and reader.take(2):
            raise AmrPayloadError("non-zero padding in a table-of-contents entry")
        entries.append((ft, q))
        if not f:
            return entries
        if len(entries) > 64:
            raise AmrPayloadError("table of contents too long")


def depacketize(payload: bytes, flavour: AmrFlavour, octet: bool) -> list[bytes]:
    """Storage-format frames of one RTP payload (NO_DATA frames included, as one byte).

    Raises AmrPayloadError for a payload that does not fit the packing.
    """
    reader = _Bits(payload)
    reader.take(4)  # CMR: what the sender would like to receive; a listener ignores it
    if octet and reader.take(4):
        raise AmrPayloadError("non-zero reserved bits after the CMR")
    frames = []
    for ft, q in _toc(reader, octet):
        if len(flavour.bits) <= ft < NO_DATA:
            raise AmrPayloadError(f"reserved frame type {ft}")
        nbits = flavour.size(ft)
        speech = reader.take(nbits)
        if octet:
            reader.take(-nbits % 8)
        frames.append(_storage_frame(ft, q, speech, nbits))
    if reader.total - reader.pos >= 8:
        raise AmrPayloadError("payload longer than its table of contents says")
    return frames


def detect_octet_aligned(payload: bytes, flavour: AmrFlavour) -> bool:
    """Guess the packing of a payload whose SDP was not seen (a stream without one).

    True when the payload parses exactly as octet-aligned (zero reserved and padding bits,
    no byte left over), which a bandwidth-efficient payload rarely does.
    """
    try:
        depacketize(payload, flavour, octet=True)
    except AmrPayloadError:
        return False
    return True


def octet_aligned_in(fmtp: str) -> bool:
    """Whether an ``a=fmtp`` parameter list asks for the octet-aligned packing."""
    for param in fmtp.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "octet-align":
            return value.strip() == "1"
    return False
