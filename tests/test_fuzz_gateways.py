"""Fuzzing every gateway plugin's parser of provider messages (and AudioSocket TCP frames).

Property: valid provider messages parse to the expected result; mutated, corrupted or random
ones either parse to a well-formed result or raise ProtocolError (which the gateway turns into
its error reply and close code), never another exception, never a hang; size limits hold.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid

from fuzzing import FUZZ, call, corrupted, deep_json, dumps, json_values, mutated
from hypothesis import example, given
from hypothesis import strategies as st
from nes2net_gateways import plivo, telnyx, twilio, vonage
from nes2net_gateways.asterisk_ws import FORMATS, MediaStart, parse_control, parse_media_start
from nes2net_gateways.audiosocket import (
    AUDIO_RATES,
    HEADER,
    KIND_DTMF,
    KIND_HANGUP,
    KIND_UUID,
    FrameDecoder,
    StreamState,
)
from nes2net_gateways.freeswitch import MIX_TYPES, FreeSwitchGateway, parse_metadata, parse_rate
from nes2net_gateways.genesys import _seconds
from nes2net_gateways.genesys_protocol import (
    CLIENT_TYPES,
    AudioHookSession,
    Media,
    audio_frames,
    check_parameters,
    choose_media,
    parse_client_message,
    parse_open,
)
from nes2net_gateways.genesys_signature import RequestView, build_signature, verify_signature
from nes2net_gateways.jambonz import JambonzGateway
from nes2net_gateways.structured_fields import (
    InnerList,
    StructuredFieldError,
    parse_dictionary,
    serialize_inner_list,
    serialize_item,
)

from nes2net_stream.service.errors import ERROR_CODES, ProtocolError

MAX_TEXT = 4096
PARSE_CODES = {"bad_json", "bad_message", "unsupported_format", "frame_too_large",
               "unknown_message", "audio_before_start", "bad_audio_frame"}
UUID_FULL = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}" \
            r"-[0-9a-fA-F]{12}|0{8}-0{4}-0{4}-0{4}-0{12}"

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}", fullmatch=True)
payloads = st.binary(max_size=320)
uuids = st.uuids(version=4).map(str)


def expect(fn, *args, codes=PARSE_CODES, **kwargs):
    """Run a parser: its result, or None after checking the ProtocolError is documented."""
    try:
        return call(fn, *args, **kwargs)
    except ProtocolError as err:
        assert err.code in codes, err.code
        assert err.close_code == ERROR_CODES[err.code][0]
        return None


def inputs(valid):
    """Valid messages, mutated ones, corrupted bytes of valid ones, random text and bytes."""
    return st.one_of(
        valid.map(dumps),
        valid.flatmap(mutated).map(dumps),
        valid.map(lambda m: dumps(m).encode()).flatmap(corrupted),
        json_values.map(dumps), st.text(max_size=120), st.binary(max_size=120))


NASTY_JSON = ["1" * 5000, deep_json(5000), deep_json(3000, "{"), '{"event": "\ud800"}',
              "\ufeff{}", b"\xff{}", "{" + " " * 5000 + "}"]


def size_limit_holds(parse, valid_text: str) -> None:
    """Padding a valid message beyond the limit gets frame_too_large, counted in bytes."""
    padded = valid_text[:-1] + ', "pad": "' + "é" * (MAX_TEXT // 2) + '"}'
    for form in (padded, padded.encode()):
        try:
            parse(form, MAX_TEXT)
        except ProtocolError as err:
            assert err.code == "frame_too_large"
        else:
            raise AssertionError("oversized message accepted")


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


# ------------------------------------------------------------------ Asterisk chan_websocket

@st.composite
def asterisk_starts(draw):
    fields = {"connection_id": draw(ids), "channel": "WebSocket/media_connection1-00000001",
              "channel_id": draw(ids), "format": draw(st.sampled_from(sorted(FORMATS))),
              "optimal_frame_size": draw(st.integers(0, 4000)), "ptime": 20}
    if draw(st.booleans()):
        return "MEDIA_START " + " ".join(f"{k}:{v}" for k, v in fields.items())
    fields["channel_variables"] = draw(st.dictionaries(ids, st.text(max_size=6), max_size=3))
    return {"event": "MEDIA_START", **fields}


def check_media_start(ms: MediaStart):
    assert (ms.encoding, ms.sample_rate) == FORMATS[ms.format]
    assert ms.call_id and isinstance(ms.call_id, str)
    for v in (ms.optimal_frame_size, ms.ptime):
        assert v is None or (type(v) is int and 0 <= v <= 1_000_000)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in ms.variables.items())


@FUZZ
@given(st.one_of(
    asterisk_starts().map(lambda s: s if isinstance(s, str) else dumps(s)),
    asterisk_starts().filter(lambda s: isinstance(s, dict)).flatmap(mutated).map(dumps),
    asterisk_starts().map(lambda s: (s if isinstance(s, str) else dumps(s)).encode())
    .flatmap(corrupted).map(lambda b: b.decode("utf-8", "replace")),
    st.text(max_size=120), st.sampled_from([t for t in NASTY_JSON if isinstance(t, str)])))
@example('{"event": "MEDIA_START\\n", "connection_id": "a", "format": "ulaw", "ptime": 20}')
@example('{"event": "MEDIA_START", "connection_id": "a", "format": "ulaw", "ptime": Infinity}')
@example('{"event": "MEDIA_START", "connection_id": "a", "format": "ulaw", "ptime": NaN}')
@example('{"event": "MEDIA_START", "connection_id": "a", "format": "ulaw", "ptime": 1e400}')
def test_asterisk_control(text):
    ctrl = expect(parse_control, text)
    if ctrl is None:
        return
    assert re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", ctrl.event) and isinstance(ctrl.fields, dict)
    ms = expect(parse_media_start, ctrl)
    if ms is not None:
        check_media_start(ms)


# --------------------------------------------------------------------------- Genesys AudioHook

def genesys_message(kind, seq, params, session):
    return {"version": "2", "id": session, "type": kind, "seq": seq, "serverseq": 0,
            "position": "PT1.5S", "parameters": params}


@st.composite
def genesys_messages(draw):
    session = draw(uuids)
    kind = draw(st.sampled_from(CLIENT_TYPES))
    params = {
        "open": lambda: {
            "organizationId": draw(uuids), "conversationId": draw(uuids),
            "participant": {"id": draw(uuids), "ani": "+15551234567", "aniName": "J",
                            "dnis": "+18005550000"},
            "media": [{"type": "audio", "format": draw(st.sampled_from(["PCMU", "L16"])),
                       "channels": draw(st.sampled_from([["external"], ["external", "internal"],
                                                         ["internal"]])),
                       "rate": 8000}],
            "language": "en-US", "customConfig": {}, "continuedSessions": []},
        "close": lambda: {"reason": draw(st.sampled_from(["end", "error", "disconnect"]))},
        "ping": lambda: {"rtt": "PT0.05S"},
        "paused": dict, "update": lambda: {"language": "fr-FR"},
        "resumed": lambda: {"start": "PT1S", "discarded": "PT0.5S"},
        "discarded": lambda: {"start": "PT1S", "discarded": "PT2S"},
        "error": lambda: {"code": 500, "message": "oops"},
    }[kind]()
    return genesys_message(kind, 1, params, session)


def genesys_pipeline(text):
    msg = expect(parse_client_message, text)
    if msg is None:
        return None
    assert msg.type in CLIENT_TYPES and re.fullmatch(UUID_FULL, msg.id)
    assert msg.position >= 0 and msg.position != float("inf")
    try:
        call(check_parameters, msg)
    except ProtocolError as err:
        assert err.code == "bad_message"
        return msg
    if msg.type in ("resumed", "discarded"):
        assert _seconds(msg.parameters["discarded"]) >= 0  # what the gateway then computes
    if msg.type == "open":
        req = expect(parse_open, msg.parameters, codes={"bad_message"})
        if req is not None:
            chosen = choose_media(req.media)
            assert chosen is None or chosen in req.media
            for media in req.media:
                assert media.format in ("PCMU", "L16") and 8000 <= media.rate <= 48000
                assert 1 <= len(media.channels) <= 2
    sess = AudioHookSession(msg.id)
    expect(sess.accept, msg, codes={"bad_message"})
    return msg


@FUZZ
@given(genesys_messages())
def test_genesys_valid(doc):
    msg = genesys_pipeline(dumps(doc))
    assert msg is not None and msg.type == doc["type"]
    check_parameters(msg)


@FUZZ
@given(inputs(genesys_messages()))
@example(dumps({"version": "2", "id": str(uuid.uuid4()), "type": "ping", "seq": 1,
                "serverseq": 0, "position": "PT1S\n", "parameters": {}}))
@example(dumps({"version": "2", "id": str(uuid.uuid4()) + "\n", "type": "ping", "seq": 1,
                "serverseq": 0, "position": "PT1S", "parameters": {}}))
@example(dumps({"version": "2", "id": str(uuid.uuid4()), "type": "discarded", "seq": 1,
                "serverseq": 0, "position": "PT1S",
                "parameters": {"start": "PT1S", "discarded": "PT2S\n"}}))
@example(dumps(genesys_message("open", 1, {
    "organizationId": str(uuid.uuid4()), "conversationId": str(uuid.uuid4()),
    "participant": {"id": str(uuid.uuid4())},
    "media": [{"type": "audio", "format": ["PCMU"], "channels": ["external"], "rate": 8000}]},
    str(uuid.uuid4()))))
def test_genesys_fuzz(text):
    genesys_pipeline(text)


@FUZZ
@given(st.sampled_from(["PCMU", "L16"]), st.sampled_from([("external",),
                                                          ("external", "internal")]),
       st.binary(max_size=64))
def test_genesys_audio_frames(fmt, channels, data):
    media = Media(fmt, channels, 8000)
    n = expect(audio_frames, data, media, codes={"bad_audio_frame"})
    if n is not None:
        assert n * media.frame_bytes == len(data) and n > 0


# --------------------------------------------------------------------------- Genesys signature

SIG_COMPONENTS = ["@request-target", "@authority", "audiohook-organization-id",
                  "audiohook-session-id", "audiohook-correlation-id", "x-api-key"]


def signed_view(org, session, nonce, created):
    fields = {"audiohook-organization-id": [org], "audiohook-session-id": [session],
              "audiohook-correlation-id": [org], "x-api-key": ["key-1"]}
    view = RequestView("GET", "/v1/gateways/genesys?x=1", "example.test", fields)
    sig = build_signature(view, SIG_COMPONENTS, keyid="key-1", key=b"secret", created=created,
                          nonce=nonce)
    return RequestView(view.method, view.target, view.authority,
                       {**fields, "signature-input": [sig["signature-input"]],
                        "signature": [sig["signature"]]})


def verify(view, now):
    result = call(verify_signature, view, api_key="key-1",
                  secret_for=lambda k: b"secret" if k == "key-1" else None,
                  required=tuple(SIG_COMPONENTS), max_age_s=10, clock_skew_s=3,
                  min_nonce_len=22, now=now)
    assert result.code in ("verified", "unsigned", "invalid", "precondition", "expired",
                           "unsupported", "failed")
    return result


@FUZZ
@given(uuids, uuids, st.from_regex(r"[A-Za-z0-9]{22,40}", fullmatch=True), st.data())
def test_genesys_signature_mutations(org, session, nonce, data):
    now = int(time.time())
    view = signed_view(org, session, nonce, now)
    assert verify(view, now).ok
    which = data.draw(st.sampled_from(["signature-input", "signature"]))
    original = view.field_values[which][0]
    bad = data.draw(corrupted(original.encode())).decode("utf-8", "replace")
    fields = {**view.field_values, which: [bad]}
    result = verify(RequestView(view.method, view.target, view.authority, fields), now)
    if result.ok:  # only an edit that leaves the parsed value the same may still verify
        assert parse_dictionary(bad) == parse_dictionary(original)


@FUZZ
@given(st.text(max_size=120) | st.from_regex(
    r'sig[0-9]=\((("[a-z@-]{1,12}" ?){0,4})\)(;[a-z]{1,6}=("[ -~]{0,8}"|[0-9]{1,16}|'
    r'[0-9]{1,13}\.[0-9]{1,4}|\?[01]|:[A-Za-z0-9+/=]{0,12}:|[a-z*][a-z0-9:/]{0,5}))*',
    fullmatch=True))
def test_structured_field_parser(text):
    try:
        parsed = call(parse_dictionary, text)
    except StructuredFieldError:
        return
    # what parses serialises canonically and parses back to the same value
    canonical = ", ".join(
        f"{k}=" + (serialize_inner_list(v) if isinstance(v, InnerList) else serialize_item(v))
        for k, v in parsed.items())
    assert parse_dictionary(canonical) == parsed


# --------------------------------------------------------------------------- AudioSocket (TCP)

def frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


@st.composite
def audiosocket_streams(draw):
    kind = draw(st.sampled_from(sorted(AUDIO_RATES)))
    out = [frame(KIND_UUID, uuid.UUID(draw(uuids)).bytes)]
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 5)) == 0:
            out.append(frame(KIND_DTMF, draw(st.sampled_from([b"1", b"#", b"\xff"]))))
        else:
            pcm = draw(st.binary(max_size=80))
            out.append(frame(kind, pcm[:len(pcm) // 2 * 2]))
    if draw(st.booleans()):
        out.append(frame(KIND_HANGUP, b""))
    return out


def run_decoder(data: bytes, cuts: list[int], max_payload: int):
    dec, state, events = FrameDecoder(max_payload), StreamState(), []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in zip(bounds, bounds[1:], strict=False):
        dec.push(data[a:b])
        for fr in dec.frames():
            assert len(fr.payload) <= max_payload
            events.append(state.on_frame(fr))
        assert dec.pending < HEADER + max_payload
    return events, dec.pending


@FUZZ
@given(audiosocket_streams(), st.lists(st.integers(0, 10 ** 6), max_size=8))
def test_audiosocket_valid_stream_any_split(frames, cuts):
    events, pending = run_decoder(b"".join(frames), cuts, 640)
    assert pending == 0 and len(events) == len(frames)
    assert events[0].type == "start"
    for ev in events:
        if ev.type == "audio":
            assert len(ev.data) % 2 == 0 and ev.rate in AUDIO_RATES.values()


@FUZZ
@given(st.one_of(audiosocket_streams().map(b"".join).flatmap(corrupted),
                 st.binary(max_size=300)),
       st.lists(st.integers(0, 10 ** 6), max_size=8), st.sampled_from([16, 320, 0xFFFF]))
def test_audiosocket_fuzz(data, cuts, max_payload):
    try:
        events, _ = run_decoder(data, cuts, max_payload)
    except ProtocolError as err:
        assert err.code in PARSE_CODES
        return
    for ev in events:
        assert ev.type in ("start", "audio", "dtmf", "hangup", "error")
        if ev.type == "start":
            assert uuid.UUID(ev.call_id)
        if ev.type == "audio":
            assert len(ev.data) % 2 == 0


@FUZZ
@given(st.integers(0, 255), st.integers(17, 0xFFFF))
def test_audiosocket_oversized_frame_refused_from_header(kind, length):
    dec = FrameDecoder(16)
    dec.push(bytes([kind]) + length.to_bytes(2, "big"))  # the header alone is enough
    try:
        list(dec.frames())
    except ProtocolError as err:
        assert err.code == "frame_too_large"
    else:
        raise AssertionError("oversized frame announced without error")


@FUZZ
@given(st.sampled_from([t for t in NASTY_JSON]))
def test_nasty_json_everywhere(text):
    for parse in (twilio.parse_message, telnyx.parse_message, plivo.parse_message,
                  vonage.parse_connected, vonage.parse_event):
        expect(parse, text, 1 << 20)
    expect(parse_client_message, text)
    if isinstance(text, str):
        expect(parse_control, text)
        expect(parse_metadata, text, 1 << 20, mix_type="mono", sample_rate=8000,
               call_id_keys=("callId",))
