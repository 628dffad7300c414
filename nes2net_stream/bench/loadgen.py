"""A lean load generator for the end-to-end benchmark: thousands of real-time calls per process.

Every simulated call is a real WebSocket client over loopback (of the generic protocol, or of a
provider's, see :mod:`nes2net_stream.bench.provider_calls`): websockets' Sans-I/O client
protocol does the opening handshake, frames and masks each message and answers the service's
pings, and an asyncio transport carries the bytes. What it leaves out, against
:func:`nes2net_stream.client.stream_samples`, is the per-packet overhead of the asyncio
connection layer: no task, timer and lock per call and packet; one timer per process sends every
packet that is due. The load generator shares the host's cores with the service it measures, so
every core it does not use is one more for the service (docs/benchmarks.md, "Where the host's
cores go end to end").
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

#: the sender wakes at most this often and sends whatever is due (a packet leaves up to this
#: late; its actual send time is logged, and latencies are measured from that)
TICK_S = 0.005


@dataclass
class CallPlan:
    """One simulated call: its messages, encoded audio and packet size, and when it starts.

    By default audio goes out as binary messages and the call ends with ``{"type": "stop"}``
    (the generic protocol); a provider protocol sets ``preamble``, ``media`` (one packet's
    bytes and index to a text message) and ``stop``.
    """

    call_id: str
    start: dict[str, Any]  # the start message
    payload: bytes  # the whole call's audio, encoded
    packet_bytes: int
    packet_s: float  # audio seconds per full packet
    audio_s: float  # length of the call's audio
    delay_s: float = 0.0  # start this long after the generator
    send_log: list[tuple[float, float]] = field(default_factory=list)
    preamble: list[dict[str, Any]] = field(default_factory=list)  # sent before ``start``
    media: Callable[[int, bytes], str] | None = None  # None: binary audio messages
    stop: dict[str, Any] = field(default_factory=lambda: {"type": "stop"})
    service_call_id: str = ""  # the id the service gives the call ("": ``call_id``)

    def __post_init__(self) -> None:
        self.service_call_id = self.service_call_id or self.call_id

    @property
    def packets(self) -> int:
        """Number of audio messages."""
        return -(-len(self.payload) // self.packet_bytes)


@dataclass
class CallOutcome:
    """What came back for one call."""

    call_id: str
    summary: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    close_code: int | None = None
    failure: str | None = None  # why the call did not complete (connect, handshake, timeout)


class LoadCall(asyncio.Protocol):
    """One call's connection: websockets' Sans-I/O client protocol over an asyncio transport."""

    def __init__(self, plan: CallPlan, url: str, token: str | None = None):
        self.plan = plan
        self.outcome = CallOutcome(plan.call_id)
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.request = self.ws.connect()
        if token:
            self.request.headers["Authorization"] = f"Bearer {token}"
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._parts: list[bytes] = []  # fragments of a text message
        self._abort_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport  # type: ignore[assignment]
        self.ws.send_request(self.request)
        self._flush()

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self.ws.receive_data(data)
        self._handle()
        self._flush()

    def eof_received(self) -> bool:  # noqa: D102
        self.ws.receive_eof()
        self._handle()
        self._flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.outcome.close_code = self.ws.close_code
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost during the handshake: "
                                                      f"{exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)
        if self._abort_timer is not None:
            self._abort_timer.cancel()

    @property
    def is_open(self) -> bool:
        """True while audio can be sent."""
        return self.ws.state is State.OPEN

    def send_text(self, message: dict[str, Any]) -> None:
        """Send one control message."""
        if self.is_open:
            self.ws.send_text(json.dumps(message).encode())
            self._flush()

    def send_packet(self, k: int) -> bool:
        """Send audio packet ``k``; False when the connection no longer takes audio."""
        if not self.is_open:
            return False
        p = self.plan
        chunk = p.payload[k * p.packet_bytes:(k + 1) * p.packet_bytes]
        if p.media is None:
            self.ws.send_binary(chunk)
        else:
            self.ws.send_text(p.media(k, chunk).encode())
        self._flush()
        return True

    def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()  # the protocol asks to half-close
        if self._abort_timer is None and self.ws.close_expected():
            # the service closes TCP next; do not wait for it forever
            self._abort_timer = asyncio.get_running_loop().call_later(10.0, self.abort)

    def _handle(self) -> None:
        for ev in self.ws.events_received():
            if isinstance(ev, Response):
                if self.opened.done():
                    continue
                if self.ws.handshake_exc is not None:
                    self.opened.set_exception(self.ws.handshake_exc)
                else:
                    self.opened.set_result(None)
            elif isinstance(ev, Frame):
                self._frame(ev)

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT or (frame.opcode is Opcode.CONT and self._parts):
            self._parts.append(bytes(frame.data))
            if not frame.fin:
                return
            text, self._parts = b"".join(self._parts), []
            event = json.loads(text)
            self.outcome.events += 1
            kind = event.get("type")
            if kind == "summary" and self.outcome.summary is None:
                self.outcome.summary = event
            elif kind == "error":
                self.outcome.errors.append(event)


class LoadGenerator:
    """Runs a set of planned calls in real time from this process's event loop."""

    def __init__(self, url: str, *, token: str | None = None, open_timeout: float = 60.0,
                 close_timeout: float = 60.0):
        self.url = url
        self.token = token
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        uri = parse_uri(url)
        self.host, self.port = uri.host, uri.port
        self._due: list[tuple[float, int, int, LoadCall]] = []  # (due, seq, packet, call)
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_tick = float("-inf")

    async def run(self, plans: list[CallPlan]) -> list[CallOutcome]:
        """Stream every planned call at real-time pace; outcomes in the order of ``plans``."""
        try:
            return list(await asyncio.gather(*[self._call(p) for p in plans]))
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._due.clear()

    async def _call(self, plan: CallPlan) -> CallOutcome:
        await asyncio.sleep(plan.delay_s)
        loop = asyncio.get_running_loop()
        call = LoadCall(plan, self.url, self.token)
        try:
            async with asyncio.timeout(self.open_timeout):
                await loop.create_connection(lambda: call, self.host, self.port)
                await call.opened
            for message in (*plan.preamble, plan.start):
                call.send_text(message)
            self._seq += 1
            heapq.heappush(self._due, (loop.time(), self._seq, 0, call))
            self._arm()
            async with asyncio.timeout(plan.audio_s * 2 + self.close_timeout):
                await call.closed
        except Exception as exc:  # noqa: BLE001 - refused, rejected handshake, timeout
            call.outcome.failure = f"{type(exc).__name__}: {exc}"
            call.abort()
        call.outcome.close_code = call.ws.close_code
        return call.outcome

    def _arm(self) -> None:
        """Have :meth:`_tick` run when the next packet is due, at most every ``TICK_S``."""
        if not self._due:
            return
        when = max(self._due[0][0], self._last_tick + TICK_S)
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._tick)

    def _tick(self) -> None:
        """Send every packet that is due (one wake-up serves many calls)."""
        self._timer = None
        due_list = self._due
        now = self._last_tick = asyncio.get_running_loop().time()
        while due_list and due_list[0][0] <= now:
            due, seq, k, call = heapq.heappop(due_list)
            p = call.plan
            if not call.send_packet(k):  # the service ended the call early
                continue
            p.send_log.append((min((k + 1) * p.packet_s, p.audio_s), time.time()))
            if k + 1 < p.packets:
                heapq.heappush(due_list, (due + p.packet_s, seq, k + 1, call))
            else:
                call.send_text(p.stop)
        self._arm()
