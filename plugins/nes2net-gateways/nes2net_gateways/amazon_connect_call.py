"""One Amazon Connect contact: its Kinesis Video stream read through GetMedia into a call.

A :class:`ContactCall` runs one task: it asks for the stream's media endpoint, reads GetMedia
from the contact's first fragment (or from now), and feeds each audio block of the customer's
track (``AUDIO_FROM_CUSTOMER``; Connect's older single track ``Track_audio/L16`` too) and of the
agent's (``AUDIO_TO_CUSTOMER``) into the call's two channels. The call ends when the stream's
``ContactId`` tag names another contact (Connect reuses streams), when the application deletes
it, when no bytes arrive for ``media_timeout_s``, on a passed limit, or when the service
drains. A GetMedia answer that ends or breaks is resumed from its continuation token, up to
``max_reconnects`` times in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import aiohttp

from nes2net_gateways._common import AGENT_ROLE, RateGuard, feed
from nes2net_gateways.kvs import KvsError
from nes2net_gateways.mkv import Block, FragmentStart, MkvError, MkvReader, Tag
from nes2net_stream.gateways.api import CallHandle
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

if TYPE_CHECKING:
    from nes2net_gateways.amazon_connect import AmazonConnectGateway

CUSTOMER_TRACKS = ("AUDIO_FROM_CUSTOMER", "Track_audio/L16")
AGENT_TRACK = "AUDIO_TO_CUSTOMER"
PCM_CODEC = "A_PCM/INT/LIT"  # 16-bit little-endian PCM
RATE = 8000
READ_BYTES = 1 << 16
CONTINUATION = "AWS_KINESISVIDEO_CONTINUATION_TOKEN"
FRAGMENT = "AWS_KINESISVIDEO_FRAGMENT_NUMBER"
ERROR_TAGS = ("AWS_KINESISVIDEO_ERROR_CODE", "AWS_KINESISVIDEO_ERROR_ID")
#: audio of a fragment held until its ContactId tag is seen (bytes); more is fed unchecked
MAX_HELD_BYTES = 1 << 20


class ContactCall:
    """The call of one registered contact (see the module docstring)."""

    def __init__(self, gateway: AmazonConnectGateway, handle: CallHandle, contact_id: str,
                 stream_arn: str, start_fragment: str | None, call_url: str):
        self.gw = gateway
        self.handle = handle
        self.contact_id = contact_id
        self.stream_arn = stream_arn
        self.call_url = call_url
        self.call_id = handle.call_id or contact_id
        self.selector: dict[str, Any] = (
            {"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": start_fragment}
            if start_fragment else {"StartSelectorType": "NOW"})
        self.end: CallEnd | None = None
        self.fragment: str | None = None  # the last fragment number seen
        self.token: str | None = None  # the last continuation token seen
        self.blocks = 0
        self.reconnects = 0
        self._reader = MkvReader()
        #: the current fragment's blocks, held until its ContactId tag says whose they are
        self._held: list[tuple[str, bytes]] = []
        self._held_bytes = 0
        self._checked = False  # the current fragment's ContactId was seen (and matched)
        self._guard = RateGuard(gateway.limits)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.log = gateway.log.bind(call_id=self.call_id)

    def start(self) -> None:
        """Read the stream in the background."""
        self._task = asyncio.create_task(self._run(), name=f"amazon_connect:{self.call_id}")

    def finish(self, end: CallEnd) -> None:
        """End the call (first reason wins): stop reading, publish the summary."""
        if self.end is None:
            self.end = end
        if self._task is not None and not self._task.done() and not self._closing:
            self._task.cancel()

    async def wait(self) -> None:
        """Wait until the call is over (summary published)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            endpoint = await self.gw.kvs.data_endpoint(self.stream_arn)
            while self.end is None:
                before = self.blocks
                await self._read(endpoint)
                if self.end is not None:
                    break
                if self.blocks > before:
                    self.reconnects = 0  # only failures in a row count
                if self.token is None or self.reconnects >= self.gw.cfg.max_reconnects:
                    self.end = CallEnd("stop", "stream_ended")
                    break
                self.reconnects += 1
                self.selector = {"StartSelectorType": "CONTINUATION_TOKEN",
                                 "ContinuationToken": self.token}
                self.token = None
                await asyncio.sleep(min(2.0, 0.2 * 2 ** self.reconnects))
        except asyncio.CancelledError:
            if self.end is None:
                self.end = CallEnd("shutdown")
        except ProtocolError as err:
            self.gw.ctx.metrics.protocol_errors.labels(code=err.code).inc()
            self.log.warning("protocol error", code=err.code, detail=err.message)
            self.end = CallEnd("error", err.code)
        except (KvsError, aiohttp.ClientError, OSError, ValueError) as exc:
            self.log.warning("media stream failed", error=str(exc)[:300], blocks=self.blocks)
            self.end = CallEnd("error", "media_stream_failed")
        except Exception as exc:  # one contact's stream must never break the service
            self.log.exception("gateway failure", error=repr(exc))
            self.end = CallEnd("error", "internal_error")
        finally:
            self._closing = True
            if self.end is None or self.end.detail != "contact_changed":
                with contextlib.suppress(Exception):  # the last fragment, if it had no tag
                    self._release()
            self.log.info("media stream ended", blocks=self.blocks, fragment=self.fragment,
                          reconnects=self.reconnects)
            try:
                await asyncio.shield(self.handle.end(self.end or CallEnd("shutdown")))
            finally:
                self.gw.forget(self)

    async def _read(self, endpoint: str) -> None:
        """One GetMedia answer, until it ends, breaks, or ends the call."""
        try:
            async with self.gw.kvs.get_media(endpoint, self.stream_arn, self.selector) as resp:
                while self.end is None:
                    session = self.handle.session
                    if self.gw.ctx.draining or (session is not None and session.ended):
                        self.end = CallEnd("shutdown")
                        return
                    try:
                        async with asyncio.timeout(self.gw.cfg.media_timeout_s):
                            data = await resp.content.read(READ_BYTES)
                    except TimeoutError:
                        self.end = CallEnd("timeout", "idle_timeout")
                        return
                    if not data:
                        return  # the answer ended: resume from its continuation token
                    for item in self._reader.feed(data):
                        self._on(item)
                        if self.end is not None:
                            return
                    self._guard.check(self.handle)
        except MkvError as exc:
            raise ProtocolError("bad_audio_frame", f"unreadable media stream: {exc}") from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            if self.token is None:
                raise
            self.log.info("media stream broke; resuming", error=str(exc)[:200])

    def _on(self, item: Block | Tag | FragmentStart) -> None:
        """Handle one reader item: a fragment's tags decide whose its audio blocks are.

        Where a fragment's ``ContactId`` tag comes after its audio (GetMedia's own tags end a
        fragment), the blocks are held until it does, so that none of the next contact's
        audio is scored as this one's; a fragment without the tag is fed when the next starts.
        """
        if isinstance(item, FragmentStart):
            self._release()
            self._checked = False
        elif isinstance(item, Tag):
            if item.name == "ContactId":
                if item.value != self.contact_id:
                    self.log.info("the stream moved on to another contact")
                    self._held, self._held_bytes = [], 0
                    self.end = CallEnd("stop", "contact_changed")
                    return
                self._release()
                self._checked = True
            elif item.name == FRAGMENT:
                self.fragment = item.value
            elif item.name == CONTINUATION:
                self.token = item.value
            elif item.name in ERROR_TAGS:
                self.log.warning("media stream error", tag=item.name, value=item.value[:200])
        else:
            role = self._role(item.track)
            if role is None:
                return
            self.blocks += 1
            if self._checked:
                feed(self.handle, item.data, role)
                return
            self._held.append((role, item.data))
            self._held_bytes += len(item.data)
            if self._held_bytes > MAX_HELD_BYTES:
                self._release()

    def _release(self) -> None:
        """Feed the held blocks."""
        held, self._held, self._held_bytes = self._held, [], 0
        for role, data in held:
            feed(self.handle, data, role)

    def _role(self, number: int) -> str | None:
        """The channel of a track's blocks (None: not audio of the contact)."""
        track = self._reader.tracks.get(number)
        if track is None:
            raise ProtocolError("bad_audio_frame", f"a block of undefined track {number}")
        if track.name in CUSTOMER_TRACKS:
            role = self.gw.cfg.customer_role
        elif track.name == AGENT_TRACK:
            role = AGENT_ROLE
        else:
            return None  # a track Connect does not send
        if track.codec != PCM_CODEC or round(track.sampling_frequency) != RATE or \
                track.channels != 1:
            raise ProtocolError("unsupported_format", f"track {track.name}: {track.codec} "
                                f"{track.sampling_frequency:g} Hz x {track.channels} (expected "
                                f"{PCM_CODEC} {RATE} Hz mono)")
        return role

    def state(self) -> dict[str, Any]:
        """What the control API reports of the call."""
        session = self.handle.session
        return {"call_id": self.call_id, "contact_id": self.contact_id,
                "stream_arn": self.stream_arn, "fragment": self.fragment,
                "blocks": self.blocks, "reconnects": self.reconnects,
                "audio_s": round(session.audio_seconds, 3) if session else 0.0,
                "ended": self.end.reason if self.end else None}
