"""Chime SDK Voice Connector media streaming: each call leg read from Kinesis Video Streams.

A Voice Connector with media streaming on puts each leg of a call into a Kinesis Video stream
of its own and sends EventBridge a ``Chime VoiceConnector Streaming Status`` event per leg
(``STARTED``, ``ENDED``, ``UPDATED``, ``FAILED``). An EventBridge rule delivers them here (an
API destination, or a small Lambda function that forwards the event unchanged)::

    POST   /events          the EventBridge event, as delivered (or /events/<transactionId>)
       STARTED -> 201 {"call_id": <transactionId>, "call_url": ..., "channel": ...} (200 for
                  the call's second leg or a repeated event)
    GET    /calls/<id>      the call's state (its legs' streams)
    DELETE /calls/<id>      stop reading (the summaries are published)

Each call (``transactionId``) is one call with the customer's channel (the caller of an inbound
call, the callee of an outbound one) and the agent's, each read from its leg's stream from the
leg's start fragment until its ``ENDED`` event (plus ``end_grace_s`` for the tail), until the
stream's ``TransactionId`` tag names another call, or until no media arrives for
``media_timeout_s``. With several ingest workers, an event reaching a worker that does not own
its call (by a hash of the ``transactionId``) is passed on to the owner's own port, so both
legs of a call always meet in one process. See docs/gateways/chime_voice_connector.md.

Security: as ``amazon_connect``: ``Authorization: Bearer <api_token>`` (the API destination's
connection sends it as an API-key header), required whenever the gateway listens beyond
loopback; requests rate limited per address and bounded in size; ``allowed_stream_arns``.
"""

from __future__ import annotations

import time
import zlib
from collections import OrderedDict
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import Field

from nes2net_gateways._common import (
    AGENT_ROLE,
    call_metadata,
    call_start,
    discard_events,
)
from nes2net_gateways._control_api import error_response
from nes2net_gateways._kvs_gateway import KvsGateway, KvsGatewayConfig
from nes2net_gateways.chime_vc_call import VoiceConnectorCall
from nes2net_gateways.chime_vc_events import StreamingEvent, parse_event
from nes2net_gateways.kvs_reader import RATE
from nes2net_stream.gateways.api import GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

#: marks a request one ingest worker passed on to another (never passed on again)
FORWARDED = "X-Nes2net-Forwarded"
#: calls remembered after their end, so that a late or repeated STARTED does not reopen them
FINISHED_KEPT = 10_000
FINISHED_TTL_S = 3600.0


class ChimeVoiceConnectorConfig(KvsGatewayConfig):
    """``[gateways.chime_voice_connector]`` settings (docs/gateways/chime_voice_connector.md)."""

    port: int = Field(9201, ge=0, le=65535)
    end_grace_s: float = Field(5.0, ge=0.0, le=120.0)


class ChimeVoiceConnectorGateway(KvsGateway):
    """Chime SDK Voice Connector calls from Kinesis Video Streams (see the module docstring)."""

    name = "chime_voice_connector"
    Config = ChimeVoiceConnectorConfig
    resource = "calls"

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: ChimeVoiceConnectorConfig = config  # type: ignore[assignment]
        self.api.route("POST", "/events", self._event)
        self.api.route("POST", "/events/{call_id}", self._event)  # for balancers hashing URIs
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._peers: aiohttp.ClientSession | None = None  # to the other ingest workers

    async def close(self) -> None:
        """End the calls, stop the control API, close the KVS client and the peer session."""
        await super().close()
        if self._peers is not None:
            await self._peers.close()

    def forget(self, call: Any) -> None:
        """Drop a finished call, remembering its id for an hour."""
        super().forget(call)
        now = time.monotonic()
        self._finished[call.call_id] = now
        self._finished.move_to_end(call.call_id)
        while self._finished and (len(self._finished) > FINISHED_KEPT or
                                  next(iter(self._finished.values())) < now - FINISHED_TTL_S):
            self._finished.popitem(last=False)

    def owner(self, transaction_id: str) -> int | None:
        """The ingest worker that owns a call, when it is another one than this."""
        if self.worker_index is None or self.worker_count <= 1:
            return None
        index = zlib.crc32(transaction_id.encode()) % self.worker_count
        return None if index == self.worker_index else index

    # ------------------------------------------------------------------ control API
    async def _event(self, request: web.Request) -> web.Response:
        body = await request.read()
        event = parse_event(body, self.limits.max_text_bytes)
        in_path = request.match_info.get("call_id")
        if in_path is not None and in_path != event.transaction_id:
            raise ProtocolError("bad_message", "the path's call id is not the event's "
                                "detail.transactionId")
        owner = self.owner(event.transaction_id)
        if owner is not None and FORWARDED not in request.headers:
            return await self._pass_on(request, body, owner)
        answer, status = self._apply(event, request)
        return web.json_response(answer, status=status)

    def _apply(self, event: StreamingEvent, request: web.Request) -> tuple[dict[str, Any], int]:
        """Act on one event; the answer's body and HTTP status."""
        tid = event.transaction_id
        call: VoiceConnectorCall | None = self.calls.get(tid)
        if event.status == "STARTED":
            assert event.stream_arn is not None
            role = self.cfg.customer_role if event.customer_leg else AGENT_ROLE
            if call is None and tid in self._finished:
                return {"call_id": tid, "ignored": "call_ended"}, 200
            self.check_stream(event.stream_arn)
            created = call is None
            if call is None:
                call = self._open(event, request)
            call.add_leg(role, event.stream_arn, event.start_fragment)
            return {"call_id": tid, "call_url": call.call_url, "channel": role}, \
                201 if created else 200
        if call is None:
            return {"call_id": tid, "ignored": "unknown_call"}, 200
        if event.status == "ENDED":
            role = None if event.is_caller is None else (
                self.cfg.customer_role if event.customer_leg else AGENT_ROLE)
            call.leg_stopped(role, self.cfg.end_grace_s)
            return {"call_id": tid, "channel": role}, 200
        if event.status == "FAILED":
            call.log.warning("media streaming failed", reason=event.failure_reason)
            call.finish(CallEnd("error", "media_stream_failed"))
            return {"call_id": tid}, 200
        return {"call_id": tid, "ignored": event.status}, 200  # UPDATED: SIP/SIPREC metadata

    def _open(self, event: StreamingEvent, request: web.Request) -> VoiceConnectorCall:
        """A new call for the first leg of a transaction."""
        self.check_accepting()
        tid = event.transaction_id
        custom = {k: v for k, v in (("voice_connector_id", event.voice_connector_id),
                                    ("direction", event.direction)) if v}
        meta = call_metadata(self.name, event.call_id, stream_id=tid, ani=event.from_number,
                             dnis=event.to_number, custom=custom)
        # both channels from the start: each leg's stream starts with the call, and a leg read
        # faster than real time (catching up from its start fragment) must not move the other's
        start = call_start(self, call_id=tid, encoding="pcm_s16le", sample_rate=RATE,
                           channels=(self.cfg.customer_role, AGENT_ROLE), metadata=meta,
                           remote=request.remote)
        handle = self.new_call(discard_events)
        handle.start(start)  # ProtocolError: duplicate id, capacity, draining
        call = VoiceConnectorCall(self, handle, tid, self.call_url(request, tid))
        self.calls[tid] = call
        return call

    async def _pass_on(self, request: web.Request, body: bytes, owner: int) -> web.Response:
        """Pass an event on to the ingest worker that owns its call, and relay its answer."""
        host = self.cfg.host if self.cfg.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        scheme = "https" if self.cfg.tls_cert else "http"
        url = f"{scheme}://{host}:{self.cfg.port + 1 + owner}{request.path}"
        headers = {FORWARDED: str(self.worker_index), "Content-Type": "application/json"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        if self._peers is None:
            self._peers = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0))
        try:
            async with self._peers.post(url, data=body, headers=headers, ssl=False) as resp:
                return web.json_response(await resp.json(), status=resp.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.log.warning("ingest worker did not answer", worker=owner, error=str(exc)[:200])
            return error_response("internal_error", "the call's ingest worker did not answer",
                                  503)
