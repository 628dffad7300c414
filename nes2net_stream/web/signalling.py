"""WebRTC signalling requests: validating the offer body and the errors sent back as JSON.

Pure functions, no I/O, so they can be tested directly. See docs/webrtc.md for the
request and response documents.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from nes2net_stream.service.protocol import CALL_ID_RE, ROLE_RE

OFFER_KEYS = {"sdp", "type", "call_id", "metadata", "channel_role"}
SDP_LINE_RE = re.compile(r"^[a-z]=[\x20-\x7e\x80-\U0010ffff]*\Z")
SDP_REQUIRED = (("o=", "an origin line (o=)"), ("m=", "at least one media section (m=)"),
                ("a=ice-ufrag:", "ICE credentials (a=ice-ufrag)"),
                ("a=ice-pwd:", "ICE credentials (a=ice-pwd)"),
                ("a=fingerprint:", "a DTLS fingerprint (a=fingerprint)"))


class SignallingError(Exception):
    """A refused signalling request: HTTP status, a stable error code and a clear message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, Any]:
        """The JSON error document: ``{"error": {"code": ..., "message": ...}}``."""
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class OfferRequest:
    """A validated signalling request.

    Attributes:
        sdp: the client's SDP offer.
        call_id: id of the call of the first audio track (later tracks get ``<id>:<n>``).
        metadata: client metadata published with every event of the call(s).
        channel_role: channel role of the audio (``caller`` unless the client says otherwise).
    """

    sdp: str
    call_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    channel_role: str = "caller"


def check_sdp(sdp: str) -> None:
    """Reject text that is not a plausible SDP offer (aiortc accepts almost anything)."""
    lines = [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]
    if not lines or lines[0] != "v=0":
        raise SignallingError(400, "bad_sdp", "the SDP must start with the line v=0")
    bad = next((i for i, ln in enumerate(lines, 1) if not SDP_LINE_RE.match(ln)), None)
    if bad is not None:
        raise SignallingError(400, "bad_sdp", f"SDP line {bad} is not of the form <letter>=<value>")
    for prefix, what in SDP_REQUIRED:
        if not any(ln.startswith(prefix) for ln in lines):
            raise SignallingError(400, "bad_sdp", f"the SDP offer lacks {what}")


def parse_offer(body: bytes, *, max_metadata_bytes: int) -> OfferRequest:
    """Validate a signalling request body (JSON) and return the offer it carries."""
    try:
        msg = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, huge integers, nesting
        raise SignallingError(400, "bad_json", f"the request body is not valid JSON: "
                              f"{str(exc)[:200]}") from None
    if not isinstance(msg, dict):
        raise SignallingError(400, "bad_request", "the request body must be a JSON object")
    unknown = sorted(set(msg) - OFFER_KEYS)
    if unknown:
        raise SignallingError(400, "bad_request", f"unknown field(s) {unknown} (put extra "
                              "information under 'metadata')")
    if msg.get("type") != "offer":
        raise SignallingError(400, "bad_request", 'the request needs "type": "offer"')
    sdp = msg.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise SignallingError(400, "bad_sdp", 'the request needs the offer\'s SDP text in "sdp"')
    check_sdp(sdp)
    call_id = msg.get("call_id")
    if call_id is None:
        call_id = f"webrtc-{uuid.uuid4().hex[:16]}"
    elif not isinstance(call_id, str) or not CALL_ID_RE.match(call_id) or len(call_id) > 120:
        raise SignallingError(400, "bad_request", "call_id must be 1-120 characters of letters, "
                              "digits and . _ : @ + / = -")
    metadata = msg.get("metadata", {})
    if not isinstance(metadata, dict):
        raise SignallingError(400, "bad_request", "metadata must be a JSON object")
    if len(json.dumps(metadata)) > max_metadata_bytes:
        raise SignallingError(413, "metadata_too_large", f"metadata exceeds "
                              f"{max_metadata_bytes} bytes")
    role = msg.get("channel_role", "caller")
    if not isinstance(role, str) or not ROLE_RE.match(role):
        raise SignallingError(400, "bad_request", "channel_role must be a lower-case name such "
                              "as 'caller' or 'agent'")
    return OfferRequest(sdp=sdp, call_id=call_id, metadata=metadata, channel_role=role)


def track_call_id(call_id: str, index: int) -> str:
    """Call id of the ``index``-th (0-based) audio track of a peer connection."""
    return call_id if index == 0 else f"{call_id}:{index + 1}"
