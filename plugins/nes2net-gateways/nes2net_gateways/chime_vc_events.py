"""EventBridge events of a Chime SDK Voice Connector's media streaming, checked.

A Voice Connector that streams to Kinesis Video Streams sends one
``Chime VoiceConnector Streaming Status`` event (source ``aws.chime``) per call leg and change:
``STARTED`` with the leg's ``streamArn``, ``startFragmentNumber`` and ``isCaller``;
``ENDED`` when that leg's streaming ends; ``UPDATED`` (new SIP or SIPREC metadata) and
``FAILED`` (``failureReason``). Every event names the call by ``transactionId`` (the MKV tag
of its fragments too). AWS adds fields over time, so unknown fields are accepted; the fields
used are checked, and anything malformed is a ProtocolError (HTTP 400 on the control API).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nes2net_gateways._common import check_call_id, parse_json_object
from nes2net_gateways.kvs import check_fragment_number, check_stream_arn
from nes2net_stream.service.errors import ProtocolError

DETAIL_TYPE = "Chime VoiceConnector Streaming Status"
STATUSES = frozenset({"STARTED", "ENDED", "UPDATED", "FAILED"})
MEDIA_TYPE = "audio/L16"
TEXT_FIELDS = ("callId", "direction", "fromNumber", "toNumber", "voiceConnectorId",
               "failureReason")


@dataclass(frozen=True)
class StreamingEvent:
    """The fields of one streaming event that the gateway uses."""

    status: str
    transaction_id: str
    is_caller: bool | None = None
    stream_arn: str | None = None
    start_fragment: str | None = None
    call_id: str | None = None  # the SIP Call-ID
    direction: str | None = None  # Inbound / Outbound
    from_number: str | None = None
    to_number: str | None = None
    voice_connector_id: str | None = None
    failure_reason: str | None = None

    @property
    def customer_leg(self) -> bool:
        """The leg of the party outside (the caller inbound, the callee outbound)."""
        outbound = (self.direction or "").lower() == "outbound"
        return bool(self.is_caller) != outbound


def _bool(value: Any, name: str) -> bool | None:
    """``isCaller``: a JSON boolean, or "true"/"false" (examples show both)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ProtocolError("bad_message", f"detail.{name} must be a boolean")


def parse_event(body: bytes, max_bytes: int) -> StreamingEvent:
    """A streaming event from an EventBridge delivery; ProtocolError (only) when malformed."""
    doc = parse_json_object(body, max_bytes, "event")
    kind = doc.get("detail-type")
    if kind != DETAIL_TYPE:
        raise ProtocolError("bad_message", f"detail-type must be {DETAIL_TYPE!r}")
    if doc.get("source", "aws.chime") != "aws.chime":
        raise ProtocolError("bad_message", "source must be 'aws.chime'")
    detail = doc.get("detail")
    if not isinstance(detail, dict):
        raise ProtocolError("bad_message", "detail must be a JSON object")
    status = detail.get("streamingStatus")
    if status not in STATUSES:
        raise ProtocolError("bad_message", "detail.streamingStatus must be one of "
                            + ", ".join(sorted(STATUSES)))
    transaction = check_call_id(detail.get("transactionId"), "detail.transactionId")
    texts = {}
    for name in TEXT_FIELDS:
        value = detail.get(name)
        if value is not None and not (isinstance(value, str) and len(value) <= 256):
            raise ProtocolError("bad_message", f"detail.{name} must be a string (at most 256)")
        texts[name] = value
    is_caller = _bool(detail.get("isCaller"), "isCaller")
    arn = detail.get("streamArn")
    if arn is not None:
        check_stream_arn(arn, "detail.streamArn")
    fragment = check_fragment_number(detail.get("startFragmentNumber"),
                                     "detail.startFragmentNumber")
    if status == "STARTED":
        if arn is None or is_caller is None:
            raise ProtocolError("bad_message", "a STARTED event needs detail.streamArn and "
                                "detail.isCaller")
        media = detail.get("mediaType", MEDIA_TYPE)
        if media != MEDIA_TYPE:
            raise ProtocolError("unsupported_format", f"detail.mediaType {str(media)[:40]!r}: "
                                f"only {MEDIA_TYPE} is streamed")
    return StreamingEvent(status, transaction, is_caller, arn, fragment, texts["callId"],
                          texts["direction"], texts["fromNumber"], texts["toNumber"],
                          texts["voiceConnectorId"], texts["failureReason"])
