"""One Kinesis Video stream read through GetMedia into a call's channels.

A :class:`KvsReader` runs one task: it asks for the stream's media endpoint, reads GetMedia
from a start fragment (or from now) and feeds each audio block of the tracks it maps to a role
into the call. Streams are reused by later calls, so every fragment carries an id tag
(``ContactId`` in Amazon Connect's streams, ``TransactionId`` in a Chime SDK Voice Connector's):
reading stops when it names another call. It also stops when the owner finishes it, when no
bytes arrive for ``media_timeout_s``, on a passed limit, or when the service drains. A GetMedia
answer that ends or breaks is resumed from its continuation token, up to ``max_reconnects``
times in a row. Subclasses say which tracks are whose (:meth:`KvsReader.role_of`) and what the
end of the stream means for the call (:meth:`KvsReader.ended`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from nes2net_gateways._common import RateGuard, feed
from nes2net_gateways.kvs import KvsError
from nes2net_gateways.mkv import Block, FragmentStart, MkvError, MkvReader, Tag, TrackInfo
from nes2net_stream.gateways.api import CallHandle
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

PCM_CODEC = "A_PCM/INT/LIT"  # 16-bit little-endian PCM
RATE = 8000
READ_BYTES = 1 << 16
CONTINUATION = "AWS_KINESISVIDEO_CONTINUATION_TOKEN"
FRAGMENT = "AWS_KINESISVIDEO_FRAGMENT_NUMBER"
ERROR_TAGS = ("AWS_KINESISVIDEO_ERROR_CODE", "AWS_KINESISVIDEO_ERROR_ID")
#: audio of a fragment held until its id tag is seen (bytes); more is fed unchecked
MAX_HELD_BYTES = 1 << 20


def check_pcm(track: TrackInfo) -> None:
    """ProtocolError ``unsupported_format`` unless the track is 8 kHz mono 16-bit PCM."""
    if track.codec != PCM_CODEC or round(track.sampling_frequency) != RATE or \
            track.channels != 1:
        raise ProtocolError("unsupported_format", f"track {track.name}: {track.codec} "
                            f"{track.sampling_frequency:g} Hz x {track.channels} (expected "
                            f"{PCM_CODEC} {RATE} Hz mono)")


class KvsReader:
    """Reads one stream for one call (see the module docstring).

    Args:
        gateway: the gateway (``kvs`` client, ``cfg.media_timeout_s``, ``cfg.max_reconnects``,
            ``ctx``, ``limits``, ``log``).
        handle: the call the audio goes to.
        stream_arn: the Kinesis Video stream.
        start_fragment: read after this fragment number (``None``: from now).
        id_tag, id_value: the fragments' tag naming the call, and this call's value.
    """

    #: the call's end when another call's id tag is seen
    moved_on = "contact_changed"

    def __init__(self, gateway: Any, handle: CallHandle, stream_arn: str,
                 start_fragment: str | None, *, id_tag: str, id_value: str):
        self.gw = gateway
        self.handle = handle
        self.stream_arn = stream_arn
        self.id_tag = id_tag
        self.id_value = id_value
        self.selector: dict[str, Any] = (
            {"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": start_fragment}
            if start_fragment else {"StartSelectorType": "NOW"})
        self.end: CallEnd | None = None
        self.fragment: str | None = None  # the last fragment number seen
        self.token: str | None = None  # the last continuation token seen
        self.blocks = 0
        self.reconnects = 0
        self._reader = MkvReader()
        #: the current fragment's blocks, held until its id tag says whose they are
        self._held: list[tuple[str, bytes]] = []
        self._held_bytes = 0
        self._checked = False  # the current fragment's id tag was seen (and matched)
        self._guard = RateGuard(gateway.limits)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.log = gateway.log.bind(call_id=handle.call_id or id_value)

    def role_of(self, track: TrackInfo) -> str | None:
        """The channel of a track's blocks (None: not audio of the call)."""
        raise NotImplementedError

    async def ended(self, end: CallEnd) -> None:
        """The stream is read no more, for ``end``: end the call (or the channel)."""
        raise NotImplementedError

    def start(self, name: str) -> None:
        """Read the stream in the background (task ``name``)."""
        self._task = asyncio.create_task(self._run(), name=name)

    def finish(self, end: CallEnd) -> None:
        """Stop reading (first reason wins)."""
        if self.end is None:
            self.end = end
        if self._task is not None and not self._task.done() and not self._closing:
            self._task.cancel()

    async def wait(self) -> None:
        """Wait until the reader is over (and :meth:`ended` returned)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    @property
    def done(self) -> bool:
        """True once the reader stopped."""
        return self._task is not None and self._task.done()

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
        except Exception as exc:  # one call's stream must never break the service
            self.log.exception("gateway failure", error=repr(exc))
            self.end = CallEnd("error", "internal_error")
        finally:
            self._closing = True
            if self.end is None or self.end.detail != self.moved_on:
                with contextlib.suppress(Exception):  # the last fragment, if it had no tag
                    self._release()
            self.log.info("media stream ended", stream_arn=self.stream_arn, blocks=self.blocks,
                          fragment=self.fragment, reconnects=self.reconnects)
            await asyncio.shield(self.ended(self.end or CallEnd("shutdown")))

    async def _read(self, endpoint: str) -> None:
        """One GetMedia answer, until it ends, breaks, or ends the reading."""
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

        Where a fragment's id tag comes after its audio (GetMedia's own tags end a fragment),
        the blocks are held until it does, so that none of the next call's audio is scored as
        this one's; a fragment without the tag is fed when the next starts.
        """
        if isinstance(item, FragmentStart):
            self._release()
            self._checked = False
        elif isinstance(item, Tag):
            if item.name == self.id_tag:
                if item.value != self.id_value:
                    self.log.info("the stream moved on to another call", tag=self.id_tag)
                    self._held, self._held_bytes = [], 0
                    self.end = CallEnd("stop", self.moved_on)
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
            track = self._reader.tracks.get(item.track)
            if track is None:
                raise ProtocolError("bad_audio_frame", f"a block of undefined track {item.track}")
            role = self.role_of(track)
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

    def stream_state(self) -> dict[str, Any]:
        """What the control API reports of the reading."""
        return {"stream_arn": self.stream_arn, "fragment": self.fragment, "blocks": self.blocks,
                "reconnects": self.reconnects}
