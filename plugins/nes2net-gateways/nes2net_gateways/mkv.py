"""An incremental Matroska (EBML) reader for Kinesis Video Streams' GetMedia output.

GetMedia answers with a stream of MKV fragments, each an EBML header and a Segment (of unknown
size) holding the track definitions, a Cluster (unknown size) of SimpleBlocks and the
fragment's Tags (``AWS_KINESISVIDEO_FRAGMENT_NUMBER``, and in Amazon Connect's streams
``ContactId`` among others). :class:`MkvReader` takes the bytes as they arrive and returns what
they complete: fragment starts, audio blocks (track number and payload) and tags (name and
value). It descends
into the master elements it knows and skips every other element by its size, so that it never
needs an element's end to make progress; a stream it cannot read raises :class:`MkvError`.

Only what the gateway needs is read: track number, name, codec, sampling frequency and
channels; block payloads; simple tags. Laced blocks (never used for PCM audio) are refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: master elements whose children are read (EBML header and the rest are skipped whole)
SEGMENT, CLUSTER, TRACKS, TRACK_ENTRY, AUDIO = 0x18538067, 0x1F43B675, 0x1654AE6B, 0xAE, 0xE1
BLOCK_GROUP, TAGS, TAG, SIMPLE_TAG = 0xA0, 0x1254C367, 0x7373, 0x67C8
MASTERS = frozenset({SEGMENT, CLUSTER, TRACKS, TRACK_ENTRY, AUDIO, BLOCK_GROUP, TAGS, TAG,
                     SIMPLE_TAG})
TRACK_NUMBER, NAME, CODEC_ID, SAMPLING_FREQUENCY, CHANNELS = 0xD7, 0x536E, 0x86, 0xB5, 0x9F
SIMPLE_BLOCK, BLOCK, TAG_NAME, TAG_STRING = 0xA3, 0xA1, 0x45A3, 0x4487
EBML_HEADER = 0x1A45DFA3
#: largest element payload read into memory (a block of PCM is a few KB)
MAX_ELEMENT_BYTES = 1 << 20


class MkvError(ValueError):
    """The stream is not Matroska this reader can follow."""


@dataclass
class TrackInfo:
    """A track definition (fields as far as the stream gave them)."""

    number: int = 0
    name: str = ""
    codec: str = ""
    sampling_frequency: float = 0.0
    channels: int = 1


@dataclass(frozen=True)
class Block:
    """The payload of one (Simple)Block and its track number."""

    track: int
    data: bytes


@dataclass(frozen=True)
class FragmentStart:
    """An EBML header: a new fragment (GetMedia sends each as a document of its own)."""


@dataclass(frozen=True)
class Tag:
    """A simple tag: name and string value."""

    name: str
    value: str


def _vint(buf: bytes | bytearray, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of the EBML variable-size integer at ``pos``; None if incomplete."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    if first == 0:
        raise MkvError("invalid variable-size integer (more than 8 bytes)")
    length = 9 - first.bit_length()
    if pos + length > len(buf):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for b in buf[pos + 1:pos + length]:
        value = (value << 8) | b
    return value, length


class MkvReader:
    """Feed bytes with :meth:`feed`; get the blocks and tags they complete (module docstring)."""

    def __init__(self) -> None:
        self.tracks: dict[int, TrackInfo] = {}
        self._buf = bytearray()
        self._skip = 0  # bytes of a skipped element still to come
        self._track: TrackInfo | None = None  # the TrackEntry being read
        self._tag_name: str | None = None

    def feed(self, data: bytes) -> list[Block | Tag | FragmentStart]:
        """Parse ``data`` (appended to what is left over); raises MkvError on a bad stream."""
        out: list[Block | Tag | FragmentStart] = []
        if self._skip:
            used = min(self._skip, len(data))
            self._skip -= used
            data = data[used:]
        self._buf += data
        buf, pos = self._buf, 0
        while True:
            ident = _vint(buf, pos, keep_marker=True)
            if ident is None:
                break
            size = _vint(buf, pos + ident[1], keep_marker=False)
            if size is None:
                break
            head = ident[1] + size[1]
            eid, length = ident[0], size[0]
            unknown = length == (1 << (7 * size[1])) - 1
            if eid in MASTERS:
                if eid == TRACK_ENTRY:
                    self._track = TrackInfo()
                pos += head
                continue
            if unknown:
                raise MkvError(f"element 0x{eid:X} of unknown size")
            if eid == EBML_HEADER:
                out.append(FragmentStart())
            if eid not in (TRACK_NUMBER, NAME, CODEC_ID, SAMPLING_FREQUENCY, CHANNELS,
                           SIMPLE_BLOCK, BLOCK, TAG_NAME, TAG_STRING):
                if pos + head + length > len(buf):  # skip it as it streams past
                    self._skip = pos + head + length - len(buf)
                    pos = len(buf)
                    break
                pos += head + length
                continue
            if length > MAX_ELEMENT_BYTES:
                raise MkvError(f"element 0x{eid:X} of {length} bytes")
            if pos + head + length > len(buf):
                break
            payload = bytes(buf[pos + head:pos + head + length])
            pos += head + length
            item = self._element(eid, payload)
            if item is not None:
                out.append(item)
        del self._buf[:pos]
        return out

    def _element(self, eid: int, payload: bytes) -> Block | Tag | None:
        if eid in (SIMPLE_BLOCK, BLOCK):
            return _block(payload)
        if eid == TAG_NAME:
            self._tag_name = payload.decode("utf-8", "replace").rstrip("\0")
        elif eid == TAG_STRING:
            if self._tag_name is not None:
                tag = Tag(self._tag_name, payload.decode("utf-8", "replace").rstrip("\0"))
                self._tag_name = None
                return tag
        elif self._track is not None:
            self._track_field(self._track, eid, payload)
        return None

    def _track_field(self, track: TrackInfo, eid: int, payload: bytes) -> None:
        if eid == TRACK_NUMBER:
            track.number = int.from_bytes(payload, "big")
            self.tracks[track.number] = track
        elif eid == NAME:
            track.name = payload.decode("utf-8", "replace").rstrip("\0")
        elif eid == CODEC_ID:
            track.codec = payload.decode("ascii", "replace").rstrip("\0")
        elif eid == SAMPLING_FREQUENCY:
            if len(payload) not in (4, 8):
                raise MkvError(f"SamplingFrequency of {len(payload)} bytes")
            track.sampling_frequency = struct.unpack(">f" if len(payload) == 4 else ">d",
                                                     payload)[0]
        elif eid == CHANNELS:
            track.channels = int.from_bytes(payload, "big")


def _block(payload: bytes) -> Block:
    """A (Simple)Block: track number, 16-bit relative timecode, flags, frame data."""
    track = _vint(payload, 0, keep_marker=False)
    if track is None or len(payload) < track[1] + 3:
        raise MkvError("truncated block header")
    flags = payload[track[1] + 2]
    if flags & 0x06:
        raise MkvError("laced blocks are not supported")
    return Block(track[0], payload[track[1] + 3:])
