"""One Amazon Connect contact: its Kinesis Video stream read through GetMedia into a call.

A :class:`ContactCall` reads the contact's stream (:class:`~nes2net_gateways.kvs_reader.
KvsReader`) from its first fragment (or from now) and feeds each audio block of the customer's
track (``AUDIO_FROM_CUSTOMER``; Connect's older single track ``Track_audio/L16`` too) and of the
agent's (``AUDIO_TO_CUSTOMER``) into the call's two channels. The call ends when the stream's
``ContactId`` tag names another contact (Connect reuses streams), when the application deletes
it, when no bytes arrive for ``media_timeout_s``, on a passed limit, or when the service
drains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nes2net_gateways._common import AGENT_ROLE
from nes2net_gateways.kvs_reader import RATE, KvsReader, check_pcm
from nes2net_gateways.mkv import TrackInfo
from nes2net_stream.gateways.api import CallHandle
from nes2net_stream.service.events import CallEnd

if TYPE_CHECKING:
    from nes2net_gateways.amazon_connect import AmazonConnectGateway

__all__ = ["RATE", "ContactCall"]

CUSTOMER_TRACKS = ("AUDIO_FROM_CUSTOMER", "Track_audio/L16")
AGENT_TRACK = "AUDIO_TO_CUSTOMER"


class ContactCall(KvsReader):
    """The call of one registered contact (see the module docstring)."""

    def __init__(self, gateway: AmazonConnectGateway, handle: CallHandle, contact_id: str,
                 stream_arn: str, start_fragment: str | None, call_url: str):
        super().__init__(gateway, handle, stream_arn, start_fragment, id_tag="ContactId",
                         id_value=contact_id)
        self.contact_id = contact_id
        self.call_url = call_url
        self.call_id = handle.call_id or contact_id

    def start(self, name: str = "") -> None:
        """Read the stream in the background."""
        super().start(name or f"amazon_connect:{self.call_id}")

    def role_of(self, track: TrackInfo) -> str | None:
        """The customer's or the agent's track; None for a track Connect does not send."""
        if track.name in CUSTOMER_TRACKS:
            role = self.gw.cfg.customer_role
        elif track.name == AGENT_TRACK:
            role = AGENT_ROLE
        else:
            return None
        check_pcm(track)
        return role

    async def ended(self, end: CallEnd) -> None:
        """The contact's call is over: its summary."""
        try:
            await self.handle.end(end)
        finally:
            self.gw.forget(self)

    def state(self) -> dict[str, Any]:
        """What the control API reports of the call."""
        session = self.handle.session
        return {"call_id": self.call_id, "contact_id": self.contact_id, **self.stream_state(),
                "audio_s": round(session.audio_seconds, 3) if session else 0.0,
                "ended": self.end.reason if self.end else None}
