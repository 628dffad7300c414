"""INVITE, re-INVITE and UPDATE handling of the SIPREC gateway: offer in, answer out.

A new INVITE is checked (extensions, digest credentials, capacity), its offer planned
(:mod:`nes2net_gateways.siprec_offer`), RTP ports bound, the internal call started, and the
answer sent: receive-only streams, one per recorded participant, in the offer's order. A
retransmitted INVITE gets the same answer again; a re-INVITE or UPDATE (session refresh,
pause/resume, metadata update) gets an answer with the ports already in use.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
import time
from typing import TYPE_CHECKING

from nes2net_gateways._common import call_start
from nes2net_gateways.rtp import RtpReceiver, bind_rtp_port, close_ports
from nes2net_gateways.rtp_payload import CODECS
from nes2net_gateways.sip_message import SipError, SipMessage, header_params, new_tag
from nes2net_gateways.sip_sdp import (
    AcceptedStream,
    SessionDescription,
    answer_sdp,
    message_bodies,
    parse_sdp,
)
from nes2net_gateways.siprec_call import (
    MediaStream,
    Peer,
    RecordingCall,
    role_names,
    transaction_key,
)
from nes2net_gateways.siprec_metadata import RecordingMetadata, parse_rs_metadata
from nes2net_gateways.siprec_offer import (
    OfferPlan,
    StreamPlan,
    call_id_for,
    call_info,
    customer_label,
    plan_added,
    plan_offer,
)
from nes2net_gateways.srtp import SrtpReceiver, answer_crypto
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

if TYPE_CHECKING:
    from nes2net_gateways.siprec import SiprecGateway
    from nes2net_gateways.siprec_config import SiprecConfig

#: option tags a client may require (``timer``: session refreshes are answered, RFC 4028)
SUPPORTED = {"siprec", "timer"}
#: internal error code of a refused call -> SIP status
STATUS_OF = {"too_many_calls": 503, "shutting_down": 503, "frame_too_large": 413,
             "unsupported_format": 488, "duplicate_call_id": 482}
_session_ids = itertools.count(secrets.randbelow(10**9))  # SDP o= session ids


def _to_tag(msg: SipMessage) -> str | None:
    return header_params(msg.get("To") or "")[1].get("tag")


def _offer(msg: SipMessage) -> tuple[SessionDescription | None, RecordingMetadata | None]:
    """The SDP offer and recording metadata of a request's body (either may be absent)."""
    sdp, meta = message_bodies(msg.get("Content-Type"), msg.body)
    offer = parse_sdp(sdp) if sdp is not None else None
    metadata = parse_rs_metadata(meta) if meta is not None else None
    return offer, metadata


class InviteHandler:
    """Answers INVITE/UPDATE requests for one :class:`SiprecGateway`."""

    def __init__(self, gateway: SiprecGateway):
        self.gw = gateway
        self._starting: dict[str, tuple[int, str]] = {}  # Call-ID -> INVITE being set up

    # ------------------------------------------------------------------ entry points
    def invite(self, msg: SipMessage, peer: Peer, call: RecordingCall | None) -> None:
        """A new INVITE, its retransmission, or a re-INVITE of ``call``'s dialog."""
        gw = self.gw
        key = transaction_key(msg)
        if call is not None:
            if key == call.invite_key and call.response is not None:
                peer.send(call.response)  # a retransmission: the same final answer
            elif _to_tag(msg) is None:
                raise SipError(482, "a recording session with this Call-ID exists")
            else:
                self._reinvite(msg, peer, call)
            return
        if msg.call_id in self._starting:
            if self._starting[msg.call_id] == key:
                gw.reply(msg, peer, 100)
                return
            raise SipError(491, "the session is being set up")
        if _to_tag(msg) is not None:
            raise SipError(481, "no such recording session")
        unsupported = [t for r in msg.get_all("Require")
                       for t in [r.strip().lower()] if t and t not in SUPPORTED]
        if unsupported:
            gw.reply(msg, peer, 420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if gw.digest is not None:
            state = gw.digest.check(msg.get("Authorization"), "INVITE", peer.addr[0])
            if state != "ok":
                if state == "invalid":
                    gw.ctx.metrics.protocol_errors.labels(code="unauthorized").inc()
                    gw.log.warning("INVITE with invalid credentials",
                                   remote=f"{peer.addr[0]}:{peer.addr[1]}")
                challenges = gw.digest.challenges(peer.addr[0], stale=state == "stale")
                gw.reply(msg, peer, 401, headers=[("WWW-Authenticate", c) for c in challenges])
                return
        if not gw.accepting or gw.ctx.draining:
            gw.reply(msg, peer, 503, headers=[("Retry-After", "5")],
                     warning="the service is draining")
            return
        offer, metadata = _offer(msg)
        if offer is None:
            raise SipError(488, "the INVITE carries no SDP offer (late offers are not "
                           "supported)")
        label = customer_label(offer, metadata, gw.cfg.customer_label, gw.customer_aor)
        plan = self._plan(offer, label, peer)
        # customer_aor names the customer, but no offered stream is theirs (yet): an SBC that
        # adds the called party's stream by re-INVITE once it answers (an outbound call)
        waiting = (gw.customer_aor is not None and metadata is not None and not label
                   and not gw.cfg.customer_label and gw.cfg.customer_wait_s > 0)
        gw.reply(msg, peer, 100)
        self._starting[msg.call_id] = key
        gw.spawn(self._setup(msg, peer, offer, plan, metadata, waiting))

    def _plan(self, offer: SessionDescription, label: str, peer: Peer) -> OfferPlan:
        gw = self.gw
        plan = plan_offer(offer, codecs=gw.cfg.codecs, max_streams=gw.cfg.max_streams,
                          customer_label=label, srtp=gw.srtp_mode)
        if any(sp.crypto is not None for sp in plan.streams) and peer.kind != "TLS":
            gw.log.warning("SRTP keys received over unencrypted SIP (use transports = "
                           "[\"tls\"])", remote=f"{peer.addr[0]}:{peer.addr[1]}")
        return plan

    def update(self, msg: SipMessage, peer: Peer, call: RecordingCall) -> None:
        """UPDATE inside the dialog: answered like a re-INVITE (no ACK follows)."""
        self._reinvite(msg, peer, call)

    # ------------------------------------------------------------------ new sessions
    async def _setup(self, msg: SipMessage, peer: Peer, offer: SessionDescription,
                     plan: OfferPlan, metadata: RecordingMetadata | None,
                     waiting: bool) -> None:
        gw = self.gw
        try:
            await self._start(msg, peer, offer, plan, metadata, waiting)
        except Exception as exc:  # never leave the client without a final answer
            gw.log.exception("SIPREC setup failed", error=repr(exc))
            gw.reply(msg, peer, 500)
        finally:
            self._starting.pop(msg.call_id, None)

    async def _start(self, msg: SipMessage, peer: Peer, offer: SessionDescription,
                     plan: OfferPlan, metadata: RecordingMetadata | None,
                     waiting: bool) -> None:
        gw = self.gw
        call = RecordingCall(gw, msg, peer, new_tag(), gw.new_handle())
        call.metadata = metadata
        if not await self._bind(msg, peer, call, offer, plan):
            return
        if waiting:
            call.wait_until = time.monotonic() + gw.cfg.customer_wait_s
            call.on_wait_over = lambda: self._wait_over(call)
            gw.log.info("recording session waits for the customer's stream",
                        sip_call_id=msg.call_id, streams=[s.label for s in call.streams],
                        wait_s=gw.cfg.customer_wait_s)
        else:
            err = self._start_call(call)
            if err is not None:
                close_ports([s.port for s in call.streams if s.port is not None])
                status = STATUS_OF.get(err.code, 400)
                extra = [("Retry-After", "5")] if status == 503 else []
                gw.reply(msg, peer, status, headers=extra, warning=err.message)
                return
        call.session_id = next(_session_ids)
        call.answered(self._answer(msg, peer, call, offer))
        gw.register(call)
        call.start()
        if not waiting:
            gw.log.info("recording session started", call_id=call.handle.call_id,
                        streams={s.role: s.label for s in call.streams},
                        encoding=plan.encoding, remote=f"{peer.addr[0]}:{peer.addr[1]}")

    async def _bind(self, msg: SipMessage, peer: Peer, call: RecordingCall,
                    offer: SessionDescription, plan: OfferPlan) -> bool:
        """The streams of ``plan`` with their RTP ports (False: no port, 503 sent)."""
        gw, cfg = self.gw, self.gw.cfg
        roles = role_names(cfg.customer_role, len(plan.streams), plan.customer)
        for role, sp in zip(roles, plan.streams, strict=True):
            call.streams.append(_media_stream(cfg, role, sp))
        call.update_media(offer)  # senders' addresses, paused streams
        try:
            for stream in call.streams:
                await self._bind_port(call, stream)
        except OSError as exc:
            close_ports([s.port for s in call.streams if s.port is not None])
            gw.log.error("no RTP port for a recording session", error=str(exc))
            gw.reply(msg, peer, 503, headers=[("Retry-After", "5")],
                     warning="no free RTP port")
            return False
        call.accepted = [None] * len(offer.media)
        for stream, sp in zip(call.streams, plan.streams, strict=True):
            call.accepted[sp.index] = _accepted(stream, sp)
        sip_call_id = msg.call_id
        call.plan = plan  # streams added by a re-offer are appended to it and to call.streams
        call.describe = lambda meta: call_info(sip_call_id, call.plan,  # type: ignore[arg-type]
                                               [s.role for s in call.streams], meta)
        call.encoding, call.sample_rate = plan.encoding, plan.sample_rate
        return True

    async def _bind_port(self, call: RecordingCall, stream: MediaStream) -> None:
        """Bind an RTP port for ``stream`` (OSError: none free)."""
        cfg = self.gw.cfg
        stream.port = await bind_rtp_port(cfg.host, cfg.rtp_port_min, cfg.rtp_port_max,
                                          lambda d, a, s=stream: call.on_datagram(s, d, a))

    # ------------------------------------------------------------------ added streams
    def _added(self, call: RecordingCall, offer: SessionDescription) -> tuple[StreamPlan, ...]:
        """Streams of a re-offer that join the running call (a conference participant)."""
        if call.handle.session is None or call.plan is None:
            return ()
        return plan_added(offer, call.plan, {s.index for s in call.streams if not s.removed},
                          room=len(_spare_roles(call)), srtp=self.gw.srtp_mode)

    async def _add_streams(self, msg: SipMessage, peer: Peer, call: RecordingCall,
                           offer: SessionDescription, added: tuple[StreamPlan, ...]) -> None:
        """Record the streams a re-offer adds, each on a spare channel, then answer."""
        gw = self.gw
        try:
            session = call.handle.session
            assert session is not None and call.plan is not None
            scored = set(session.scored_roles)
            new: list[tuple[MediaStream, StreamPlan]] = []
            for role, sp in zip(_spare_roles(call), added, strict=False):
                stream = _media_stream(gw.cfg, role, sp, scored=role in scored)
                try:
                    await self._bind_port(call, stream)
                except OSError as exc:  # that stream stays rejected; the call goes on
                    call.log.warning("no RTP port for an added stream", label=sp.label,
                                     error=str(exc))
                    continue
                new.append((stream, sp))
            if call.end is not None:  # ended (BYE) while the ports were bound
                close_ports([s.port for s, _ in new if s.port is not None])
                gw.reply(msg, peer, 481, warning="the recording session has ended")
                return
            call.accepted += [None] * (len(offer.media) - len(call.accepted))
            for stream, sp in new:
                call.streams.append(stream)
                call.accepted[sp.index] = _accepted(stream, sp)
            call.update_media(offer)  # the new streams' senders too
            if new:
                call.plan = dataclasses.replace(
                    call.plan, streams=call.plan.streams + tuple(sp for _, sp in new))
                call.handle.update_metadata(call.describe(call.metadata))
                call.log.info("streams added to the recording", call_id=call.handle.call_id,
                              streams={s.role: s.label for s, _ in new})
            self._answer_update(msg, peer, call, offer)
        except Exception as exc:  # never leave the client without a final answer
            gw.log.exception("SIPREC added streams failed", error=repr(exc))
            gw.reply(msg, peer, 500)
        finally:
            call.pending = None

    def _start_call(self, call: RecordingCall) -> ProtocolError | None:
        """Start the internal call of ``call``'s streams (the error that refused it)."""
        gw = self.gw
        roles = [s.role for s in call.streams]
        # channels for streams a re-offer may add (up to max_streams): opened when heard
        customer = call.plan.customer if call.plan is not None else 0
        spare = tuple(r for r in role_names(gw.cfg.customer_role,
                                            max(gw.cfg.max_streams, len(roles)), customer)
                      if r not in roles)
        try:
            call.handle.start(call_start(
                gw, call_id=call_id_for(call.sip_call_id), encoding=call.encoding,
                sample_rate=call.sample_rate,
                channels=_customer_first(roles, gw.cfg.customer_role) + spare,
                metadata=call.describe(call.metadata),
                remote=f"{call.peer.addr[0]}:{call.peer.addr[1]}",
                open_on_audio=frozenset(spare)))
        except ProtocolError as err:
            return err
        scored = set(call.handle.session.scored_roles) if call.handle.session else set()
        for stream in call.streams:
            stream.scored = stream.role in scored
        return None

    def _wait_over(self, call: RecordingCall) -> None:
        """No stream of the customer was offered in time: record the streams there are."""
        call.log.warning("the customer's stream was not offered in time: scoring the streams "
                         "offered", streams={s.role: s.label for s in call.streams})
        err = self._start_call(call)
        if err is not None:
            call.finish(CallEnd("error", err.code))

    async def _restart(self, msg: SipMessage, peer: Peer, call: RecordingCall,
                       offer: SessionDescription, plan: OfferPlan) -> None:
        """A re-INVITE/UPDATE offers the customer's stream: record from this offer on."""
        try:
            call.replace_streams()
            if not await self._bind(msg, peer, call, offer, plan):
                call.finish(CallEnd("error", "no_rtp_port"))
                return
            call.started_at = time.monotonic()
            err = self._start_call(call)
            if err is not None:
                self.gw.reply(msg, peer, STATUS_OF.get(err.code, 400), warning=err.message)
                call.finish(CallEnd("error", err.code))
                return
            call.log.info("the customer's stream was offered: recording",
                          call_id=call.handle.call_id,
                          streams={s.role: s.label for s in call.streams})
            self._answer_update(msg, peer, call, offer)
        except Exception as exc:  # never leave the client without a final answer
            self.gw.log.exception("SIPREC re-offer failed", error=repr(exc))
            self.gw.reply(msg, peer, 500)
            call.finish(CallEnd("error", "internal_error"))
        finally:
            call.pending = None

    # ------------------------------------------------------------------ answers
    def _answer(self, msg: SipMessage, peer: Peer, call: RecordingCall,
                offer: SessionDescription) -> bytes:
        """Send 200 OK with the SDP answer for ``offer`` (ports of ``call``); its bytes."""
        gw = self.gw
        accepted = list(call.accepted) + [None] * (len(offer.media) - len(call.accepted))
        call.sdp_version += 1
        sdp = answer_sdp(offer, address=peer.local_ip, session_id=call.session_id,
                         version=call.sdp_version, accepted=accepted[:len(offer.media)])
        host = f"[{peer.local_ip}]" if ":" in peer.local_ip else peer.local_ip
        transport = f";transport={peer.kind.lower()}" if peer.reliable else ""
        headers = [("Contact", f"<sip:nes2net@{host}:{peer.local_port}{transport}>;+sip.srs"),
                   ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"),
                   ("Supported", "siprec, timer"), ("Content-Type", "application/sdp")]
        expires = msg.get("Session-Expires")
        if expires:
            value = header_params(expires)[0].strip()
            headers += [("Session-Expires", f"{value};refresher=uac"), ("Require", "timer")]
        call.answer_body = sdp.encode()
        return gw.reply(msg, peer, 200, to_tag=call.local_tag, headers=headers,
                        body=call.answer_body)

    def _reinvite(self, msg: SipMessage, peer: Peer, call: RecordingCall) -> None:
        gw = self.gw
        key = transaction_key(msg)
        if call.pending is not None:  # a re-offer is being set up
            if key == call.pending:
                gw.reply(msg, peer, 100)
                return
            raise SipError(491, "a re-offer is being answered")
        offer, metadata = _offer(msg)
        if metadata is not None:  # e.g. a transfer: the call's later events name who is on it
            call.metadata = metadata if call.metadata is None else call.metadata.merged(metadata)
            gw.log.info("recording metadata updated", call_id=call.handle.call_id,
                        datamode=metadata.datamode,
                        participants=sorted(p.aor or p.participant_id
                                            for p in call.metadata.participants.values()))
            call.handle.update_metadata(call.describe(call.metadata))
        if offer is None:  # a refresh without an offer: answer with the current SDP
            gw.reply(msg, peer, 200, to_tag=call.local_tag, body=call.answer_body,
                     headers=[("Content-Type", "application/sdp")])
            return
        if call.wait_until is not None:
            label = customer_label(offer, call.metadata, gw.cfg.customer_label, gw.customer_aor)
            if label:
                plan = self._plan(offer, label, peer)
                call.pending, call.wait_until = key, None  # the re-offer decides now
                if msg.method == "INVITE":
                    gw.reply(msg, peer, 100)
                gw.spawn(self._restart(msg, peer, call, offer, plan))
                return
        added = self._added(call, offer)
        if added:  # ports to bind first: answered when they are
            call.pending = key
            if msg.method == "INVITE":
                gw.reply(msg, peer, 100)
            gw.spawn(self._add_streams(msg, peer, call, offer, added))
            return
        call.update_media(offer)
        self._answer_update(msg, peer, call, offer)

    def _answer_update(self, msg: SipMessage, peer: Peer, call: RecordingCall,
                       offer: SessionDescription) -> None:
        data = self._answer(msg, peer, call, offer)
        if msg.method == "INVITE":  # a 2xx to a re-INVITE is retransmitted until ACK too
            call.invite_key = transaction_key(msg)
            call.answered(data)


def _spare_roles(call: RecordingCall) -> list[str]:
    """The started call's channels no stream has taken yet (for streams a re-offer adds)."""
    taken = {s.role for s in call.streams}
    session = call.handle.session
    return [r for r in session.start.channels if r not in taken] if session else []


def _media_stream(cfg: SiprecConfig, role: str, sp: StreamPlan, *,
                  scored: bool = False) -> MediaStream:
    """The receiving side of one planned stream (its port bound later)."""
    rate = sp.rtpmap.clock_rate
    decoder = CODECS[sp.rtpmap.encoding].decoder(rate, sp.fmtp or "")
    return MediaStream(role, sp.index, sp.label, None,
                       RtpReceiver(sp.payload_type, rate, decoder,
                                   reorder=cfg.rtp_reorder_packets,
                                   conceal_s=cfg.rtp_conceal_ms / 1000.0),
                       srtp=SrtpReceiver(sp.crypto) if sp.crypto is not None else None,
                       scored=scored)


def _accepted(stream: MediaStream, sp: StreamPlan) -> AcceptedStream:
    """What the answer says of a recorded stream: its port, codec and SDES key."""
    assert stream.port is not None
    crypto = answer_crypto(sp.crypto) if sp.crypto is not None else None
    # AMR's packing (octet-align) must be the same both ways: the offer's parameters echoed
    fmtp = sp.fmtp if CODECS[sp.rtpmap.encoding].amr is not None else None
    return AcceptedStream(stream.port.port, sp.payload_type, sp.rtpmap, sp.telephone_event,
                          crypto, fmtp)


def _customer_first(roles: list[str], customer: str) -> tuple[str, ...]:
    """Channel roles with the customer's first: the call's audio clock (duration, limits)."""
    return tuple(sorted(roles, key=lambda r: r != customer))
