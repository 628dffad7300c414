"""One SIPREC recording session: its SIP dialog, its RTP streams and the call they feed.

A :class:`RecordingCall` is created for an accepted INVITE. It binds one RTP port per
recorded stream, starts the internal call (one channel per stream: the customer's role for
the customer's stream, ``agent``, ``agent2``, ... for the others, and spare channels up to
``max_streams`` that streams added by a re-offer take, opened when heard), answers, and then runs
until the recording client sends BYE or the call ends here (timeout, limit, bad input,
shutdown), in which case the gateway sends BYE itself. The summary is published either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nes2net_gateways._common import AGENT_ROLE, RateGuard, feed
from nes2net_gateways.call_task import CallTask
from nes2net_gateways.rtp import (
    RTCP_TYPES,
    RtpPort,
    RtpReceiver,
    RtpStats,
    close_ports,
    count_rtp,
    flush_held,
    parse_rtp,
)
from nes2net_gateways.sip_message import SipMessage, addr_uri, header_params, new_branch
from nes2net_gateways.sip_sdp import AcceptedStream, SessionDescription
from nes2net_gateways.srtp import SrtpReceiver
from nes2net_stream.gateways.api import CallHandle
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd
from nes2net_stream.service.ratelimit import TokenBucket

if TYPE_CHECKING:
    from nes2net_gateways.siprec import SiprecGateway
    from nes2net_gateways.siprec_metadata import RecordingMetadata
    from nes2net_gateways.siprec_offer import OfferPlan

T1, T2, TIMER_B = 0.5, 4.0, 32.0  # RFC 3261 retransmission timers (seconds)
TICK_S = 0.5
METRICS_EVERY_S = 5.0
DIALOG_REQUESTS_PER_S = 10.0


def transaction_key(msg: SipMessage) -> tuple[int, str]:
    """(CSeq number, top Via branch): a request and its retransmissions share it."""
    return msg.cseq[0], header_params(msg.get("Via") or "")[1].get("branch", "")


@dataclass
class Peer:
    """Where a SIP request came from and how to answer it (one UDP address or TCP link)."""

    kind: str  # "UDP", "TCP" or "TLS"
    addr: tuple[str, int]
    send: Callable[[bytes], None]
    local_ip: str
    local_port: int

    @property
    def reliable(self) -> bool:
        """True over TCP (no retransmissions)."""
        return self.kind != "UDP"


@dataclass
class MediaStream:
    """One recorded RTP stream: the channel it feeds and who may send it."""

    role: str
    index: int  # of the stream's m= line in the offer
    label: str | None
    port: RtpPort | None
    receiver: RtpReceiver
    sources: set[str] = field(default_factory=set)  # IP addresses allowed to send it
    latched: tuple[str, int] | None = None
    last_packet: float | None = None
    paused: bool = False
    srtp: SrtpReceiver | None = None
    scored: bool = True  # False: packets are counted (and time the call out), not decoded
    removed: bool = False  # a re-offer set its m= line's port to 0: port closed, slot free


def role_names(customer_role: str, count: int, customer_index: int) -> list[str]:
    """Channel roles of ``count`` streams: the customer's, then ``agent``, ``agent2``, ..."""
    roles, k = [], 0
    for i in range(count):
        if i == customer_index:
            roles.append(customer_role)
        else:
            k += 1
            roles.append(AGENT_ROLE if k == 1 else f"{AGENT_ROLE}{k}")
    return roles


class RecordingCall(CallTask):
    """The dialog and call of one accepted SIPREC INVITE (see the module docstring)."""

    def __init__(self, gateway: SiprecGateway, invite: SipMessage, peer: Peer, local_tag: str,
                 handle: CallHandle):
        super().__init__(gateway.ctx, handle, f"siprec:{invite.call_id}")
        self.gw = gateway
        self.invite = invite
        self.peer = peer
        self.local_tag = local_tag
        self.sip_call_id = invite.call_id
        self.invite_key = transaction_key(invite)
        self.streams: list[MediaStream] = []
        self.encoding, self.sample_rate = "mulaw", 8000  # of the internal call (the plan's)
        #: the recorded streams' plan (streams a re-offer added appended; None before a bind)
        self.plan: OfferPlan | None = None
        #: the recording metadata as last updated (re-INVITE/UPDATE), if the client sent any
        self.metadata: RecordingMetadata | None = None
        #: the event metadata of this call for given recording metadata (set at the start)
        self.describe: Callable[[RecordingMetadata | None], dict[str, Any]] = lambda _: {}
        #: waiting for the customer's stream (``customer_aor``): until this monotonic time,
        #: then ``on_wait_over`` starts the call with the streams it has; None: not waiting
        self.wait_until: float | None = None
        self.on_wait_over: Callable[[], None] = lambda: None
        #: (CSeq, branch) of a re-INVITE/UPDATE being answered asynchronously
        self.pending: tuple[int, str] | None = None
        self.response: bytes | None = None  # the final answer to the INVITE (resent on demand)
        self.answer_body = b""  # the current SDP answer
        self.accepted: list[AcceptedStream | None] = []  # per offered m= line
        self.session_id = 0
        self.sdp_version = 0
        self.acked = peer.reliable
        self.started_at = time.monotonic()
        self.answered_at = self.started_at
        self._resend_at = self.started_at + T1
        self._resend_interval = T1
        self._bye_from_peer = False
        self._guard = RateGuard(gateway.limits)
        self._cseq = 1
        self._counted: dict[int, RtpStats] = {}
        #: requests inside this dialog (ACK, BYE, re-INVITE...): their own limit, so that a
        #: busy client's new calls never crowd out the ACKs and BYEs of its running ones
        self.requests = TokenBucket(DIALOG_REQUESTS_PER_S, 2 * DIALOG_REQUESTS_PER_S)
        self._metrics_at = self.started_at + METRICS_EVERY_S
        self.log = gateway.log.bind(sip_call_id=self.sip_call_id)

    # ------------------------------------------------------------------ RTP in
    def on_datagram(self, stream: MediaStream, data: bytes, addr: Any) -> None:
        """A datagram on ``stream``'s port: check its sender, order it, feed the call."""
        if self.end is not None or not (self.handle.started or self.wait_until is not None):
            return
        try:
            source = (addr[0], addr[1])
            if stream.latched is None:
                if source[0] not in stream.sources:
                    stream.receiver.stats.invalid += 1
                    return
                stream.latched = source  # symmetric RTP: one sender per stream from here
            elif source != stream.latched:
                stream.receiver.stats.invalid += 1
                return
            if len(data) > self.gw.limits.max_frame_bytes:
                raise ProtocolError("frame_too_large", f"RTP packet of {len(data)} bytes")
            if stream.srtp is not None:
                if len(data) > 1 and data[1] in RTCP_TYPES:
                    return  # SRTCP (rtcp-mux): not needed
                plain = stream.srtp.unprotect(data)
                if plain is None:
                    stream.receiver.stats.invalid += 1
                    return
                data = plain
            packet = parse_rtp(data)
            if packet is None:
                stream.receiver.stats.invalid += 1
                return
            stream.last_packet = time.monotonic()
            if not stream.scored:
                stream.receiver.stats.packets += 1
                return
            for payload in stream.receiver.push(packet):
                feed(self.handle, payload, stream.role)
            self._guard.check(self.handle)
        except ProtocolError as err:
            self.gw.ctx.metrics.protocol_errors.labels(code=err.code).inc()
            self.log.warning("protocol error", code=err.code, detail=err.message,
                             call_id=self.handle.call_id)
            self.finish(CallEnd("error", err.code))
        except Exception as exc:  # never let one call's packet break the event loop
            self.log.exception("gateway failure", error=repr(exc), call_id=self.handle.call_id)
            self.finish(CallEnd("error", "internal_error"))

    # ------------------------------------------------------------------ SIP in
    def answered(self, response: bytes) -> None:
        """A 2xx answer was sent: retransmit it (over UDP) until the client's ACK."""
        self.response = response
        self.acked = self.peer.reliable
        self.answered_at = time.monotonic()
        self._resend_interval = T1
        self._resend_at = self.answered_at + T1

    def on_ack(self) -> None:
        """The client confirmed our answer: stop retransmitting it."""
        self.acked = True

    def on_bye(self) -> None:
        """The recording client ended the session."""
        self._bye_from_peer = True
        self.finish(CallEnd("stop", "bye"))

    def update_media(self, offer: SessionDescription) -> None:
        """Apply an offer (the first, or a re-INVITE/UPDATE) to the recorded streams.

        ``inactive`` (or ``recvonly``) pauses a stream's idle check, and the stream's sender
        may move: its connection address (with the client's) is the one accepted from now on,
        and the first packet from there is latched again.
        """
        for stream in self.streams:
            if stream.removed or stream.index >= len(offer.media):
                continue
            media = offer.media[stream.index]
            if media.port == 0:  # removed (RFC 3264 §8.2): answered with port 0 too
                self._remove(stream)
                continue
            stream.paused = media.direction in ("inactive", "recvonly")
            stream.latched = None
            stream.sources = {self.peer.addr[0]}
            if media.connection and media.connection not in ("0.0.0.0", "::"):
                stream.sources.add(media.connection)
            if not stream.paused and stream.last_packet is not None:
                stream.last_packet = time.monotonic()  # idle time restarts on resume

    def _remove(self, stream: MediaStream) -> None:
        """Stop receiving a stream a re-offer removed and end its channel (summary now).

        The m= line's slot may carry a new stream in a later offer (a spare channel then).
        """
        close_ports([stream.port] if stream.port is not None else [])
        stream.removed, stream.port = True, None
        if stream.index < len(self.accepted):
            self.accepted[stream.index] = None
        self.handle.end_channel(stream.role, "stream_removed")
        self.log.info("stream removed from the recording", call_id=self.handle.call_id,
                      channel=stream.role, label=stream.label)

    def replace_streams(self) -> None:
        """Drop the streams (counted, ports closed) before a new offer's are set up."""
        self._count_rtp()
        close_ports([s.port for s in self.streams if s.port is not None])
        self.streams, self._counted = [], {}

    # ------------------------------------------------------------------ lifecycle
    def tick(self, now: float) -> float:
        """Retransmit the answer until ACK; end on timeouts and limits (BYE: :meth:`on_bye`).

        Sleeps until the next retransmission is due, at most :data:`TICK_S`.
        """
        if not self.acked:
            if now - self.answered_at > TIMER_B:
                if any(s.last_packet is not None for s in self.streams):
                    # the client sends media, so it holds the session as established:
                    # keep recording rather than tear down a call for a lost ACK
                    self.log.warning("no ACK for the answer; media is flowing, so the "
                                     "session continues", call_id=self.handle.call_id)
                    self.acked = True
                else:
                    self.log.warning("no ACK for the answer", call_id=self.handle.call_id)
                    self.finish(CallEnd("error", "start_timeout"))
                    return 0.0
            elif now >= self._resend_at and self.response is not None:
                self.peer.send(self.response)
                self._resend_interval = min(self._resend_interval * 2, T2)
                self._resend_at = now + self._resend_interval
        if self.wait_until is not None and now >= self.wait_until:
            self.wait_until, self.started_at = None, now
            self.on_wait_over()
        self._check_media(now, self.gw.limits)
        if now >= self._metrics_at:
            self._count_rtp()
            self._metrics_at = now + METRICS_EVERY_S
        if self.acked:
            return TICK_S
        return max(0.01, min(TICK_S, self._resend_at - now))

    def _check_media(self, now: float, lim: Any) -> None:
        active = [s for s in self.streams if not s.paused]
        if not active:
            return
        heard = [s.last_packet for s in active if s.last_packet is not None]
        if not heard:  # (while waiting for the customer, the wait bounds the silence)
            if self.wait_until is None and now - self.started_at > lim.start_timeout_s:
                self.finish(CallEnd("timeout", "start_timeout"))
        elif now - max(heard) > lim.idle_timeout_s:
            self.finish(CallEnd("timeout", "idle_timeout"))
        elif self.handle.session is not None:
            try:
                self._guard.check(self.handle)
            except ProtocolError as err:
                self.finish(CallEnd("error", err.code))

    def _count_rtp(self) -> None:
        """Add the streams' RTP counts since the last call to the gateway's metrics."""
        for i, stream in enumerate(self.streams):
            self._counted[i] = count_rtp(stream.receiver.stats, self._counted.get(i, RtpStats()),
                                         self.gw.rtp)

    async def close(self) -> None:
        """Close the ports, publish the summary and send BYE unless the client did."""
        end = self.end or CallEnd("shutdown")
        close_ports([s.port for s in self.streams if s.port is not None])
        if end.reason != "error":
            for stream in self.streams:
                if stream.scored:
                    flush_held(stream.receiver, self.handle, stream.role)
        self._count_rtp()
        try:
            await self.handle.end(end)
        finally:
            self.gw.forget(self)
            stats = {s.role: vars(s.receiver.stats) for s in self.streams}
            self.log.info("recording session ended", call_id=self.handle.call_id,
                          reason=end.reason, detail=end.detail, rtp=stats)
            if not self._bye_from_peer:
                await self._send_bye()

    # ------------------------------------------------------------------ SIP out
    def bye(self) -> SipMessage:
        """The BYE this side sends to end the session."""
        inv = self.invite
        contact = inv.get("Contact")
        uri = addr_uri(contact) if contact else addr_uri(inv.get("From") or "")
        to = inv.get("To") or ""
        local = to if ";tag=" in to.replace(" ", "") else f"{to};tag={self.local_tag}"
        via = (f"SIP/2.0/{self.peer.kind} {_host(self.peer.local_ip)}:{self.peer.local_port}"
               f";branch={new_branch()};rport")
        headers = [("Via", via), ("Max-Forwards", "70"), ("From", local),
                   ("To", inv.get("From") or ""), ("Call-ID", self.sip_call_id),
                   ("CSeq", f"{self._cseq} BYE")]
        headers += [("Route", r) for r in inv.get_all("Record-Route")]
        headers.append(("User-Agent", "nes2net-stream"))
        self._cseq += 1
        return SipMessage(method="BYE", uri=uri, status=None, reason=None, headers=headers)

    async def _send_bye(self) -> None:
        """Send BYE (retransmitted over UDP until answered or Timer F)."""
        if self.response is None:
            return  # never answered: nothing to hang up
        data = self.bye().to_bytes()
        self._bye_answered = asyncio.Event()
        self.gw.expect_response(self.sip_call_id, self._bye_answered)
        interval, began = T1, time.monotonic()
        try:
            while True:
                with contextlib.suppress(Exception):
                    self.peer.send(data)
                if self.peer.reliable:
                    return
                left = TIMER_B - (time.monotonic() - began)
                if left <= 0 or self.gw.closing:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(interval, left)):
                        await self._bye_answered.wait()
                        return
                interval = min(interval * 2, T2)
        finally:
            self.gw.expect_response(self.sip_call_id, None)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
