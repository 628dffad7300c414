"""Simulated calls in the protocols the load generator speaks: generic and Twilio Media Streams.

Each builder turns one call's μ-law audio into a :class:`~nes2net_stream.bench.loadgen.CallPlan`
whose messages are what that sender puts on the wire: the generic protocol's JSON ``start``,
binary audio and ``stop``; Twilio's ``connected``, ``start``, one ``media`` message per packet
(base64 μ-law with sequence number, chunk and timestamp) and ``stop``. Provider protocols carry
JSON and base64 per packet, so their ingest cost per call differs from the generic protocol's;
``bench e2e --protocol`` measures either.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from nes2net_stream.bench.loadgen import CallPlan
from nes2net_stream.client import start_message

ACCOUNT_SID = "AC" + "0" * 32  # a Twilio account id of the right shape


@dataclass(frozen=True)
class Protocol:
    """How to reach the service in one protocol and how to build its calls."""

    path: str  # WebSocket path on the service's port
    service_env: dict[str, str]  # settings the service needs for it
    plan: Callable[..., CallPlan]


def generic_plan(call_id: str, mulaw: bytes, *, rate: int, packet: int, delay_s: float
                 ) -> CallPlan:
    """A call of the generic protocol (``/v1/stream``)."""
    return CallPlan(call_id, start_message(call_id, "mulaw", rate), mulaw, packet_bytes=packet,
                    packet_s=packet / rate, audio_s=len(mulaw) / rate, delay_s=delay_s)


def twilio_plan(call_id: str, mulaw: bytes, *, rate: int, packet: int, delay_s: float
                ) -> CallPlan:
    """A Twilio Media Streams call (inbound track only).

    The service's call id becomes ``<call_id>:<streamSid>`` (``stream_in_call_id``).
    """
    if rate != 8000:
        raise ValueError("Twilio Media Streams carry 8 kHz μ-law")
    stream_sid = "MZ" + call_id.encode().hex()[:32].ljust(32, "0")
    ms = 1000 * packet // rate

    def media(k: int, chunk: bytes) -> str:
        # sequence numbers count every message: connected is 1, start 2, media from 3
        payload = base64.b64encode(chunk).decode()
        return (f'{{"event":"media","sequenceNumber":"{k + 3}","media":{{"track":"inbound",'
                f'"chunk":"{k + 1}","timestamp":"{k * ms}","payload":"{payload}"}},'
                f'"streamSid":"{stream_sid}"}}')

    start = {"event": "start", "sequenceNumber": "2", "streamSid": stream_sid,
             "start": {"accountSid": ACCOUNT_SID, "callSid": call_id,
                       "streamSid": stream_sid, "tracks": ["inbound"], "customParameters": {},
                       "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                       "channels": 1}}}
    n_packets = -(-len(mulaw) // packet)
    return CallPlan(call_id, start, mulaw, packet_bytes=packet, packet_s=packet / rate,
                    audio_s=len(mulaw) / rate, delay_s=delay_s,
                    preamble=[{"event": "connected", "protocol": "Call", "version": "1.0.0"}],
                    media=media,
                    stop={"event": "stop", "sequenceNumber": str(n_packets + 3),
                          "streamSid": stream_sid,
                          "stop": {"accountSid": ACCOUNT_SID, "callSid": call_id}},
                    service_call_id=f"{call_id}:{stream_sid}")


PROTOCOLS: dict[str, Protocol] = {
    "generic": Protocol("/v1/stream", {}, generic_plan),
    "twilio": Protocol("/v1/gateways/twilio", {"NES2NET_GATEWAYS__TWILIO__ENABLED": "true"},
                       twilio_plan),
}
