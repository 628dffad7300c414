"""What a SIPREC offer asks for, decided without I/O.

Which streams to record, in which codec, which one is the customer's, and the call id and
metadata of the internal call.

Pure functions raising only :class:`~nes2net_gateways.sip_message.SipError`, so that they can
be fuzzed with the parsers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nes2net_gateways._common import call_metadata
from nes2net_gateways.rtp_payload import CODECS
from nes2net_gateways.sip_message import SipError, uri_user
from nes2net_gateways.sip_sdp import Crypto, MediaDescription, RtpMap, SessionDescription
from nes2net_gateways.siprec_metadata import RecordingMetadata
from nes2net_gateways.srtp import pick_crypto
from nes2net_stream.service.protocol import CALL_ID_RE

PLAIN_RTP = ("RTP/AVP", "RTP/AVPF")
SECURE_RTP = ("RTP/SAVP", "RTP/SAVPF")


@dataclass(frozen=True)
class StreamPlan:
    """One offered m= line that will be recorded."""

    index: int  # position among the offer's m= lines
    payload_type: int
    rtpmap: RtpMap
    telephone_event: int | None
    label: str | None
    crypto: Crypto | None = None  # the offered SDES key used (SRTP streams)
    fmtp: str | None = None  # the offer's a=fmtp of the payload type (AMR: octet-align)


@dataclass(frozen=True)
class OfferPlan:
    """The streams to record, their common codec and the customer's stream."""

    encoding: str  # encoding of the internal event model (mulaw, alaw, pcm_s16be)
    sample_rate: int
    streams: tuple[StreamPlan, ...]
    customer: int  # index into ``streams``
    codec: str = "PCMU"  # the rtpmap name (PCMU, PCMA, G722, OPUS, L16)


def _codec_of(media: MediaDescription, name: str) -> tuple[int, RtpMap] | None:
    channels = CODECS[name].channels
    for pt in media.payload_types:
        rtpmap = media.rtpmap.get(pt)
        if rtpmap is not None and rtpmap.encoding == name and rtpmap.channels in channels:
            return pt, rtpmap
    return None


def _telephone_event(media: MediaDescription, rate: int) -> int | None:
    for pt in media.payload_types:
        m = media.rtpmap.get(pt)
        if m is not None and m.encoding == "TELEPHONE-EVENT" and m.clock_rate == rate:
            return pt
    return None


def _recordable(media: MediaDescription, srtp: str) -> bool:
    if media.media != "audio" or media.port <= 0:
        return False
    proto = media.proto.upper()
    if proto in PLAIN_RTP:
        return srtp != "require"
    return proto in SECURE_RTP and srtp != "off" and pick_crypto(media.crypto) is not None


def plan_offer(offer: SessionDescription, *, codecs: Sequence[str], max_streams: int,
               customer_label: str = "", srtp: str = "off") -> OfferPlan:
    """Choose the streams to record and one codec they all use.

    The customer's stream (the recordable one labelled ``customer_label``, else the first) is
    always recorded: the codec is the one of ``codecs`` that it offers and most other streams
    offer too (the earlier in ``codecs`` on a tie), and streams that do not offer it are
    rejected. Audio streams over plain RTP with a non-zero port are recordable; at most
    ``max_streams`` are taken, in offer order. ``srtp``: ``off`` refuses SRTP streams,
    ``allow`` takes them with a usable SDES key, ``require`` refuses plain RTP. Raises SipError
    488 when nothing can be recorded.
    """
    candidates = [i for i, m in enumerate(offer.media) if _recordable(m, srtp)]
    if not candidates:
        what = {"off": "plain RTP (RTP/AVP; SRTP is off)",
                "require": "SRTP (RTP/SAVP with a usable a=crypto key)"}.get(
                    srtp, "RTP/AVP, or RTP/SAVP with a usable a=crypto key")
        raise SipError(488, f"no audio stream over {what} to record")
    wanted = next((i for i in candidates
                   if customer_label and offer.media[i].label == customer_label), candidates[0])
    supported = [c for c in codecs if c in CODECS and CODECS[c].available]
    usable = [c for c in supported if _codec_of(offer.media[wanted], c)]
    if not usable:
        raise SipError(488, "the customer's stream offers no supported codec (supported: "
                       f"{', '.join(supported)})")
    offered = {c: [i for i in candidates if _codec_of(offer.media[i], c)] for c in usable}
    best = max(usable, key=lambda c: len(offered[c]))  # the first of the most offered
    rate = _codec_of(offer.media[wanted], best)[1].clock_rate  # type: ignore[index]
    others = [i for i in offered[best] if i != wanted
              and _codec_of(offer.media[i], best)[1].clock_rate == rate]  # type: ignore[index]
    chosen = sorted([wanted, *others[:max_streams - 1]])
    plans = [_stream_plan(i, offer.media[i], best) for i in chosen]
    codec = CODECS[best]
    return OfferPlan(codec.encoding, codec.rate(rate), tuple(plans), chosen.index(wanted), best)


def plan_added(offer: SessionDescription, plan: OfferPlan, known: set[int], *, room: int,
               srtp: str = "off") -> tuple[StreamPlan, ...]:
    """Streams a re-offer adds to a running session that can join it (at most ``room``).

    An added stream (an m= line at an index not in ``known``, e.g. a participant joining a
    conference) is recordable as in :func:`plan_offer` and must offer the session's codec at
    its clock rate: one call has one audio format. The others stay rejected (port 0).
    """
    rate = plan.streams[0].rtpmap.clock_rate
    added: list[StreamPlan] = []
    for i, media in enumerate(offer.media):
        if len(added) >= room or i in known or not _recordable(media, srtp):
            continue
        found = _codec_of(media, plan.codec)
        if found is not None and found[1].clock_rate == rate:
            added.append(_stream_plan(i, media, plan.codec))
    return tuple(added)


def _stream_plan(index: int, media: MediaDescription, codec: str) -> StreamPlan:
    """The plan of the ``index``-th m= line in ``codec`` (which it offers)."""
    pt, rtpmap = _codec_of(media, codec)  # type: ignore[misc]
    crypto = pick_crypto(media.crypto) if media.proto.upper() in SECURE_RTP else None
    return StreamPlan(index, pt, rtpmap, _telephone_event(media, rtpmap.clock_rate),
                      media.label, crypto, media.fmtp.get(pt))


def customer_label(offer: SessionDescription, metadata: RecordingMetadata | None,
                   label: str = "", aor: re.Pattern[str] | None = None) -> str:
    """The ``a=label`` of the customer's stream ("": the first stream).

    ``label`` when set, else the first stream whose sending participant's address matches
    ``aor`` (``[gateways.siprec] customer_aor``, by the metadata's stream associations).
    """
    if label or aor is None or metadata is None:
        return label
    for media in offer.media:
        who = metadata.sender_of(media.label) if media.label is not None else None
        if who is not None and who.aor and aor.search(who.aor):
            return media.label  # type: ignore[return-value]
    return ""


def call_id_for(sip_call_id: str) -> str:
    """The internal call id: the SIP Call-ID when it is usable as one, else a digest of it."""
    if CALL_ID_RE.match(sip_call_id):
        return sip_call_id
    return "siprec-" + hashlib.sha256(sip_call_id.encode()).hexdigest()[:32]


def call_info(sip_call_id: str, plan: OfferPlan, roles: Sequence[str],
              metadata: RecordingMetadata | None) -> dict[str, Any]:
    """The event metadata of a recording session (documented in docs/gateways/siprec.md).

    ``provider_call_id`` is the recorded call's SIP session id from the metadata (else the
    recording session's Call-ID); ``ani`` is the user part of the customer's address,
    ``dnis`` that of the first other participant.
    """
    participants: dict[str, str] = {}
    labels: dict[str, str] = {}
    for role, stream in zip(roles, plan.streams, strict=True):
        if stream.label is not None:
            labels[role] = stream.label
            who = metadata.sender_of(stream.label) if metadata is not None else None
            if who is not None and who.aor:
                participants[role] = who.aor
    recorded = sip_call_id
    if metadata is not None and metadata.sip_session_ids:
        recorded = metadata.sip_session_ids[0]
    customer = roles[plan.customer]
    others = [r for r in roles if r != customer and r in participants]
    ani = _user(participants.get(customer))
    dnis = _user(participants[others[0]]) if others else None
    custom: dict[str, Any] = {"recording_call_id": sip_call_id,
                              "codec": plan.codec.lower(), "srtp": any(
                                  p.crypto is not None for p in plan.streams)}
    if participants:
        custom["participants"] = participants
    if labels:
        custom["labels"] = labels
    meta = call_metadata("siprec", recorded, ani=ani, dnis=dnis, custom=custom)
    label = plan.streams[plan.customer].label
    if metadata is not None and label is not None and metadata.sender_counts.get(label, 0) > 1:
        meta["mixed"] = True  # the scored stream is a mix of several participants
    return meta


def _user(aor: str | None) -> str | None:
    """The user (number) of a participant's ``sip:``/``sips:``/``tel:`` address, if any."""
    if not aor:
        return None
    if aor[:4].lower() == "tel:":
        return aor[4:].split(";", 1)[0] or None
    try:
        return uri_user(aor) or None
    except SipError:
        return None
