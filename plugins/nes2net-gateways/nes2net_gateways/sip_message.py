"""SIP messages (RFC 3261): parsing of datagrams and TCP streams, responses, URI helpers.

Everything here is pure and fuzz-safe: the parsers raise only :class:`SipError` (carrying the
status to answer with) on malformed input, and bound their work by sizes and counts.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

__all__ = [
    "COMPACT", "REASONS", "SipError", "SipMessage", "StreamFramer", "addr_uri", "header_params",
    "make_response", "new_branch", "new_tag", "parse_message", "uri_host_port", "uri_user",
]

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    513: "Message Too Large",
}

COMPACT: dict[str, str] = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "o": "Event", "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By",
    "x": "Session-Expires",
}

_WELL_KNOWN = (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "In-Reply-To",
    "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To",
    "Referred-By", "Reply-To", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Session-Expires", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)
_CANONICAL = {name.lower(): name for name in _WELL_KNOWN}
_LIST_HEADERS = frozenset(n.lower() for n in (
    "Via", "Route", "Record-Route", "Contact", "Supported", "Require", "Proxy-Require",
    "Unsupported", "Allow", "Accept",
))

_TOKEN = r"[!%'*+\-.0-9A-Z_`a-z~]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) (\S+) SIP/2\.0", re.IGNORECASE)
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?", re.IGNORECASE)
_HEADER_LINE = re.compile(rf"({_TOKEN})[ \t]*:(.*)")
_METHOD = re.compile(_TOKEN)
_CSEQ = re.compile(rf"([0-9]{{1,10}})[ \t]+({_TOKEN})")
#: end of a header section; a line end (CRLF, or a lone LF from lenient peers)
HEAD_END = re.compile(rb"\r?\n\r?\n")
LINE_END = re.compile(r"\r?\n")
_BAD_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]*")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9.\-_]+)?")
_MAX_CSEQ = 2**31 - 1


class SipError(Exception):
    """A malformed or unacceptable SIP message, with the status to answer it with."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason if reason is not None else REASONS.get(status, "Error")


def _canon(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded)."""
    low = name.lower()
    if low in COMPACT:
        return COMPACT[low]
    return _CANONICAL.get(low, name)


def _unquoted(value: str) -> Iterator[tuple[int, str]]:
    """``(index, character)`` of ``value`` outside double-quoted strings (escapes honoured)."""
    quoted = escaped = False
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        else:
            yield i, ch
    if quoted:
        raise SipError(400, "unterminated quoted string")


def _split_top(value: str, sep: str) -> list[str]:
    """``value`` split on ``sep`` outside double quotes and ``<...>``."""
    parts: list[str] = []
    start = depth = 0
    for i, ch in _unquoted(value):
        if ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif ch == sep and not depth:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


@dataclass
class SipMessage:
    """A SIP request (``method``/``uri`` set) or response (``status``/``reason`` set)."""

    method: str | None
    uri: str | None
    status: int | None
    reason: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        """Whether this is a request."""
        return self.method is not None

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive, compact names accepted)."""
        want = _canon(name).lower()
        return next((v for n, v in self.headers if n.lower() == want), None)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``; list headers (Via, Contact...) split on commas."""
        want = _canon(name).lower()
        values = [v for n, v in self.headers if n.lower() == want]
        if want not in _LIST_HEADERS:
            return values
        return [p.strip() for v in values for p in _split_top(v, ",") if p.strip()]

    @property
    def call_id(self) -> str:
        """The Call-ID (SipError 400 when missing)."""
        value = self.get("Call-ID")
        if not value:
            raise SipError(400, "missing Call-ID")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        """The CSeq number and method (SipError 400 when missing or malformed)."""
        match = _CSEQ.fullmatch(self.get("CSeq") or "")
        if not match or int(match[1]) > _MAX_CSEQ:
            raise SipError(400, "missing or malformed CSeq")
        return int(match[1]), match[2]

    def to_bytes(self) -> bytes:
        """The wire form, with Content-Length set to the body's length."""
        if self.method is not None:
            lines = [f"{self.method} {self.uri} SIP/2.0"]
        else:
            lines = [f"SIP/2.0 {self.status} {self.reason or ''}".rstrip()]
        lines += [f"{n}: {v}" for n, v in self.headers if n.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def _parse_head(head: bytes, max_headers: int) -> SipMessage:
    """The start line and headers of a header section (no body checks yet)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError(400, "header section is not UTF-8") from None
    lines = LINE_END.split(text)
    first = lines[0]
    if (match := _REQUEST_LINE.fullmatch(first)) is not None:
        msg = SipMessage(match[1], match[2], None, None)
    elif (match := _STATUS_LINE.fullmatch(first)) is not None:
        msg = SipMessage(None, None, int(match[1]), (match[2] or "").strip())
    else:
        raise SipError(400, "malformed start line")
    if _BAD_CHARS.search(first):
        raise SipError(400, "control character in start line")
    raw: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not raw:
                raise SipError(400, "continuation line without a header")
            raw[-1] += " " + line.strip()
        else:
            raw.append(line)
            if len(raw) > max_headers:
                raise SipError(400, "too many headers")
    for line in raw:
        match = _HEADER_LINE.fullmatch(line)
        if match is None or _BAD_CHARS.search(line):
            raise SipError(400, "malformed header line")
        msg.headers.append((_canon(match[1]), match[2].strip()))
    return msg


def _content_length(msg: SipMessage) -> int | None:
    """The Content-Length, if any (SipError 400 when malformed or contradictory)."""
    values = {v for n, v in msg.headers if n == "Content-Length"}
    if not values:
        return None
    if len(values) > 1 or not re.fullmatch(r"[0-9]{1,10}", next(iter(values))):
        raise SipError(400, "malformed Content-Length")
    return int(next(iter(values)))


def _check(msg: SipMessage) -> None:
    """Mandatory headers and a CSeq agreeing with the request method."""
    needed = ("Via", "From", "To", "Call-ID", "CSeq") if msg.is_request else ("Call-ID", "CSeq")
    for name in needed:
        if not msg.get(name):
            raise SipError(400, f"missing {name}")
    _, method = msg.cseq
    if msg.is_request and method != msg.method:
        raise SipError(400, "CSeq method does not match the request method")


def parse_message(data: bytes, *, max_bytes: int = 65535, max_headers: int = 128) -> SipMessage:
    """Parse one SIP message (a UDP datagram, or one framed from a stream)."""
    if len(data) > max_bytes:
        raise SipError(513, "message too large")
    data = bytes(data).lstrip(b"\r\n")
    if not data:
        raise SipError(400, "empty message")
    end = HEAD_END.search(data)
    head, rest = (data[:end.start()], data[end.end():]) if end else (data.rstrip(b"\r\n"), b"")
    msg = _parse_head(head, max_headers)
    _check(msg)
    length = _content_length(msg)
    if length is None:
        msg.body = rest
    elif length > len(rest):
        raise SipError(400, "body shorter than Content-Length")
    else:
        msg.body = rest[:length]
    return msg


class StreamFramer:
    """Frames SIP messages out of a TCP/TLS byte stream (Content-Length required)."""

    def __init__(self, *, max_bytes: int = 65535) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._scan = 0
        self._pending = 0  # total size of the message whose body is still arriving
        self._error: SipError | None = None

    def feed(self, data: bytes) -> list[SipMessage]:
        """Add received bytes; return the messages completed so far.

        After a framing error the framer stays failed: the SipError is raised now (or on the
        next call, when messages completed before the error are being returned) and again on
        every later call.
        """
        if self._error is not None:
            raise self._error
        out: list[SipMessage] = []
        try:
            self._feed(data, out)
        except SipError as exc:
            self._error = exc
            self._buf.clear()
            if not out:
                raise
        return out

    def _feed(self, data: bytes, out: list[SipMessage]) -> None:
        self._buf += data
        while True:
            if self._pending:
                if len(self._buf) < self._pending:
                    return
                total, self._pending = self._pending, 0
                out.append(parse_message(bytes(self._buf[:total]), max_bytes=self._max))
                del self._buf[:total]
                self._scan = 0
            if self._buf[:1] in (b"\r", b"\n"):  # keep-alives (RFC 5626), stray line ends
                del self._buf[:len(self._buf) - len(self._buf.lstrip(b"\r\n"))]
                self._scan = 0
            end = HEAD_END.search(self._buf, self._scan)
            if end is None:
                if len(self._buf) > self._max:
                    raise SipError(513, "header section too large")
                self._scan = max(0, len(self._buf) - 4)
                return
            if end.end() > self._max:
                raise SipError(513, "header section too large")
            length = _content_length(_parse_head(bytes(self._buf[:end.start()]), 128))
            if length is None:
                raise SipError(400, "missing Content-Length on a stream")
            total = end.end() + length
            if total > self._max:
                raise SipError(513, "message too large")
            self._pending = total


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``value;name=v;flag`` into the value and its parameters (names lowercased)."""
    first, *rest = _split_top(value, ";")
    params: dict[str, str] = {}
    for item in rest:
        name, _, val = item.partition("=")
        if name.strip():
            params[name.strip().lower()] = val.strip()
    return first.strip(), params


def addr_uri(value: str) -> str:
    """The URI of a name-addr (``"A" <sip:a@b>;tag=x``) or addr-spec (``sip:a@b;tag=x``)."""
    opening = next((i for i, ch in _unquoted(value) if ch == "<"), None)
    if opening is not None:
        close = value.find(">", opening + 1)
        if close < 0:
            raise SipError(400, "unterminated <URI>")
        uri = value[opening + 1:close].strip()
    else:
        uri = value.split(";", 1)[0].strip()
    if not uri:
        raise SipError(400, "empty URI")
    return uri


def _sip_parts(uri: str) -> tuple[str | None, str]:
    """(userinfo or None, hostport) of a sip:/sips: URI; SipError 416 otherwise."""
    scheme, colon, rest = uri.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise SipError(416, "not a sip: or sips: URI")
    at = rest.rfind("@")
    user = rest[:at] if at >= 0 else None
    hostport = re.split(r"[;?]", rest[at + 1:], maxsplit=1)[0]
    return user, hostport


def uri_host_port(uri: str) -> tuple[str, int | None]:
    """Host (IPv6 without brackets) and port of a sip:/sips: URI."""
    _, hostport = _sip_parts(uri)
    if hostport.startswith("["):
        close = hostport.find("]")
        host, tail = hostport[1:close], hostport[close + 1:]
        if close < 0 or not _IPV6.fullmatch(host) or ":" not in host:
            raise SipError(416, "malformed IPv6 reference")
    else:
        host, colon, port = hostport.partition(":")
        tail = colon + port
        if not _HOST.fullmatch(host):
            raise SipError(416, "malformed host")
    if not tail:
        return host, None
    if not re.fullmatch(r":[0-9]{1,5}", tail) or not 0 < int(tail[1:]) < 65536:
        raise SipError(416, "malformed port")
    return host, int(tail[1:])


def uri_user(uri: str) -> str | None:
    """The user part of a sip:/sips: URI (``None`` without one); tel: gives the number."""
    scheme, colon, rest = uri.strip().partition(":")
    if colon and scheme.lower() == "tel":
        return rest.split(";", 1)[0].strip() or None
    user, _ = _sip_parts(uri)
    if user is None:
        return None
    return user.split(":", 1)[0] or None


def make_response(
    request: SipMessage,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipMessage:
    """A response to ``request``: its Via, From, To (+ tag), Call-ID, CSeq, then ``headers``."""
    copied = [(n, v) for n, v in request.headers if n == "Via"]
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.get(name)
        if value is None:
            continue
        if name == "To" and to_tag and "tag" not in header_params(value)[1]:
            value = f"{value};tag={to_tag}"
        copied.append((name, value))
    copied += list(headers)
    text = reason if reason is not None else REASONS.get(status, "")
    return SipMessage(None, None, status, text, copied, body)


def new_branch() -> str:
    """A fresh RFC 3261 Via branch (magic cookie + 20 random URL-safe characters)."""
    return "z9hG4bK" + secrets.token_urlsafe(15)


def new_tag() -> str:
    """A fresh From/To tag (16 random hex characters)."""
    return secrets.token_hex(8)
