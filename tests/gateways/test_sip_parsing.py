"""SIPREC parsing: SIP messages and TCP framing, multipart bodies, SDP offers/answers, metadata."""

import pytest
from gwsupport import FUZZ_EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st
from nes2net_gateways.sip_message import (
    REASONS,
    SipError,
    SipMessage,
    StreamFramer,
    addr_uri,
    header_params,
    make_response,
    new_branch,
    new_tag,
    parse_message,
    uri_host_port,
    uri_user,
)
from nes2net_gateways.sip_sdp import (
    AcceptedStream,
    RtpMap,
    answer_sdp,
    message_bodies,
    parse_sdp,
    split_multipart,
)
from nes2net_gateways.siprec_metadata import parse_rs_metadata

METADATA = b"""<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:alice@atlanta.com"><name xml:lang="it">Alice</name></nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="sip:bob@biloxy.com"><name xml:lang="it">Bob</name></nameID>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>96</label></stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>97</label></stream>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w=="><send>UAAMm5GRQKSCMVvLyl4rFw==</send><recv>i1Pz3to5hGk8fuXl+PbwCw==</recv></participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw=="><send>i1Pz3to5hGk8fuXl+PbwCw==</send><recv>UAAMm5GRQKSCMVvLyl4rFw==</recv></participantstreamassoc>
</recording>
"""  # noqa: E501 - the RFC 7865 example, verbatim

SDP = (
    "v=0\r\n"
    "o=SRC 2890844526 2890844526 IN IP4 198.51.100.1\r\n"
    "s=-\r\n"
    "c=IN IP4 198.51.100.1\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=label:96\r\n"
    "a=sendonly\r\n"
    "m=audio 49172 RTP/AVP 8 0 101\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=label:97\r\n"
    "a=sendonly\r\n"
)

BODY = (
    b"--foobar\r\n"
    b"Content-Type: application/sdp\r\n\r\n" + SDP.encode() + b"\r\n"
    b"--foobar\r\n"
    b"Content-Type: application/rs-metadata+xml\r\n"
    b"Content-Disposition: recording-session\r\n\r\n" + METADATA + b"\r\n"
    b"--foobar--\r\n"
)

HEAD = (
    "INVITE sip:srs@192.0.2.10:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKdf6b622b648d9;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "SRC" <sip:src@198.51.100.1>;tag=35e195d2\r\n'
    "To: <sip:srs@192.0.2.10>\r\n"
    "Call-ID: d253c800-b0d1ea39-4a7dd-3f0e20a\r\n"
    "CSeq: 101 INVITE\r\n"
    "Contact: <sip:src@198.51.100.1:5060>;+sip.src\r\n"
    "Require: siprec\r\n"
    "Supported: replaces, timer\r\n"
    "Accept: application/sdp, application/rs-metadata+xml\r\n"
    "Content-Type: multipart/mixed;boundary=foobar\r\n"
)
INVITE = (HEAD + f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY

OPTIONS = (
    b"OPTIONS sip:srs@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/TCP 198.51.100.1;branch=z9hG4bK2\r\n"
    b"From: <sip:src@198.51.100.1>;tag=1\r\nTo: <sip:srs@192.0.2.10>\r\nCall-ID: opt1\r\n"
    b"CSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def status_of(data, **kw):
    with pytest.raises(SipError) as info:
        parse_message(data, **kw)
    return info.value.status


def test_siprec_invite_end_to_end():
    msg = parse_message(INVITE)
    assert msg.is_request and msg.method == "INVITE" and msg.uri == "sip:srs@192.0.2.10:5060"
    assert msg.call_id == "d253c800-b0d1ea39-4a7dd-3f0e20a" and msg.cseq == (101, "INVITE")
    assert msg.body == BODY
    sdp_text, xml = message_bodies(msg.get("content-type"), msg.body)
    assert sdp_text == SDP and xml == METADATA
    sdp = parse_sdp(sdp_text)
    assert sdp.origin[0] == "SRC" and sdp.connection == "198.51.100.1"
    first, second = sdp.media
    assert (first.port, first.label, first.direction, first.ptime) == (49170, "96", "sendonly", 20)
    assert first.payload_types == [0, 8, 101] and first.connection == "198.51.100.1"
    assert first.rtpmap[8] == RtpMap("PCMA", 8000)  # static default
    assert first.rtpmap[101] == RtpMap("TELEPHONE-EVENT", 8000) and first.fmtp[101] == "0-15"
    assert (second.port, second.label, second.formats) == (49172, "97", ["8", "0", "101"])
    meta = parse_rs_metadata(xml)
    assert meta.datamode == "complete" and meta.session_ids == ["hVpd7YQgRW2nD22h7q60JQ=="]
    assert meta.sip_session_ids[0].startswith("ab30317f")
    assert meta.senders == {"96": "srfBElmCRp2QB23b7Mpk0w==", "97": "zSfPoSvdSDCmU3A3TRDxAw=="}
    alice = meta.sender_of("96")
    assert alice is not None and alice.aor == "sip:alice@atlanta.com" and alice.name == "Alice"
    assert meta.sender_of("97").aor == "sip:bob@biloxy.com" and meta.sender_of("98") is None


def test_metadata_without_namespace_and_vendor_variants():
    xml = (b"<recording><datamode>partial</datamode><participant participant_id='p1'>"
           b"<nameID><aor>tel:+15551234567</aor></nameID><vendor:x xmlns:vendor='urn:v'/>"
           b"</participant><participant participant_id='p2'><nameID aor='sip:b@c'/></participant>"
           b"<group group_id='g'/><stream stream_id='s1'><label> 5 </label></stream>"
           b"<participantstreamassoc participant_id='p1'><send>s1</send></participantstreamassoc>"
           b"<participantstreamassoc participant_id='p9'><send>nolabel</send>"
           b"</participantstreamassoc></recording>")
    meta = parse_rs_metadata(xml)
    assert meta.datamode == "partial" and meta.stream_labels == {"s1": "5"}
    assert meta.sender_of("5").aor == "tel:+15551234567"
    assert meta.participants["p2"].aor == "sip:b@c" and meta.participants["p2"].name is None
    long = parse_rs_metadata(b"<recording><datamode>" + b"x" * 5000 + b"</datamode></recording>")
    assert len(long.datamode) == 256


@pytest.mark.parametrize("xml", [
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "b">]><recording>&a;</recording>',
    b"<!doctype recording><recording/>",
    b"<recording><!ENTITY x 'y'></recording>",
    b"<other/>",
    b"<recording>",
    b"",
    b"\xff\xfe<\x00r\x00/\x00>\x00",
    b"<recording>" + b"<a/>" * 2001 + b"</recording>",
    b"<recording>" + b"<a>" * 40 + b"</a>" * 40 + b"</recording>",
    b"<recording>" + b" " * 70000 + b"</recording>",
])
def test_bad_metadata_refused(xml):
    with pytest.raises(SipError) as info:
        parse_rs_metadata(xml)
    assert info.value.status == 400


def test_compact_headers_folding_and_lists():
    data = (b"\r\n\r\nBYE sip:srs@192.0.2.10 SIP/2.0\r\n"
            b"v: SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/TCP [2001:db8::1]:5070"
            b";branch=z9hG4bK2\r\nV : SIP/2.0/UDP c.example;branch=z9hG4bK3\r\n"
            b'f: "Bob, Jr" <sip:b@x>;tag=9\r\nt: <sip:srs@192.0.2.10>;tag=8\r\n'
            b"i: abc\r\ncall-id: ignored-second\r\ncseq: 2 BYE\r\n"
            b"k: timer,\r\n  100rel\r\nSubject: first\r\n\tsecond\r\nX-Custom: 1\r\nl: 4\r\n\r\n"
            b"bodyEXTRA")
    msg = parse_message(data)
    assert msg.call_id == "abc" and msg.get("I") == "abc" and msg.get("Call-ID") == "abc"
    assert msg.get_all("call-id") == ["abc", "ignored-second"]
    assert [h for h, _ in msg.headers][:4] == ["Via", "Via", "From", "To"]
    assert msg.get_all("Via") == ["SIP/2.0/UDP a.example;branch=z9hG4bK1",
                                  "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2",
                                  "SIP/2.0/UDP c.example;branch=z9hG4bK3"]
    assert msg.get_all("Supported") == ["timer", "100rel"]
    assert msg.get("subject") == "first second" and msg.get("x-custom") == "1"
    assert msg.get_all("From") == ['"Bob, Jr" <sip:b@x>;tag=9']  # not a list header
    assert msg.body == b"body" and msg.get("Content-Length") == "4"
    again = parse_message(msg.to_bytes())
    assert again.headers == msg.headers and again.body == b"body"


@pytest.mark.parametrize("data, status", [
    (OPTIONS.replace(b"7 OPTIONS", b"7 INVITE"), 400),
    (OPTIONS.replace(b"7 OPTIONS", b"2147483648 OPTIONS"), 400),
    (OPTIONS.replace(b"Call-ID: opt1\r\n", b""), 400),
    (OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 400),
    (OPTIONS.replace(b"OPTIONS sip", b"OPT IONS sip"), 400),
    (b"SIP/2.0 99 Odd\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n", 400),
    (b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n", 400),
    (OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 5"), 400),
    (OPTIONS.replace(b"Content-Length: 0", b"Content-Length: -1"), 400),
    (OPTIONS.replace(b"Call-ID: opt1", b"Call-ID: \xff"), 400),
    (OPTIONS.replace(b"Call-ID: opt1", b"Call-ID opt1"), 400),
    (OPTIONS.replace(b"Call-ID: opt1", b"Call-ID: a\x00b"), 400),
    (OPTIONS + b"x" * 70000, 513),
    (b"\r\n\r\n", 400),
])
def test_bad_messages(data, status):
    assert status_of(data) == status


def test_lenient_responses_and_limits():
    msg = parse_message(b"SIP/2.0 180 Ringing\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n")
    assert (msg.is_request, msg.status, msg.reason, msg.body) == (False, 180, "Ringing", b"")
    assert status_of(OPTIONS, max_bytes=len(OPTIONS) - 1) == 513
    assert status_of(OPTIONS, max_headers=5) == 400
    assert parse_message(OPTIONS, max_headers=6).get("CSeq") == "7 OPTIONS"
    assert REASONS[513] == "Message Too Large"
    assert SipError(488, "x").reason == "Not Acceptable Here"


def test_framer_every_split_position():
    stream = INVITE + OPTIONS
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert [m.method for m in got] == ["INVITE", "OPTIONS"], cut
        assert got[0].body == BODY and got[1].body == b""


def test_framer_byte_by_byte_keepalives_and_one_chunk():
    framer = StreamFramer()
    got = [m for b in b"\r\n\r\n" + OPTIONS + b"\r\n\r\n" for m in framer.feed(bytes([b]))]
    assert [m.call_id for m in got] == ["opt1"]
    assert framer.feed(b"\r\n\r\n") == []
    assert len(StreamFramer().feed(OPTIONS + b"\r\n\r\n" + INVITE + OPTIONS)) == 3


def test_framer_errors_are_sticky():
    framer = StreamFramer()
    bad = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(SipError) as info:
        framer.feed(bad)
    assert info.value.status == 400
    with pytest.raises(SipError):
        framer.feed(OPTIONS)
    framer = StreamFramer()  # good messages before the error come back first
    assert len(framer.feed(OPTIONS + bad)) == 1
    with pytest.raises(SipError):
        framer.feed(b"")
    for data in (b"x" * 70000, OPTIONS.replace(b"Length: 0", b"Length: 99999")):
        with pytest.raises(SipError) as info:
            StreamFramer().feed(data)
        assert info.value.status == 513
    with pytest.raises(SipError, match="too large"):
        StreamFramer(max_bytes=len(OPTIONS) - 1).feed(OPTIONS)


def test_make_response():
    extra_via = b"Via: SIP/2.0/UDP p.example;branch=z9hG4bKp\r\nv: "
    req = parse_message(INVITE.replace(b"Via: ", extra_via))
    resp = make_response(req, 200, to_tag="abc", headers=[("Contact", "<sip:srs@192.0.2.10>")],
                         body=b"v=0\r\n")
    assert (resp.status, resp.reason, resp.is_request) == (200, "OK", False)
    assert resp.get_all("Via") == req.get_all("Via") and len(resp.get_all("Via")) == 2
    assert resp.get("To") == "<sip:srs@192.0.2.10>;tag=abc" and resp.get("From") == req.get("From")
    assert resp.call_id == req.call_id and resp.cseq == (101, "INVITE")
    wire = parse_message(resp.to_bytes())
    assert wire.get("Content-Length") == "5" and wire.body == b"v=0\r\n"
    assert wire.get("Contact") == "<sip:srs@192.0.2.10>"
    tagged = make_response(parse_message(resp.to_bytes()), 481, to_tag="zzz")
    assert tagged.get("To").endswith(";tag=abc") and tagged.reason == REASONS[481]
    assert make_response(req, 599, "Custom").to_bytes().startswith(b"SIP/2.0 599 Custom\r\n")
    assert new_branch().startswith("z9hG4bK") and len(new_branch()) == 27
    assert len(new_tag()) == 16 and new_tag() != new_tag()


def test_header_helpers():
    assert header_params("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport") == (
        "SIP/2.0/UDP 10.0.0.1:5060", {"branch": "z9hG4bK1", "rport": ""})
    assert header_params('"A; b" <sip:a@b;transport=udp>;TAG=abc') == (
        '"A; b" <sip:a@b;transport=udp>', {"tag": "abc"})
    assert addr_uri('"A" <sip:a@b>;tag=x') == "sip:a@b"
    assert addr_uri('"x <y>" <sip:c@d>') == "sip:c@d"
    assert addr_uri("sip:a@b;tag=x") == "sip:a@b"
    assert uri_host_port("sip:alice@atlanta.com") == ("atlanta.com", None)
    assert uri_host_port("sips:a@10.0.0.1:5061;transport=tls?subject=x") == ("10.0.0.1", 5061)
    assert uri_host_port("sip:[::1]:5070") == ("::1", 5070)
    assert uri_host_port("sip:u@[2001:db8::5];lr") == ("2001:db8::5", None)
    assert uri_user("sip:+15551234567@gw;user=phone") == "+15551234567"
    assert uri_user("sip:bob:secret@b.example") == "bob"
    assert uri_user("sip:gw.example") is None and uri_user("tel:+1555;phone-context=x") == "+1555"
    for bad in ("http://x", "sip:", "sip:[::1", "sip:a@b:0", "sip:a@b:99999", "sip:a:b:c",
                "garbage", "sip:[zz]:1"):
        with pytest.raises(SipError) as info:
            uri_host_port(bad)
        assert info.value.status == 416, bad
    for bad in ('"A" <sip:a@b', "", '"unterminated <sip:a@b>'):
        with pytest.raises(SipError):
            addr_uri(bad)


def test_multipart_details():
    body = (b"preamble\r\n--b 1\nContent-Type: Application/SDP; charset=utf-8\n"
            b"Content-Disposition: session;handling=required\n\nv=0\n--b 1\n\nplain\n"
            b"--b 1--\nepilogue")
    first, second = split_multipart('multipart/mixed; boundary="b 1"', body)
    assert (first.content_type, first.params, first.disposition) == (
        "application/sdp", {"charset": "utf-8"}, "session")
    assert first.body == b"v=0" and (second.content_type, second.body) == ("text/plain", b"plain")
    for ctype, data, status in [
        ("multipart/mixed;boundary=b", b"--b\r\n\r\nx\r\n", 400),  # no closing delimiter
        ("multipart/mixed", b"--b\r\n\r\nx\r\n--b--", 400),
        ("multipart/mixed;boundary=b", b"--b\r\n\r\nx\r\n" * 9 + b"--b--", 400),
        ("text/html", b"<p>", 415),
        ("multipart/mixed;boundary=b", b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", 415),
        ("application/sdp", b"v=0\xff", 400),
        (None, b"v=0", 400),
    ]:
        with pytest.raises(SipError) as info:
            message_bodies(ctype, data)
        assert info.value.status == status, (ctype, data)
    assert message_bodies("application/sdp", b"") == (None, None)
    assert message_bodies("application/sdp", b"v=0\r\n") == ("v=0\r\n", None)


def test_sdp_details_and_errors():
    sdp = parse_sdp("v=0\no=- 1 1 IN IP6 ::1\ns=x\na=recvonly\nzz\nm=audio 5000/2 RTP/SAVP 18 96\n"
                    "c=IN IP4 224.2.1.1/127\na=rtcp-mux\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
                    "inline:abc|2^20 KDR=1\na=ptime:30.0\nm=video 0 RTP/AVP 31\na=sendrecv\n")
    audio, video = sdp.media
    assert sdp.connection is None and audio.connection == "224.2.1.1"
    assert (audio.port, audio.port_count, audio.direction) == (5000, 2, "recvonly")
    assert audio.rtcp_mux
    assert audio.rtpmap == {18: RtpMap("G729", 8000)} and audio.ptime == 30
    assert audio.crypto[0].suite == "AES_CM_128_HMAC_SHA1_80"
    assert audio.crypto[0].session_params == "KDR=1" and video.direction == "sendrecv"
    for text, status in [
        ("o=- 1 1 IN IP4 a\nv=0\n", 400), ("v=0\ns=x\n", 400), ("", 400),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 70000 RTP/AVP 0\n", 400),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio x RTP/AVP 0\n", 400),
        ("v=0\no=- 1 1 IN IP4 a\nc=IN IPX a\n", 400),
        ("v=0\no=- 1 1 IN IP4 a\nm=audio 1 RTP/AVP 0\na=rtpmap:0 PCMU\n", 400),
        ("v=0\no=- 1 1 IN IP4 a\n" + "m=audio 1 RTP/AVP 0\n" * 17, 488),
        ("v=0\no=- 1 1 IN IP4 a\n" + "a=x\n" * 1001, 400),
    ]:
        with pytest.raises(SipError) as info:
            parse_sdp(text)
        assert info.value.status == status, text


def test_answer_sdp_accepted_and_rejected():
    offer = parse_sdp(SDP.replace("m=audio 49172", "m=audio 0", 0) + "m=video 49174 RTP/AVP 31\n")
    offer.media[1].direction = "inactive"
    streams = [AcceptedStream(40000, 0, RtpMap("PCMU", 8000), telephone_event=101),
               AcceptedStream(40002, 8, RtpMap("PCMA", 8000)), None]
    text = answer_sdp(offer, address="192.0.2.10", session_id=7, version=1, accepted=streams)
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    answer = parse_sdp(text)
    assert answer.origin == ("nes2net", "7", "1", "IN", "IP4", "192.0.2.10")
    first, second, video = answer.media
    assert (first.port, first.formats, first.direction, first.label) == (
        40000, ["0", "101"], "recvonly", "96")
    assert first.rtpmap[101] == RtpMap("TELEPHONE-EVENT", 8000) and first.fmtp[101] == "0-15"
    assert first.connection == "192.0.2.10" and first.rtpmap[0] == RtpMap("PCMU", 8000)
    assert (second.port, second.direction, second.label) == (40002, "inactive", "97")
    assert (video.port, video.formats, video.connection) == (0, ["31"], None)
    srtp = AcceptedStream(40000, 0, RtpMap("PCMU", 8000), crypto="1 AES_CM_128_HMAC_SHA1_80 k")
    six = parse_sdp(answer_sdp(offer, address="2001:db8::9", session_id=1, version=2,
                               accepted=[srtp, None, None], username="u"))
    assert six.media[0].connection == "2001:db8::9" and six.origin[4] == "IP6"
    assert six.media[0].crypto[0].key_params == "k"
    with pytest.raises(ValueError):
        answer_sdp(offer, address="a", session_id=1, version=1, accepted=[None])


# --- fuzzing: nothing but SipError may come out of the parsers --------------------------------

def quietly(call, *args):
    try:
        call(*args)
    except SipError:
        pass


def parse_everything(data: bytes) -> None:
    try:
        msg = parse_message(data)
        sdp, xml = message_bodies(msg.get("Content-Type"), msg.body)
        msg.cseq, header_params(msg.get("From") or ""), addr_uri(msg.get("To") or "x")
        uri_host_port(msg.uri or "")
        if sdp is not None:
            parse_sdp(sdp)
        if xml is not None:
            parse_rs_metadata(xml)
    except SipError:
        pass
    framer = StreamFramer()
    for piece in (data[:len(data) // 2], data[len(data) // 2:], b"\r\n"):
        quietly(framer.feed, piece)


@st.composite
def mutated(draw, base=INVITE):
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(
                [b"\r\n", b"\r\n\r\n", b":", b";", b"<", b'"', b"--foobar", b"\xff", b"\x00",
                 b"=", b"/", b" ", b"\n\n", b"--foobar--"]) | st.binary(max_size=6))
        else:
            del data[pos:pos + draw(st.integers(1, 40))]
    return bytes(data)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    parse_everything(data)
    quietly(parse_rs_metadata, data)
    quietly(message_bodies, "multipart/mixed;boundary=foobar", data)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(mutated())
def test_fuzz_mutated_invite(data):
    parse_everything(data)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(mutated(BODY), mutated(METADATA), mutated(SDP.encode()))
def test_fuzz_mutated_bodies(body, xml, sdp):
    quietly(message_bodies, "multipart/mixed; boundary=foobar", body)
    quietly(parse_rs_metadata, xml)
    quietly(parse_sdp, sdp.decode("utf-8", "replace"))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_text_helpers(text):
    for call in (header_params, addr_uri, uri_host_port, uri_user, parse_sdp):
        quietly(call, text)
    quietly(message_bodies, text, b"x")
    quietly(split_multipart, text, b"--x--")
    assert isinstance(SipMessage(None, None, 200, "OK", [("To", text)]).to_bytes(), bytes)
