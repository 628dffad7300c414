"""Pure parts of the SIPREC gateway: RTP parsing, digest auth, offer planning."""

import re
import struct

import pytest
from gwsupport import FUZZ_EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st
from nes2net_gateways.rtp import RtpPacket, parse_rtp
from nes2net_gateways.rtp_payload import CODECS
from nes2net_gateways.sip_digest import DigestAuthenticator, digest_response, parse_digest
from nes2net_gateways.sip_message import SipError
from nes2net_gateways.sip_sdp import parse_sdp
from nes2net_gateways.siprec_call import role_names
from nes2net_gateways.siprec_metadata import parse_rs_metadata
from nes2net_gateways.siprec_offer import (
    call_id_for,
    call_info,
    customer_label,
    plan_added,
    plan_offer,
)
from siprec_client import rs_metadata, sdp_offer


def rtp(seq, ts, payload=b"\x01" * 160, pt=0, ssrc=7, *, csrc=0, ext=b"", pad=0, marker=0):
    b0 = 0x80 | csrc | (0x10 if ext else 0) | (0x20 if pad else 0)
    data = struct.pack("!BBHII", b0, (marker << 7) | pt, seq, ts, ssrc)
    data += b"\x00\x00\x00\x01" * csrc
    if ext:
        data += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    data += payload
    if pad:
        data += b"\x00" * (pad - 1) + bytes([pad])
    return data


def test_parse_rtp_header_variants():
    p = parse_rtp(rtp(5, 800, b"abcd", csrc=2, ext=b"\x11" * 8, pad=3, marker=1))
    assert p == RtpPacket(0, True, 5, 800, 7, b"abcd")
    assert parse_rtp(b"\x80\xc8" + b"\x00" * 30) is None  # RTCP sender report
    assert parse_rtp(b"\x40" + b"\x00" * 20) is None  # version 1
    assert parse_rtp(rtp(1, 0, b"")[:8]) is None  # short
    assert parse_rtp(b"\xa0" + rtp(1, 0, b"ab")[1:-1] + b"\xc8") is None  # padding > packet


def test_digest_round_trip_stale_and_replay():
    auth = DigestAuthenticator("sbc", "pw", "nes2net-stream", ttl_s=60)
    (sha, md5) = [parse_digest(c) for c in auth.challenges("10.0.0.1")]
    assert (sha["algorithm"], md5["algorithm"], sha["qop"]) == ("SHA-256", "MD5", "auth")
    for params, cnonce in ((sha, "c1"), (md5, "c2")):
        value = digest_response(params, "sbc", "pw", "INVITE", "sip:srs@10.0.0.2",
                                cnonce=cnonce)
        assert auth.check(value, "INVITE", "10.0.0.1") == "ok"
        assert auth.check(value, "INVITE", "10.0.0.1") == "invalid"  # replayed
    fresh = parse_digest(auth.challenges("10.0.0.1")[0])
    value = digest_response(fresh, "sbc", "pw", "INVITE", "sip:srs@10.0.0.2")
    assert auth.check(value, "INVITE", "10.0.0.9") == "invalid"  # nonce of another address
    assert auth.check(value, "BYE", "10.0.0.1") == "invalid"  # another method
    assert auth.check(value, "INVITE", "10.0.0.1", now=1e12) == "stale"
    assert auth.check(None, "INVITE", "10.0.0.1") == "missing"
    assert auth.check("Basic abc", "INVITE", "10.0.0.1") == "invalid"
    wrong = digest_response(fresh, "sbc", "nope", "INVITE", "sip:srs@10.0.0.2", cnonce="x")
    assert auth.check(wrong, "INVITE", "10.0.0.1") == "invalid"


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.text(max_size=300))
def test_digest_parsing_never_raises(text):
    auth = DigestAuthenticator("sbc", "pw", "r")
    parse_digest("Digest " + text)
    assert auth.check("Digest " + text, "INVITE", "10.0.0.1") in ("invalid", "missing", "stale")


def test_offer_plan_codec_labels_and_limits():
    plan = plan_offer(parse_sdp(sdp_offer(formats="8 0 101")), codecs=["PCMU", "PCMA"],
                      max_streams=4)
    assert plan.encoding == "mulaw" and plan.sample_rate == 8000
    assert [(s.index, s.payload_type, s.telephone_event) for s in plan.streams] == [
        (0, 0, 101), (1, 0, 101)]
    plan = plan_offer(parse_sdp(sdp_offer(formats="8")), codecs=["PCMU", "PCMA"],
                      max_streams=4, customer_label="2")
    assert plan.encoding == "alaw" and plan.customer == 1
    plan = plan_offer(parse_sdp(sdp_offer(labels=("a", "b", "c"))), codecs=["PCMU"],
                      max_streams=2)
    assert [s.label for s in plan.streams] == ["a", "b"]
    with pytest.raises(SipError) as err:
        plan_offer(parse_sdp(sdp_offer(formats="0")), codecs=["PCMA"], max_streams=2)
    assert err.value.status == 488
    assert role_names("caller", 3, 1) == ["agent", "caller", "agent2"]


def test_call_identity_and_metadata():
    assert call_id_for("abc@host") == "abc@host"
    odd = call_id_for("a b%c!")
    assert odd.startswith("siprec-") and odd == call_id_for("a b%c!")
    plan = plan_offer(parse_sdp(sdp_offer()), codecs=["PCMU"], max_streams=4)
    meta = parse_rs_metadata(rs_metadata(aors=("tel:+4930123;phone-context=x",
                                               "sips:bob@example.com")).encode())
    info = call_info("rs1@sbc", plan, ["caller", "agent"], meta)
    assert (info["ani"], info["dnis"]) == ("+4930123", "bob")
    assert call_info("rs1@sbc", plan, ["caller", "agent"], None) == {
        "provider": "siprec", "provider_call_id": "rs1@sbc",
        "custom": {"recording_call_id": "rs1@sbc", "codec": "pcmu", "srtp": False,
                   "labels": {"caller": "1", "agent": "2"}}}


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.lists(st.sampled_from([
    "m=audio 4000 RTP/AVP 0 8", "m=audio 0 RTP/AVP 0", "m=video 5000 RTP/AVP 96",
    "m=audio 4002 RTP/SAVP 0", "a=rtpmap:0 PCMA/8000", "a=rtpmap:96 L16/16000",
    "a=rtpmap:97 L16/8000/2", "m=audio 4004 RTP/AVP 96 97", "a=label:x", "a=inactive",
    "c=IN IP4 10.0.0.1", "a=rtpmap:8 PCMU/16000"]), max_size=12))
def test_offer_planning_raises_only_sip_errors(lines):
    text = "\r\n".join(["v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "t=0 0", *lines]) + "\r\n"
    try:
        plan = plan_offer(parse_sdp(text), codecs=["PCMU", "PCMA", "L16"], max_streams=3)
    except SipError:
        return
    assert 1 <= len(plan.streams) <= 3 and 0 <= plan.customer < len(plan.streams)
    known = {sp.index for sp in plan.streams}
    added = plan_added(parse_sdp(text), plan, known, room=2)  # a re-offer of the same SDP
    assert len(added) <= 2 and not known & {sp.index for sp in added}
    assert all(sp.rtpmap.encoding == plan.codec for sp in added)


def test_added_streams_join_in_the_sessions_codec_only():
    plan = plan_offer(parse_sdp(sdp_offer()), codecs=["PCMU", "PCMA"], max_streams=4)
    re_offer = parse_sdp(sdp_offer(labels=("1", "2", "3", "4", "5")) +
                         "m=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
                         "m=audio 4002 RTP/AVP 96\r\na=rtpmap:96 PCMU/16000\r\n"
                         "m=audio 0 RTP/AVP 0\r\n")
    added = plan_added(re_offer, plan, {0, 1}, room=2)
    assert [(sp.index, sp.label, sp.payload_type) for sp in added] == [(2, "3", 0), (3, "4", 0)]
    assert [sp.index for sp in plan_added(re_offer, plan, {0, 1}, room=9)] == [2, 3, 4]
    assert plan_added(re_offer, plan, {0, 1}, room=0) == ()
    assert plan_added(parse_sdp(sdp_offer()), plan, {0, 1}, room=2) == ()  # a refresh


def test_wideband_plans_use_the_decoded_rate():
    g722 = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9\r\n"
    plan = plan_offer(parse_sdp(g722), codecs=["PCMU", "G722"], max_streams=2)
    assert (plan.encoding, plan.sample_rate, plan.streams[0].rtpmap.clock_rate) == (
        "pcm_s16le", 16000, 8000)
    opus = g722.replace("RTP/AVP 9", "RTP/AVP 111\r\na=rtpmap:111 opus/48000/2")
    plan = plan_offer(parse_sdp(opus), codecs=["OPUS"], max_streams=2)
    assert (plan.encoding, plan.sample_rate) == ("pcm_s16le", 48000)


@settings(max_examples=FUZZ_EXAMPLES // 3, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_wideband_decoders_never_raise(payloads):
    pytest.importorskip("av")
    for name, clock in (("G722", 8000), ("OPUS", 48000)):
        dec = CODECS[name].decoder(clock)
        for p in payloads:
            audio, units = dec.decode(p)
            assert len(audio) % 2 == 0 and units >= 0
        assert len(dec.silence(160)) == 2 * 160 * CODECS[name].rate(clock) // clock


def test_the_customers_stream_decides_the_codec():
    """A caller leg in Opus and an agent leg in G.711: the customer's stream is recorded."""
    text = ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=label:caller\r\n"
            "m=audio 4002 RTP/AVP 0\r\na=label:agent\r\n")
    plan = plan_offer(parse_sdp(text), codecs=["PCMU", "OPUS"], max_streams=4)
    assert plan.codec == "OPUS" and [s.label for s in plan.streams] == ["caller"]
    plan = plan_offer(parse_sdp(text), codecs=["PCMU", "OPUS"], max_streams=4,
                      customer_label="agent")
    assert plan.codec == "PCMU" and [s.label for s in plan.streams] == ["agent"]
    # with max_streams 1 the customer's stream is the one kept, wherever it is
    plan = plan_offer(parse_sdp(sdp_offer(labels=("a", "b", "c"))), codecs=["PCMU"],
                      max_streams=1, customer_label="c")
    assert [s.label for s in plan.streams] == ["c"] and plan.customer == 0


def test_the_customer_found_by_address_pattern():
    offer = parse_sdp(sdp_offer(labels=("10", "11")))
    meta = parse_rs_metadata(rs_metadata(labels=("10", "11"), aors=(
        "sip:2001@pbx.example", "sip:+4930123456@carrier.example")).encode())
    e164 = re.compile(r"^(sip|tel):\+")
    assert customer_label(offer, meta, "", e164) == "11"  # the agent's extension is first
    assert customer_label(offer, meta, "10", e164) == "10"  # an explicit label wins
    assert customer_label(offer, None, "", e164) == ""  # no metadata: the first stream
    assert customer_label(offer, meta, "", re.compile("nobody")) == ""


def test_a_stream_two_participants_send_is_marked_mixed():
    """One mixed stream (both parties on one label): the scored channel is flagged."""
    doc = ("<recording xmlns='urn:ietf:params:xml:ns:recording:1'>"
           "<participant participant_id='a'><nameID aor='sip:+15550001@x'/></participant>"
           "<participant participant_id='b'><nameID aor='sip:2001@pbx'/></participant>"
           "<stream stream_id='s' session_id='S'><label>1</label></stream>"
           "<participantstreamassoc participant_id='a'><send>s</send></participantstreamassoc>"
           "<participantstreamassoc participant_id='b'><send>s</send></participantstreamassoc>"
           "</recording>")
    meta = parse_rs_metadata(doc.encode())
    assert meta.sender_counts == {"1": 2} and meta.sender_of("1").aor == "sip:+15550001@x"
    plan = plan_offer(parse_sdp(sdp_offer(labels=("1",))), codecs=["PCMU"], max_streams=4)
    assert call_info("m@sbc", plan, ["caller"], meta)["mixed"] is True
    two = plan_offer(parse_sdp(sdp_offer()), codecs=["PCMU"], max_streams=4)
    assert "mixed" not in call_info("m@sbc", two, ["caller", "agent"],
                                    parse_rs_metadata(rs_metadata().encode()))


def test_metadata_updates_merge_partial_and_replace_complete():
    """RFC 7865 §6: a partial update restates only what changed; a complete one replaces."""
    start = parse_rs_metadata(rs_metadata().encode())
    assert start.sender_of("2").aor == "sip:+18005550100@pbx.example"
    partial = parse_rs_metadata(
        b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>"
        b"<participant participant_id='P2'><nameID aor='sip:+18005550199@pbx.example'/>"
        b"</participant><participantstreamassoc participant_id='P1'/>"
        b"<participantstreamassoc participant_id='P2'><send>ST1</send>"
        b"</participantstreamassoc></recording>")
    assert partial.sender_of("2") is None  # alone it names no labelled stream
    merged = start.merged(partial)
    assert merged.sender_of("2").aor == "sip:+18005550199@pbx.example"
    assert merged.sender_of("1").aor == start.sender_of("1").aor  # the caller stays
    assert merged.sip_session_ids == start.sip_session_ids and merged.sender_counts["2"] == 1
    assert start.sender_of("2").aor == "sip:+18005550100@pbx.example"  # not changed in place
    complete = parse_rs_metadata(rs_metadata(aors=("sip:+1@a", "sip:+2@b")).encode())
    assert start.merged(complete) is complete


# the layout of the SIPREC metadata drafts, as some deployed SBCs still send it: ``id``
# attributes, <send> inside <participant>, <dataMode>, the namespace without ":1"
DRAFT_LAYOUT = b"""<?xml version='1.0' encoding='UTF-8'?>
<recording xmlns='urn:ietf:params:xml:ns:recording'>
  <dataMode>complete</dataMode>
  <session id="urn:uuid:5f1e0c1a-0000-4000-8000-000000000001"/>
  <participant id="urn:uuid:aa01" session="urn:uuid:5f1e0c1a-0000-4000-8000-000000000001">
    <aor>sip:+15557654321@carrier.example</aor><name>Caller</name>
    <send>urn:uuid:st01</send><recv>urn:uuid:st02</recv>
  </participant>
  <participant id="urn:uuid:aa02" session="urn:uuid:5f1e0c1a-0000-4000-8000-000000000001">
    <nameID aor="sip:4711@pbx.example"><name>Agent</name></nameID>
    <send>urn:uuid:st02</send>
  </participant>
  <stream id="urn:uuid:st01" session="urn:uuid:5f1e0c1a-0000-4000-8000-000000000001">
    <label>1</label><mode>separate</mode></stream>
  <stream id="urn:uuid:st02" session="urn:uuid:5f1e0c1a-0000-4000-8000-000000000001">
    <label>2</label></stream>
</recording>"""


def test_metadata_in_the_drafts_layout_names_the_senders():
    meta = parse_rs_metadata(DRAFT_LAYOUT)
    assert meta.datamode == "complete"
    assert meta.session_ids == ["urn:uuid:5f1e0c1a-0000-4000-8000-000000000001"]
    assert meta.sender_of("1").aor == "sip:+15557654321@carrier.example"
    assert meta.sender_of("2").aor == "sip:4711@pbx.example"
    assert meta.sender_of("2").name == "Agent" and meta.sender_counts == {"1": 1, "2": 1}
    # a partial update in the same layout: the agent's stream now comes from a new agent
    update = parse_rs_metadata(
        b"<recording xmlns='urn:ietf:params:xml:ns:recording'><dataMode>partial</dataMode>"
        b"<participant id='urn:uuid:aa03'><aor>sip:4712@pbx.example</aor>"
        b"<send>urn:uuid:st02</send></participant>"
        b"<participant id='urn:uuid:aa02'><send/></participant></recording>")
    assert update.datamode == "partial"
    merged = meta.merged(update)
    assert merged.sender_of("1").aor == "sip:+15557654321@carrier.example"
    assert merged.sender_of("2").aor == "sip:4712@pbx.example"
    assert merged.participants["urn:uuid:aa02"].aor == "sip:4711@pbx.example"  # kept
