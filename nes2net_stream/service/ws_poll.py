"""Receiving WebSocket messages with a timeout, without a timer per message.

Handlers wait for the next message in short slices (so a drain or an idle limit is noticed on a
silent connection). ``async with asyncio.timeout(...)`` around every ``recv()`` creates, schedules
and cancels a timer for every audio packet: 50 a second per call at 20 ms packets, a few
per cent of an ingest worker's CPU. :class:`Receiver` keeps at most one timer per connection and
re-arms it only when it fires while a receive is still waiting, so a connection that carries
packets costs about one timer per slice. Like ``asyncio.timeout`` it interrupts the waiting task
by cancelling it and turns its own cancellation into :class:`TimeoutError`; websockets' ``recv()``
loses no message when cancelled.
"""

from __future__ import annotations

import asyncio
import math
import weakref

from websockets.asyncio.connection import Connection
from websockets.typing import Data

_RECEIVERS: weakref.WeakKeyDictionary[Connection, Receiver] = weakref.WeakKeyDictionary()


class Receiver:
    """``recv()`` of one connection with a timeout; one per connection, used by one task."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._deadline = math.inf  # when the waiting receive gives up (inf: none waiting)
        self._fired = False

    @classmethod
    def of(cls, conn: Connection) -> Receiver:
        """The receiver of ``conn`` (made on first use, dropped with the connection)."""
        found = _RECEIVERS.get(conn)
        if found is None:
            found = _RECEIVERS[conn] = cls(conn)
        return found

    async def recv(self, timeout_s: float) -> Data:
        """The next message; TimeoutError when none arrives within ``timeout_s`` seconds.

        Raises websockets' ``ConnectionClosed`` like ``recv()``.
        """
        task = self._task = asyncio.current_task()
        assert task is not None, "Receiver.recv() runs in a task"
        deadline = self._deadline = self._loop.time() + timeout_s
        if self._timer is None or self._timer.when() > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)
        try:
            return await self.conn.recv()
        except asyncio.CancelledError:
            if self._fired:
                self._fired = False
                if task.uncancel() == 0:  # cancelled by the deadline alone
                    raise TimeoutError from None
            raise
        finally:
            self._deadline = math.inf

    def _expire(self) -> None:
        self._timer = None
        if self._deadline == math.inf:  # no receive waiting: the next one arms a timer
            return
        if self._loop.time() >= self._deadline:
            self._deadline = math.inf
            self._fired = True
            assert self._task is not None
            self._task.cancel()
        else:  # the waiting receive started after this timer was armed
            self._timer = self._loop.call_at(self._deadline, self._expire)
