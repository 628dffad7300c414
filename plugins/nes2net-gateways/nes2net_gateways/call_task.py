"""A call driven by packets and timers rather than by one connection's receive loop.

The RTP gateways (``siprec``, ``asterisk_rtp``) get a call's audio in datagram callbacks, so
nothing awaits the call by itself: a :class:`CallTask` runs a background task that wakes up
every tick (or when :meth:`~CallTask.finish` is called), checks the call's timers in
:meth:`~CallTask.tick`, ends the call when the service drains, and closes it in
:meth:`~CallTask.close` (which publishes the summary) whatever ended it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from nes2net_stream.gateways.api import CallHandle
from nes2net_stream.service.events import CallEnd


class CallTask:
    """Base of a call run in the background (see the module docstring).

    Subclasses implement :meth:`tick` and :meth:`close`; ``end`` is the first reason given
    to :meth:`finish`.
    """

    def __init__(self, ctx: Any, handle: CallHandle, name: str):
        self.ctx = ctx
        self.handle = handle
        self.name = name
        self.end: CallEnd | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def finish(self, end: CallEnd) -> None:
        """End the call (first reason wins); the task then closes it."""
        if self.end is None:
            self.end = end
        self._wake.set()

    def start(self) -> None:
        """Run the call's task in the background."""
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def wait(self) -> None:
        """Wait until the call is over (closed, summary published)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    def tick(self, now: float) -> float:
        """Check the call's timers at monotonic time ``now`` (may :meth:`finish` it).

        Returns how long to sleep before the next tick.
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Release the call's resources and end its handle (publishes the summary)."""
        raise NotImplementedError

    async def _run(self) -> None:
        try:
            while self.end is None:
                session = self.handle.session
                if self.ctx.draining or (session is not None and session.ended):
                    self.finish(CallEnd("shutdown"))
                    break
                sleep = self.tick(time.monotonic())
                if self.end is not None:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep):
                        await self._wake.wait()
        except asyncio.CancelledError:
            self.finish(CallEnd("shutdown"))
            raise
        finally:
            await self.close()
