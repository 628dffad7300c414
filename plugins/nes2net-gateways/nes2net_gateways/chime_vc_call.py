"""One Chime SDK Voice Connector call: each leg's Kinesis Video stream read into its channel.

A Voice Connector streams every leg of a call to a stream of its own (one per ``isCaller``),
each fragment tagged with the call's ``TransactionId``. A :class:`VoiceConnectorCall` is one call
with two channels, the customer's (the caller of an inbound call, the callee of an outbound one)
and the agent's; each leg is a :class:`LegReader` that feeds every audio block of its stream
into its channel. When one leg stops (its ``ENDED`` event and a grace period for the stream's
tail, its stream moved on to another call, no media for ``media_timeout_s``, an error) while
the other goes on, that channel ends with its summary; when the last leg stops, the call ends.
Deleting the call, a ``FAILED`` event or a drain ends the whole call at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from nes2net_gateways.kvs_reader import KvsReader, check_pcm
from nes2net_gateways.mkv import TrackInfo
from nes2net_stream.gateways.api import CallHandle
from nes2net_stream.service.events import CallEnd

if TYPE_CHECKING:
    from nes2net_gateways.chime_vc import ChimeVoiceConnectorGateway

ID_TAG = "TransactionId"


class LegReader(KvsReader):
    """One leg's stream: every audio track of it is that leg's party."""

    moved_on = "transaction_changed"

    def __init__(self, call: VoiceConnectorCall, role: str, stream_arn: str,
                 start_fragment: str | None):
        super().__init__(call.gw, call.handle, stream_arn, start_fragment, id_tag=ID_TAG,
                         id_value=call.call_id)
        self.call = call
        self.role = role

    def role_of(self, track: TrackInfo) -> str | None:
        """The leg's role, for a PCM track of 8 kHz mono."""
        check_pcm(track)
        return self.role

    async def ended(self, end: CallEnd) -> None:
        """Tell the call."""
        await self.call.leg_ended(self, end)


class VoiceConnectorCall:
    """The call of one ``TransactionId`` (see the module docstring)."""

    def __init__(self, gateway: ChimeVoiceConnectorGateway, handle: CallHandle,
                 transaction_id: str, call_url: str):
        self.gw = gateway
        self.handle = handle
        self.call_id = transaction_id
        self.call_url = call_url
        self.legs: dict[str, LegReader] = {}
        self.end: CallEnd | None = None  # the whole call was ended (delete, failure, drain)
        self.final: CallEnd | None = None  # how the call ended, once it did
        self._live: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._done = asyncio.Event()
        self.log = gateway.log.bind(call_id=transaction_id)

    def add_leg(self, role: str, stream_arn: str, start_fragment: str | None) -> bool:
        """Start reading a leg's stream; False when the role has one already (a repeated event)."""
        if role in self.legs:
            return False
        leg = LegReader(self, role, stream_arn, start_fragment)
        self.legs[role] = leg
        self._live.add(role)
        leg.start(f"chime_voice_connector:{self.call_id}:{role}")
        self.log.info("leg streaming", channel=role, stream_arn=stream_arn)
        return True

    def leg_stopped(self, role: str | None, grace_s: float) -> None:
        """A leg's ``ENDED`` event (``None``: every leg): stop it after ``grace_s`` more.

        KVS serves a stream's last fragments a few seconds after they were produced, so the
        tail is read for the grace period (unless the stream moves on to another call first).
        """
        loop = asyncio.get_running_loop()
        for name, leg in self.legs.items():
            if (role is None or name == role) and name in self._live and \
                    name not in self._timers:
                self._timers[name] = loop.call_later(grace_s, leg.finish,
                                                     CallEnd("stop", "stream_ended"))

    def finish(self, end: CallEnd) -> None:
        """End the whole call (first reason wins)."""
        if self.end is None:
            self.end = end
        for leg in self.legs.values():
            leg.finish(end)

    async def wait(self) -> None:
        """Wait until the call is over (summaries published)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._done.wait())

    async def leg_ended(self, leg: LegReader, end: CallEnd) -> None:
        """A leg's stream is read no more: end its channel, or the call after the last leg."""
        timer = self._timers.pop(leg.role, None)
        if timer is not None:
            timer.cancel()
        self._live.discard(leg.role)
        if self._live:
            if self.end is None:
                self.handle.end_channel(leg.role, end.detail or end.reason)
            return
        self.final = self.end or end
        try:
            await self.handle.end(self.final)
        finally:
            self._done.set()
            self.gw.forget(self)

    def state(self) -> dict[str, Any]:
        """What the control API reports of the call."""
        session = self.handle.session
        return {"call_id": self.call_id,
                "legs": {role: {**leg.stream_state(), "live": role in self._live}
                         for role, leg in self.legs.items()},
                "audio_s": round(session.audio_seconds, 3) if session else 0.0,
                "ended": self.final.reason if self.final else None}
