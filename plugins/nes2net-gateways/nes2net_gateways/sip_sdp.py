"""SIP message bodies: multipart/mixed (RFC 2046), SDP (RFC 4566) offers and answers (RFC 3264).

The parsers raise only :class:`~nes2net_gateways.sip_message.SipError` on malformed input and
bound their work, so they can be fed whatever the network sends.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from nes2net_gateways.sip_message import HEAD_END, LINE_END, SipError, header_params

__all__ = [
    "AcceptedStream", "BodyPart", "Crypto", "MediaDescription", "RtpMap", "SessionDescription",
    "answer_sdp", "message_bodies", "parse_sdp", "split_multipart",
]

_MEDIA_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_RTPMAP = re.compile(r"([0-9]{1,3})[ \t]+([^/\s]+)/([0-9]{1,9})(?:/([0-9]{1,3}))?")
_CRYPTO = re.compile(r"([0-9]{1,9})[ \t]+(\S+)[ \t]+(\S+)(?:[ \t]+(.*))?")
_PTIME = re.compile(r"([0-9]{1,6})(?:\.[0-9]{0,6})?")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_METADATA_TYPES = ("application/rs-metadata+xml", "application/rs-metadata")
_MAX_HEADER_BYTES = 8192


@dataclass(frozen=True)
class BodyPart:
    """One part of a multipart body."""

    content_type: str
    params: dict[str, str]
    disposition: str | None
    body: bytes


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    """Media type (lowercased, no parameters) and parameters (quoted values unquoted)."""
    kind, params = header_params(value)
    if not _MEDIA_TYPE.fullmatch(kind):
        raise SipError(400, "malformed Content-Type")
    for name, val in params.items():
        if len(val) >= 2 and val[0] == val[-1] == '"':
            params[name] = re.sub(r"\\(.)", r"\1", val[1:-1])
    return kind.lower(), params


def _part(raw: bytes) -> BodyPart:
    """A body part: its headers, a blank line, its body."""
    if raw[:1] in (b"\r", b"\n"):  # no headers at all
        head, body = b"", raw[2 if raw[:2] == b"\r\n" else 1:]
    else:
        end = HEAD_END.search(raw)
        head, body = (raw[:end.start()], raw[end.end():]) if end else (raw, b"")
    if len(head) > _MAX_HEADER_BYTES:
        raise SipError(400, "body part headers too large")
    try:
        lines = LINE_END.split(head.decode("utf-8")) if head else []
    except UnicodeDecodeError:
        raise SipError(400, "body part headers are not UTF-8") from None
    headers: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and headers:
            headers[-1][1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipError(400, "malformed body part header")
        headers.append([name.strip().lower(), value.strip()])
    ctype, params = "text/plain", {}
    disposition = None
    for name, value in headers:
        if name in ("content-type", "c"):
            ctype, params = _content_type(value)
        elif name == "content-disposition":
            disposition = header_params(value)[0].lower() or None
    return BodyPart(ctype, params, disposition, body)


def split_multipart(content_type_header: str, body: bytes, *, max_parts: int = 8) -> list[BodyPart]:
    """The parts of a multipart body (RFC 2046); preamble and epilogue are ignored."""
    kind, params = _content_type(content_type_header)
    if not kind.startswith("multipart/"):
        raise SipError(415, f"not a multipart body: {kind}")
    boundary = params.get("boundary", "")
    if not _BOUNDARY.fullmatch(boundary):
        raise SipError(400, "missing or malformed multipart boundary")
    delimiter = re.compile(
        rb"(?:\A|\r?\n)--" + re.escape(boundary.encode()) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    parts: list[BodyPart] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            if len(parts) >= max_parts:
                raise SipError(400, "too many body parts")
            parts.append(_part(body[start:match.start()]))
        if match[1]:
            return parts
        start = match.end()
    raise SipError(400, "multipart body without its closing delimiter")


def message_bodies(content_type_header: str | None, body: bytes) -> tuple[str | None, bytes | None]:
    """(SDP text, rs-metadata XML) of a SIP body: plain SDP or SIPREC multipart/mixed."""
    if not body:
        return None, None
    if content_type_header is None:
        raise SipError(400, "body without Content-Type")
    kind, _ = _content_type(content_type_header)
    sdp: bytes | None = None
    metadata: bytes | None = None
    if kind == "application/sdp":
        sdp = body
    elif kind == "multipart/mixed":
        for part in split_multipart(content_type_header, body):
            if part.content_type == "application/sdp" and sdp is None:
                sdp = part.body
            elif part.content_type in _METADATA_TYPES and metadata is None:
                metadata = part.body
        if sdp is None:
            raise SipError(415, "multipart body without application/sdp")
    else:
        raise SipError(415, f"unsupported body type {kind}")
    try:
        return sdp.decode("utf-8"), metadata
    except UnicodeDecodeError:
        raise SipError(400, "SDP is not UTF-8") from None


@dataclass(frozen=True)
class RtpMap:
    """An RTP payload format: encoding name (upper case), clock rate, channels."""

    encoding: str
    clock_rate: int
    channels: int = 1


@dataclass(frozen=True)
class Crypto:
    """An SDES ``a=crypto`` attribute (RFC 4568)."""

    tag: int
    suite: str
    key_params: str
    session_params: str = ""


STATIC_PAYLOADS: dict[int, RtpMap] = {
    0: RtpMap("PCMU", 8000), 3: RtpMap("GSM", 8000), 4: RtpMap("G723", 8000),
    8: RtpMap("PCMA", 8000), 9: RtpMap("G722", 8000), 13: RtpMap("CN", 8000),
    18: RtpMap("G729", 8000),
}


@dataclass
class MediaDescription:
    """One ``m=`` section."""

    media: str
    port: int
    port_count: int
    proto: str
    formats: list[str]
    payload_types: list[int] = field(default_factory=list)
    connection: str | None = None
    label: str | None = None
    direction: str = "sendrecv"
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    crypto: list[Crypto] = field(default_factory=list)
    rtcp_mux: bool = False
    ptime: int | None = None


@dataclass
class SessionDescription:
    """A parsed SDP: origin fields, session name, session-level connection, media."""

    origin: tuple[str, str, str, str, str, str]
    session_name: str
    connection: str | None
    media: list[MediaDescription]


def _connection(value: str) -> str:
    fields = value.split()
    if len(fields) != 3 or fields[0] != "IN" or fields[1] not in ("IP4", "IP6"):
        raise SipError(400, "malformed c= line")
    address = fields[2].split("/", 1)[0]
    if not address:
        raise SipError(400, "malformed c= address")
    return address


def _media(value: str) -> MediaDescription:
    fields = value.split()
    if len(fields) < 3:
        raise SipError(400, "malformed m= line")
    port, _, count = fields[1].partition("/")
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise SipError(400, "malformed m= port")
    if count and (not re.fullmatch(r"[0-9]{1,5}", count) or not 0 < int(count) <= 65535):
        raise SipError(400, "malformed m= port count")
    formats = fields[3:]
    pts: list[int] = []
    if "RTP" in fields[2].upper():
        pts = [int(f) for f in formats if re.fullmatch(r"[0-9]{1,3}", f) and int(f) <= 127]
    return MediaDescription(fields[0], int(port), int(count or 1), fields[2], formats, pts)


def _attribute(media: MediaDescription, name: str, value: str) -> None:
    """Apply a media-level ``a=name:value`` to ``media``."""
    if name == "rtpmap":
        match = _RTPMAP.fullmatch(value)
        if not match or int(match[1]) > 127 or int(match[3]) == 0:
            raise SipError(400, "malformed a=rtpmap")
        channels = int(match[4]) if match[4] else 1
        media.rtpmap[int(match[1])] = RtpMap(match[2].upper(), int(match[3]), channels or 1)
    elif name == "fmtp":
        fmt, _, params = value.partition(" ")
        if re.fullmatch(r"[0-9]{1,3}", fmt):
            media.fmtp[int(fmt)] = params.strip()
    elif name == "crypto":
        match = _CRYPTO.fullmatch(value)
        if not match:
            raise SipError(400, "malformed a=crypto")
        media.crypto.append(Crypto(int(match[1]), match[2], match[3], (match[4] or "").strip()))
    elif name in _DIRECTIONS:
        media.direction = name
    elif name == "label":
        media.label = value
    elif name == "rtcp-mux":
        media.rtcp_mux = True
    elif name == "ptime" and (match := _PTIME.fullmatch(value)):
        media.ptime = int(match[1])


def parse_sdp(text: str, *, max_media: int = 16, max_lines: int = 1000) -> SessionDescription:
    """Parse an SDP (leniently: unknown lines and attributes are ignored)."""
    if text.count("\n") > max_lines:
        raise SipError(400, "too many SDP lines")
    lines = [line.strip() for line in LINE_END.split(text)]
    lines = [line for line in lines if line]
    if not lines or lines[0] != "v=0":
        raise SipError(400, "SDP must start with v=0")
    origin: tuple[str, str, str, str, str, str] | None = None
    session_name = ""
    connection: str | None = None
    direction = "sendrecv"
    media: list[MediaDescription] = []
    own_connection: set[int] = set()
    for line in lines[1:]:
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1:
            continue
        value = value.strip()
        current = media[-1] if media else None
        if kind == "m":
            if len(media) >= max_media:
                raise SipError(488, "too many m= lines")
            media.append(_media(value))
            media[-1].direction = direction
        elif kind == "c":
            if current is None:
                connection = _connection(value)
            else:
                current.connection = _connection(value)
                own_connection.add(len(media) - 1)
        elif current is None and kind == "o":
            fields = value.split()
            if len(fields) != 6 or origin is not None:
                raise SipError(400, "malformed o= line")
            origin = (fields[0], fields[1], fields[2], fields[3], fields[4], fields[5])
        elif current is None and kind == "s":
            session_name = value
        elif kind == "a":
            name, _, attr = value.partition(":")
            if current is not None:
                _attribute(current, name.strip(), attr.strip())
            elif name in _DIRECTIONS:
                direction = name
    if origin is None:
        raise SipError(400, "SDP without o= line")
    for index, m in enumerate(media):
        if index not in own_connection:
            m.connection = connection
        for pt in m.payload_types:
            if pt not in m.rtpmap and pt in STATIC_PAYLOADS:
                m.rtpmap[pt] = STATIC_PAYLOADS[pt]
    return SessionDescription(origin, session_name, connection, media)


@dataclass(frozen=True)
class AcceptedStream:
    """How to answer one offered stream: our port, the chosen payload type, DTMF, SRTP key."""

    port: int
    payload_type: int
    rtpmap: RtpMap
    telephone_event: int | None = None
    crypto: str | None = None
    fmtp: str | None = None  # a=fmtp parameters of the chosen payload type


def answer_sdp(
    offer: SessionDescription,
    *,
    address: str,
    session_id: int,
    version: int,
    accepted: Sequence[AcceptedStream | None],
    username: str = "nes2net",
) -> str:
    """An RFC 3264 answer: one m= line per offered one, ``None`` entries rejected (port 0)."""
    if len(accepted) != len(offer.media):
        raise ValueError("answer_sdp needs one entry of `accepted` per offered m= line")
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o={username} {session_id} {version} IN {family} {address}",
             "s=nes2net-stream", "t=0 0"]
    for offered, stream in zip(offer.media, accepted, strict=True):
        if stream is None:
            lines.append(" ".join(["m=" + offered.media, "0", offered.proto, *offered.formats]))
            continue
        formats = [str(stream.payload_type)]
        if stream.telephone_event is not None:
            formats.append(str(stream.telephone_event))
        lines.append(" ".join([f"m={offered.media}", str(stream.port), offered.proto, *formats]))
        lines.append(f"c=IN {family} {address}")
        rtp = stream.rtpmap
        channels = f"/{rtp.channels}" if rtp.channels != 1 else ""
        lines.append(f"a=rtpmap:{stream.payload_type} {rtp.encoding}/{rtp.clock_rate}{channels}")
        if stream.fmtp:
            lines.append(f"a=fmtp:{stream.payload_type} {stream.fmtp}")
        if stream.telephone_event is not None:
            te = offered.rtpmap.get(stream.telephone_event)
            rate = te.clock_rate if te is not None else rtp.clock_rate
            lines.append(f"a=rtpmap:{stream.telephone_event} telephone-event/{rate}")
            lines.append(f"a=fmtp:{stream.telephone_event} 0-15")
        if offered.label is not None:
            lines.append(f"a=label:{offered.label}")
        if stream.crypto is not None:
            lines.append(f"a=crypto:{stream.crypto}")
        sending = offered.direction in ("sendonly", "sendrecv")
        lines.append("a=recvonly" if sending else "a=inactive")
    return "\r\n".join(lines) + "\r\n"
