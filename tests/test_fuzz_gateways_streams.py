"""Fuzzing the media-stream gateways' parsers: Twilio, Telnyx, Plivo, Vonage, FreeSWITCH, jambonz,
Azure Communication Services, Exotel.

Property: valid provider messages parse to the expected result; mutated, corrupted or random
ones either parse to a well-formed result or raise ProtocolError (which the gateway turns into
its error reply and close code), never another exception, never a hang; size limits hold.
"""

from __future__ import annotations

import base64
import json
import re

from fuzzing import FUZZ, dumps, json_values
from gateway_fuzzing import (
    MAX_TEXT,
    expect,
    ids,
    inputs,
    payloads,
    size_limit_holds,
    uuids,
)
from hypothesis import example, given
from hypothesis import strategies as st
from nes2net_gateways import acs, exotel, plivo, telnyx, twilio, vonage
from nes2net_gateways.freeswitch import MIX_TYPES, FreeSwitchGateway, parse_metadata, parse_rate
from nes2net_gateways.jambonz import JambonzGateway

# --------------------------------------------------------------------------- Twilio

@st.composite
def twilio_messages(draw):
    sid = draw(ids)
    seq = draw(st.integers(0, 10 ** 6).map(str) | st.integers(0, 10 ** 6))
    kind = draw(st.sampled_from(["start", "media", "stop", "connected", "mark", "dtmf"]))
    msg = {"event": kind, "sequenceNumber": seq, "streamSid": sid}
    if kind == "start":
        msg["start"] = {"streamSid": sid, "callSid": draw(ids), "accountSid": draw(ids),
                        "tracks": draw(st.lists(st.sampled_from(twilio.TRACKS), min_size=1,
                                                max_size=2, unique=True)),
                        "customParameters": draw(st.dictionaries(ids, st.text(max_size=8),
                                                                 max_size=3)),
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                        "channels": 1}}
    elif kind == "media":
        msg["media"] = {"track": draw(st.sampled_from(twilio.TRACKS)), "chunk": str(seq),
                        "timestamp": "5", "payload": base64.b64encode(draw(payloads)).decode()}
    return msg


def check_twilio(m):
    if isinstance(m, twilio.TwilioStart):
        assert isinstance(m.call_sid, str) and m.call_sid and isinstance(m.stream_sid, str)
        assert set(m.tracks) <= set(twilio.TRACKS) and isinstance(m.custom, dict)
    elif isinstance(m, twilio.TwilioMedia):
        assert m.track in twilio.TRACKS and isinstance(m.payload, bytes)
    else:
        assert isinstance(m.event, str) and m.event
    assert m.sequence is None or (type(m.sequence) is int and m.sequence >= 0)


@FUZZ
@given(twilio_messages())
def test_twilio_valid(msg):
    m = twilio.parse_message(dumps(msg), MAX_TEXT)
    check_twilio(m)
    if msg["event"] == "media":
        assert m.payload == base64.b64decode(msg["media"]["payload"])
    size_limit_holds(twilio.parse_message, dumps(msg))


@FUZZ
@given(inputs(twilio_messages()))
def test_twilio_fuzz(text):
    m = expect(twilio.parse_message, text, MAX_TEXT)
    if m is not None:
        check_twilio(m)


# --------------------------------------------------------------------------- Telnyx

@st.composite
def telnyx_messages(draw):
    kind = draw(st.sampled_from(["start", "media", "stop", "connected", "dtmf", "error"]))
    msg = {"event": kind, "sequence_number": str(draw(st.integers(1, 10 ** 6))),
           "stream_id": draw(ids)}
    if kind == "start":
        msg["start"] = {"call_control_id": draw(ids), "call_session_id": draw(ids),
                        "user_id": draw(ids), "from": "+15551234567", "to": "+15557654321",
                        "client_state": draw(st.text(max_size=10)),
                        "custom_parameters": draw(st.dictionaries(ids, st.text(max_size=6),
                                                                  max_size=2)),
                        "media_format": {"encoding": draw(st.sampled_from(["PCMU", "PCMA",
                                                                           "L16"])),
                                         "sample_rate": draw(st.sampled_from(
                                             [8000, 16000, "8000"])), "channels": 1}}
    elif kind == "media":
        msg["media"] = {"track": draw(st.sampled_from(telnyx.TRACKS)),
                        "chunk": str(draw(st.integers(1, 999))), "timestamp": "20",
                        "payload": base64.b64encode(draw(payloads)).decode()}
    elif kind == "error":
        msg["payload"] = {"code": 100003, "title": "malformed_frame"}
    return msg


def check_telnyx(m):
    if isinstance(m, telnyx.TelnyxStart):
        assert m.encoding in ("mulaw", "alaw", "l16")
        assert type(m.sample_rate) is int and isinstance(m.custom, dict)
        assert m.call_control_id and m.stream_id
    elif isinstance(m, telnyx.TelnyxMedia):
        assert m.track in telnyx.TRACKS and isinstance(m.payload, bytes)
        assert m.chunk is None or (type(m.chunk) is int and m.chunk >= 0)
    else:
        assert m.detail is None or len(m.detail) <= 300


@FUZZ
@given(telnyx_messages())
def test_telnyx_valid(msg):
    m = telnyx.parse_message(dumps(msg), MAX_TEXT)
    check_telnyx(m)
    if msg["event"] == "start":
        assert m.sample_rate == int(msg["start"]["media_format"]["sample_rate"])
    size_limit_holds(telnyx.parse_message, dumps(msg))


@FUZZ
@given(inputs(telnyx_messages()))
@example(json.dumps({"event": "start", "start": {"call_control_id": "a", "stream_id": "b",
                                                 "media_format": {"sample_rate": "²"}}}))
@example(json.dumps({"event": "start", "start": {"call_control_id": "a", "stream_id": "b",
                                                 "media_format": {"sample_rate": "9" * 5000}}}))
def test_telnyx_fuzz(text):
    m = expect(telnyx.parse_message, text, MAX_TEXT)
    if m is not None:
        check_telnyx(m)


# --------------------------------------------------------------------------- Plivo

@st.composite
def plivo_messages(draw):
    kind = draw(st.sampled_from(["start", "media", "stop", "dtmf", "playedStream"]))
    msg = {"event": kind, "sequenceNumber": draw(st.integers(0, 10 ** 6))}
    if kind == "start":
        enc = draw(st.sampled_from(["audio/x-mulaw", "audio/x-l16", "audio/x-l16;rate=16000"]))
        fmt = {"encoding": enc}
        if draw(st.booleans()):
            fmt["sampleRate"] = draw(st.sampled_from([8000, 16000, "8000"]))
        msg["start"] = {"callId": draw(ids), "streamId": draw(ids), "accountId": draw(ids),
                        "tracks": ["inbound"], "mediaFormat": fmt}
        msg["extra_headers"] = draw(st.sampled_from(["", "a=1;token=abc", "x=y,z=w"])
                                    | st.dictionaries(ids, st.text(max_size=6), max_size=2))
    elif kind == "media":
        msg["streamId"] = draw(ids)
        msg["media"] = {"track": draw(st.sampled_from(plivo.TRACKS)), "chunk": 1,
                        "timestamp": "100", "payload": base64.b64encode(draw(payloads)).decode()}
    return msg


def check_plivo(m):
    if isinstance(m, plivo.PlivoStart):
        assert m.encoding in ("l16", "mulaw") and type(m.sample_rate) is int
        assert all(isinstance(k, str) and isinstance(v, str)
                   for k, v in m.extra_headers.items())
    elif isinstance(m, plivo.PlivoMedia):
        assert m.track in plivo.TRACKS and isinstance(m.payload, bytes)


@FUZZ
@given(plivo_messages())
def test_plivo_valid(msg):
    m = plivo.parse_message(dumps(msg), MAX_TEXT)
    check_plivo(m)
    size_limit_holds(plivo.parse_message, dumps(msg))


@FUZZ
@given(inputs(plivo_messages()))
@example(json.dumps({"event": "start", "start": {"callId": "a", "streamId": "b",
                                                 "mediaFormat": {"sampleRate": "²"}}}))
@example(json.dumps({"event": "start", "start": {"callId": "a", "streamId": "b", "mediaFormat": {
    "encoding": "audio/x-l16;rate=" + "9" * 5000}}}))
def test_plivo_fuzz(text):
    m = expect(plivo.parse_message, text, MAX_TEXT)
    if m is not None:
        check_plivo(m)


# --------------------------------------------------------------------------- Vonage

vonage_first = st.fixed_dictionaries(
    {"event": st.just("websocket:connected"),
     "content-type": st.sampled_from(["audio/l16;rate=16000", "audio/l16;rate=8000",
                                      " Audio/L16 ; rate = 24000 "])},
    optional={"uuid": uuids, "from": st.just("447700900000"), "token": ids,
              "conversation_uuid": ids, "custom": st.text(max_size=8)})


@FUZZ
@given(st.one_of(vonage_first.map(dumps), inputs(vonage_first)))
def test_vonage_fuzz(text):
    first = expect(vonage.parse_connected, text, MAX_TEXT)
    if first is not None:
        assert type(first.sample_rate) is int and 1000 <= first.sample_rate <= 999_999
        assert not set(first.headers) & vonage.RESERVED
    event = expect(vonage.parse_event, text, MAX_TEXT)
    assert event is None or (isinstance(event, str) and event)


@FUZZ
@given(vonage_first)
def test_vonage_valid(msg):
    first = vonage.parse_connected(dumps(msg), MAX_TEXT)
    assert first.sample_rate == int(re.search(r"rate\s*=\s*(\d+)", msg["content-type"])[1])
    size_limit_holds(vonage.parse_connected, dumps(msg))


# --------------------------------------------------------------------------- FreeSWITCH, jambonz

fs_meta = st.fixed_dictionaries(
    {}, optional={"callId": uuids, "callSid": uuids, "mixType": st.sampled_from(MIX_TYPES),
                  "sampleRate": st.sampled_from([8000, 16000, "16000", "8k", "16k"]),
                  "from": st.just("+15551234567"), "to": st.just("1000"), "x": json_values})


def check_stream_info(info):
    assert info.mix_type in MIX_TYPES
    assert type(info.sample_rate) is int
    assert info.call_id is None or isinstance(info.call_id, str)
    assert isinstance(info.custom, dict)


@FUZZ
@given(st.one_of(fs_meta.map(dumps), inputs(fs_meta)), st.sampled_from([False, True]))
@example(json.dumps({"sampleRate": "²k"}), False)
@example("abc\n", False)
def test_freeswitch_and_jambonz_metadata(text, jambonz):
    gw = JambonzGateway if jambonz else FreeSwitchGateway
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")  # websockets hands text frames over as str
    info = expect(parse_metadata, text, MAX_TEXT, mix_type="mono", sample_rate=8000,
                  call_id_keys=gw.call_id_keys, json_only=gw.json_only)
    if info is not None:
        check_stream_info(info)
        if not text.strip().startswith("{"):
            assert not jambonz
            assert len(text.encode()) <= MAX_TEXT
            if info.call_id is not None:  # a plain-text call id must be a valid one
                assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@+/=-]{0,127}", info.call_id)


@FUZZ
@given(st.text(max_size=8) | json_values)
@example("²k")
@example("١٦k")
def test_parse_rate(value):
    rate = expect(parse_rate, value)
    assert rate is None or type(rate) is int


@FUZZ
@given(st.text(min_size=1, max_size=40), st.sampled_from(["é", "€", "x"]))
def test_freeswitch_plain_text_size_limit(word, pad):
    text = "x" + word.replace("{", "") + pad * MAX_TEXT
    info = expect(parse_metadata, text, MAX_TEXT, mix_type="mono", sample_rate=8000,
                  call_id_keys=FreeSwitchGateway.call_id_keys)
    assert info is None


# --------------------------------------------------------------------------- ACS

participants = st.sampled_from(["4:+14255550123", "8:acs:3d20e1de-0f28", "28:bot", ""]) | ids


@st.composite
def acs_messages(draw):
    kind = draw(st.sampled_from(["AudioMetadata", "AudioData", "DtmfData",
                                 "TranscriptionData"]))
    msg = {"kind": kind}
    if kind == "AudioMetadata":
        msg["audioMetadata"] = {"subscriptionId": draw(uuids),
                                "encoding": draw(st.sampled_from(["PCM", "pcm"])),
                                "sampleRate": draw(st.sampled_from([16000, 24000])),
                                "channels": draw(st.sampled_from([1, "mono"])), "length": 640}
    elif kind == "AudioData":
        msg["audioData"] = {"timestamp": "2024-11-15T19:16:12.925Z",
                            "participantRawID": draw(participants),
                            "data": base64.b64encode(draw(payloads)).decode(),
                            "silent": draw(st.booleans())}
    else:
        msg[kind[0].lower() + kind[1:]] = {"data": draw(st.text(max_size=6))}
    return msg


def check_acs(m):
    if isinstance(m, acs.AcsAudioMetadata):
        assert type(m.sample_rate) is int
        assert m.subscription_id is None or isinstance(m.subscription_id, str)
    elif isinstance(m, acs.AcsAudio):
        assert isinstance(m.payload, bytes) and isinstance(m.silent, bool)
        assert m.participant is None or (isinstance(m.participant, str) and m.participant
                                         and len(m.participant) <= acs.MAX_PARTICIPANT_ID)
    else:
        assert isinstance(m.kind, str) and 0 < len(m.kind) <= 40


@FUZZ
@given(acs_messages())
def test_acs_valid(msg):
    m = acs.parse_message(dumps(msg), MAX_TEXT)
    check_acs(m)
    if msg["kind"] == "AudioData":
        assert m.payload == base64.b64decode(msg["audioData"]["data"])
        assert m.participant == (msg["audioData"]["participantRawID"] or None)
    size_limit_holds(acs.parse_message, dumps(msg))


@FUZZ
@given(inputs(acs_messages()))
def test_acs_fuzz(text):
    m = expect(acs.parse_message, text, MAX_TEXT)
    if m is not None:
        check_acs(m)


# --------------------------------------------------------------------------- Exotel

@st.composite
def exotel_messages(draw):
    sid = draw(ids)
    kind = draw(st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop"]))
    msg = {"event": kind, "sequence_number": draw(st.integers(1, 10 ** 6).map(str)),
           "stream_sid": sid}
    if kind == "start":
        msg["start"] = {"stream_sid": sid, "call_sid": draw(ids), "account_sid": draw(ids),
                        "from": "09876543210", "to": "08012345678",
                        "custom_parameters": draw(st.dictionaries(ids, st.text(max_size=6),
                                                                  max_size=3)),
                        "media_format": draw(st.sampled_from([
                            {"encoding": "base64", "sample_rate": "8000",
                             "bit_rate": "128kbps"},
                            {"encoding": "base64", "sample_rate": 16000},
                            {"encoding": "audio/x-mulaw;rate=8000"},
                            {"encoding": "audio/L16;rate=24000"}]))}
    elif kind == "media":
        msg["media"] = {"chunk": draw(st.integers(1, 999)), "timestamp": "100",
                        "payload": base64.b64encode(draw(payloads)).decode(),
                        "track": draw(st.sampled_from(exotel.TRACKS))}
    return msg


def check_exotel(m):
    if isinstance(m, exotel.ExotelStart):
        assert m.call_sid and m.stream_sid and isinstance(m.custom, dict)
        assert m.encoding in ("pcm_s16le", "mulaw")
        assert m.sample_rate is None or m.sample_rate in exotel.RATES
    elif isinstance(m, exotel.ExotelMedia):
        assert m.track in exotel.TRACKS and isinstance(m.payload, bytes)
    else:
        assert isinstance(m.event, str) and 0 < len(m.event) <= 40
    assert m.sequence is None or (type(m.sequence) is int and m.sequence >= 0)


@FUZZ
@given(exotel_messages())
def test_exotel_valid(msg):
    m = exotel.parse_message(dumps(msg), MAX_TEXT)
    check_exotel(m)
    if msg["event"] == "media":
        assert m.payload == base64.b64decode(msg["media"]["payload"])
    size_limit_holds(exotel.parse_message, dumps(msg))


@FUZZ
@given(inputs(exotel_messages()))
def test_exotel_fuzz(text):
    m = expect(exotel.parse_message, text, MAX_TEXT)
    if m is not None:
        check_exotel(m)
