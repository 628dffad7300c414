"""Amazon Connect live media streaming: contacts' audio read from Kinesis Video Streams.

Connect's "Start media streaming" flow block puts a contact's audio (two tracks, customer and
agent, 8 kHz 16-bit PCM) into a Kinesis Video stream; a Lambda function invoked next in the
flow gets the stream's ARN and the contact's first fragment number. That function registers
the contact here::

    POST   /contacts   {"contact_id": ..., "stream_arn": ..., "start_fragment_number": ...}
       -> 201 {"call_id": ..., "call_url": "http://.../contacts/<id>"}
    GET    /contacts/<id>   the call's state
    DELETE /contacts/<id>   stop reading (the summary is published)

and the gateway reads the stream with GetMedia until the stream moves on to another contact
(Connect reuses streams; each fragment carries a ``ContactId`` tag), the contact is deleted, no
media arrives for ``media_timeout_s``, or a limit is passed. See docs/gateways/amazon_connect.md.

Security: the control API takes ``Authorization: Bearer <api_token>``, required whenever the
gateway listens beyond loopback; requests are rate limited per address and bounded in size;
stream ARNs can be restricted to ``allowed_stream_arns`` (prefixes). AWS credentials come from
the standard chain (botocore) and are never logged.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from nes2net_gateways._common import (
    AGENT_ROLE,
    call_metadata,
    call_start,
    check_call_id,
    discard_events,
    parse_json_object,
)
from nes2net_gateways._kvs_gateway import KvsGateway, KvsGatewayConfig
from nes2net_gateways.amazon_connect_call import RATE, ContactCall
from nes2net_gateways.kvs import check_fragment_number, check_stream_arn
from nes2net_stream.gateways.api import GatewayConfig
from nes2net_stream.service.errors import ProtocolError

FIELDS = frozenset({"contact_id", "stream_arn", "start_fragment_number", "ani", "dnis",
                    "custom"})


class AmazonConnectConfig(KvsGatewayConfig):
    """``[gateways.amazon_connect]`` settings (see docs/gateways/amazon_connect.md)."""

    port: int = Field(9200, ge=0, le=65535)


class AmazonConnectGateway(KvsGateway):
    """Amazon Connect contacts from Kinesis Video Streams (see the module docstring)."""

    name = "amazon_connect"
    Config = AmazonConnectConfig
    resource = "contacts"

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.api.route("POST", "/contacts", self._create)

    # ------------------------------------------------------------------ control API
    async def _create(self, request: web.Request) -> web.Response:
        self.check_accepting()
        doc = parse_registration(await request.read(), self.limits.max_text_bytes)
        arn = doc["stream_arn"]
        self.check_stream(arn)
        contact = doc["contact_id"]
        meta = call_metadata(self.name, contact, stream_id=arn, ani=doc.get("ani"),
                             dnis=doc.get("dnis"), custom=doc.get("custom"))
        start = call_start(self, call_id=contact, encoding="pcm_s16le", sample_rate=RATE,
                           channels=(self.cfg.customer_role, AGENT_ROLE), metadata=meta,
                           remote=request.remote)
        handle = self.new_call(discard_events)
        handle.start(start)  # ProtocolError: duplicate id, capacity, draining
        call = ContactCall(self, handle, contact, arn, doc.get("start_fragment_number"),
                           self.call_url(request, contact))
        self.calls[call.call_id] = call
        call.start()
        return web.json_response({"call_id": call.call_id, "call_url": call.call_url},
                                 status=201)


def parse_registration(body: bytes, max_bytes: int) -> dict[str, Any]:
    """A ``POST /contacts`` body, checked; ProtocolError (only) for anything malformed."""
    doc = parse_json_object(body, max_bytes, "request")
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        raise ProtocolError("bad_message", f"unknown field(s): {', '.join(unknown)}"[:200])
    check_call_id(doc.get("contact_id"), "contact_id")
    check_stream_arn(doc.get("stream_arn"), "stream_arn")
    check_fragment_number(doc.get("start_fragment_number"), "start_fragment_number")
    if not isinstance(doc.get("custom", {}), dict):
        raise ProtocolError("bad_message", "custom must be a JSON object")
    for key in ("ani", "dnis"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise ProtocolError("bad_message", f"{key} must be a string")
    return doc
