"""Fuzzing the SIP-side gateways' parsers: Asterisk, Genesys AudioHook (and its signatures)
and AudioSocket TCP frames; and nasty JSON against every parser.

The property is that of ``test_fuzz_gateways_streams.py``: a well-formed result or a documented
``ProtocolError``, never another exception or a hang, and the size limits hold.
"""

from __future__ import annotations

import re
import time
import uuid

from fuzzing import FUZZ, call, corrupted, dumps, mutated
from gateway_fuzzing import (
    NASTY_JSON,
    PARSE_CODES,
    UUID_FULL,
    expect,
    ids,
    inputs,
    uuids,
)
from hypothesis import example, given
from hypothesis import strategies as st
from nes2net_gateways import plivo, sinch, telnyx, twilio, vonage
from nes2net_gateways.asterisk_rtp import parse_registration
from nes2net_gateways.asterisk_rtp_call import FORMATS as RTP_FORMATS
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
from nes2net_gateways.freeswitch import parse_metadata
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
from nes2net_gateways.structured_fields import (
    InnerList,
    StructuredFieldError,
    parse_dictionary,
    serialize_inner_list,
    serialize_item,
)

from nes2net_stream.service.errors import ProtocolError

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
                  vonage.parse_connected, vonage.parse_event, sinch.parse_connect,
                  sinch.parse_control):
        expect(parse, text, 1 << 20)
    expect(parse_client_message, text)
    if isinstance(text, str):
        expect(parse_control, text)
        expect(parse_metadata, text, 1 << 20, mix_type="mono", sample_rate=8000,
               call_id_keys=("callId",))


def rtp_registrations():
    """``POST /calls`` bodies of the Asterisk External Media gateway."""
    return st.fixed_dictionaries(
        {"call_id": ids},
        optional={"format": st.sampled_from([*RTP_FORMATS, "g729", "", "SLIN16"]) | st.integers(),
                  "channel_id": ids, "ani": st.from_regex(r"\+?[0-9]{3,15}", fullmatch=True),
                  "dnis": st.integers(0, 10 ** 12),
                  "custom": st.dictionaries(ids, st.text(max_size=20), max_size=4)})


@FUZZ
@given(inputs(rtp_registrations()) | st.sampled_from(NASTY_JSON))
def test_asterisk_rtp_registration(body):
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    reg = expect(parse_registration, raw, 16_384, "ulaw")
    if reg is not None:
        assert reg.format is RTP_FORMATS[reg.format.name]
        assert re.fullmatch(r"[A-Za-z0-9._:@+/=-]{1,128}", reg.call_id)
        assert isinstance(reg.custom, dict)
        assert reg.channel_id is None or isinstance(reg.channel_id, str)
