"""SignalWire cXML streams gateway: documented messages over loopback, codecs, bearer token."""

import asyncio
import base64
import json

import pytest
from gwsupport import (
    FUZZ_EXAMPLES,
    alerts,
    chunks,
    handshake_status,
    mulaw_b64_frames,
    pcm16,
    play,
    reference_scores,
    speech,
    summaries,
    window_scores,
    ws_url,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nes2net_gateways.signalwire import parse_message
from nes2net_gateways.twilio import TwilioMedia, TwilioStart

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/signalwire"
TOKEN = "signalwire-stream-token-0123456789"
CALL = "76ac3c36-56da-4a3e-a0d6-b5f8df6da9ad"
STREAM = "7d56cc11-536d-4a45-b4fb-ed3d55be843b"
ACCOUNT = "b08dacad-2f6c-4de1-93d6-cc732e0c69c5"
MULAW = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}


def l16_frames(x, rate, byteorder="<"):
    """20 ms L16 frames, base64 (codec L16@16000h / L16@24000h)."""
    return [base64.b64encode(c).decode() for c in chunks(pcm16(x, byteorder), rate // 25)]


def conversation(inbound, *, outbound=None, media_format=MULAW, call=CALL, stream=STREAM,
                 custom=None, wrapped=False, stop=True):
    """connected, start, media per track, stop: the layout of SignalWire's <Stream> reference.

    ``wrapped`` puts each message in the ``eventType``/``rawEvent`` envelope that one revision
    of the reference shows.
    """
    tracks = ["inbound", "outbound"] if outbound else ["inbound"]
    start = {"streamSid": stream, "accountSid": ACCOUNT, "callSid": call, "tracks": tracks,
             "customParameters": custom or {}}
    if media_format is not None:
        start["mediaFormat"] = media_format
    msgs = [{"event": "connected", "protocol": "Call", "version": "0.2.0"},
            {"event": "start", "sequenceNumber": "1", "start": start}]
    seq = 1
    for i, payload in enumerate(inbound):
        pairs = [("inbound", payload)] + ([("outbound", outbound[i])] if outbound else [])
        for track, p in pairs:
            seq += 1
            msgs.append({"event": "media", "sequenceNumber": str(seq),
                         "media": {"track": track, "chunk": str(i + 1),
                                   "timestamp": str(20 * i), "payload": p}})
    msgs.append({"event": "dtmf", "sequenceNumber": str(seq + 1), "streamSid": stream,
                 "dtmf": {"digit": "5", "duration": 2000}})
    if stop:
        msgs.append({"event": "stop", "sequenceNumber": str(seq + 2)})
    if wrapped:
        msgs = [{"timestamp": "2025-09-26T16:25:04.792Z", "direction": "inbound",
                 "eventType": m["event"], "streamSid": stream, "rawEvent": m} for m in msgs]
    return [json.dumps(m) for m in msgs]


async def service(make_service, **section):
    return await make_service(gateways={"signalwire": {"enabled": True, "path": PATH,
                                                       **section}})


def bearer(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


async def test_mulaw_both_tracks_with_bearer_token(make_service, redis_client):
    svc = await service(make_service, bearer_token=TOKEN, score_agent=True)
    msgs = conversation(mulaw_b64_frames(6.0, seed=1), outbound=mulaw_b64_frames(6.0, seed=2),
                        custom={"FirstName": "Jane"})
    _, code, _ = await play(ws_url(svc, PATH), msgs, headers=bearer())
    assert code == 1000
    found = await summaries(redis_client, f"{CALL}:{STREAM}", n=2)
    assert {d["channel"] for d in found} == {"caller", "agent"}
    for d in found:
        assert d["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
        assert d["summary"]["end_reason"] == "stop" and d["summary"]["windows_scored"] >= 1
        assert d["source"]["gateway"] == "signalwire"
        assert d["metadata"] == {"provider": "signalwire", "provider_call_id": CALL,
                                 "provider_stream_id": STREAM, "account_id": ACCOUNT,
                                 "custom": {"FirstName": "Jane"}}
    assert TOKEN not in json.dumps(alerts(redis_client))


@pytest.mark.parametrize("rate", [16000, 24000])
async def test_l16_codecs_score_like_the_same_audio(make_service, redis_client, rate):
    svc = await service(make_service)
    x = speech(5.0, rate, seed=3)
    call = f"l16-{rate}"
    fmt = {"encoding": "audio/x-L16", "sampleRate": rate, "channels": 1}
    await play(ws_url(svc, PATH), conversation(l16_frames(x, rate), media_format=fmt,
                                               call=call))
    (s,) = await summaries(redis_client, f"{call}:{STREAM}")
    assert s["summary"]["duration_s"] == pytest.approx(5.0, abs=0.05)
    assert s["summary"]["windows_scored"] >= 1
    if rate == 16000:  # the generic protocol takes 8, 16 or 48 kHz: compare where it can
        ref = await reference_scores(svc, x, rate)
        got = await window_scores(redis_client, f"{call}:{STREAM}")
        assert len(ref) >= 1 and got == pytest.approx(ref, abs=1e-4)


async def test_big_endian_setting_and_wrapped_messages(make_service, redis_client):
    svc = await service(make_service, l16_byte_order="be", stream_in_call_id=False)
    x = speech(5.0, 16000, seed=4)
    fmt = {"encoding": "audio/x-L16", "sampleRate": 16000, "channels": 1}
    _, code, _ = await play(ws_url(svc, PATH), conversation(
        l16_frames(x, 16000, ">"), media_format=fmt, call="wrapped", wrapped=True))
    assert code == 1000
    ref = await reference_scores(svc, x, 16000)
    got = await window_scores(redis_client, "wrapped")
    assert got == pytest.approx(ref, abs=1e-4)


async def test_default_codec_and_close_without_stop(make_service, redis_client):
    svc = await service(make_service)
    _, code, _ = await play(ws_url(svc, PATH), conversation(
        mulaw_b64_frames(4.0), media_format=None, call="nofmt", stop=False), close=True)
    (s,) = await summaries(redis_client, f"nofmt:{STREAM}")
    assert s["summary"]["end_reason"] == "disconnect"
    assert s["summary"]["duration_s"] == pytest.approx(4.0, abs=0.05)


async def test_bearer_token_missing_wrong_and_rotated(make_service, redis_client):
    svc = await service(make_service, bearer_token=TOKEN, secondary_bearer_token="old-" + TOKEN)
    url = ws_url(svc, PATH)
    assert await handshake_status(url) == 401
    assert await handshake_status(url, bearer("wrong")) == 401
    assert await handshake_status(url, {"Authorization": f"Basic {TOKEN}"}) == 401
    assert await handshake_status(url, bearer()) == 101
    assert await handshake_status(url, bearer("old-" + TOKEN)) == 101
    await asyncio.sleep(0.2)
    assert not [d for d in alerts(redis_client) if d["source"]["gateway"] == "signalwire"]
    with pytest.raises(ConfigError, match="gateways.signalwire.bearer_token"):
        await service(make_service, auth="required")


@pytest.mark.parametrize("case,close", [
    ("format", 4415), ("opus", 4415), ("stereo", 4415), ("media_first", 4400),
    ("binary", 4400), ("odd_l16", 4400), ("bad_json", 4400), ("no_call", 4400),
    ("huge", 4413),
])
async def test_bad_input_closes_that_call_only(make_service, redis_client, case, close):
    svc = await service(make_service)
    good = asyncio.create_task(play(ws_url(svc, PATH), conversation(
        mulaw_b64_frames(4.0), call="good")))
    fmt = {"encoding": "audio/x-L16", "sampleRate": 16000, "channels": 1}
    msgs = conversation(l16_frames(speech(0.5, 16000), 16000), media_format=fmt, call="bad")
    start, media = json.loads(msgs[1]), json.loads(msgs[2])

    def with_format(**f):
        return json.dumps({**start, "start": {**start["start"], "mediaFormat": {**fmt, **f}}})

    bad = {
        "format": [msgs[0], with_format(sampleRate=8000)],  # L16 comes at 16 or 24 kHz only
        "opus": [msgs[0], with_format(encoding="audio/opus")],
        "stereo": [msgs[0], with_format(channels=2)],
        "media_first": [msgs[0], msgs[2]],
        "binary": [msgs[0], msgs[1], b"\x00" * 320],
        "odd_l16": [msgs[0], msgs[1], json.dumps({**media, "media": {
            **media["media"], "payload": base64.b64encode(b"\x00" * 3).decode()}})],
        "bad_json": [msgs[0], msgs[1], "{]"],
        "no_call": [json.dumps({**start, "start": {"streamSid": STREAM}})],
        "huge": [msgs[0], msgs[1], json.dumps({"event": "x", "pad": "y" * 20_000})],
    }[case]
    _, code, reason = await play(ws_url(svc, PATH), bad)
    assert code == close and reason
    _, good_code, _ = await good
    assert good_code == 1000
    (ok,) = await summaries(redis_client, f"good:{STREAM}")
    assert ok["summary"]["end_reason"] == "stop"


def test_parser_reads_both_layouts_alike():
    plain = conversation(mulaw_b64_frames(0.1), custom={"a": "1"})
    wrapped = conversation(mulaw_b64_frames(0.1), custom={"a": "1"}, wrapped=True)
    parsed = [parse_message(m, 4096) for m in plain]
    assert parsed == [parse_message(m, 4096) for m in wrapped]
    start, media = parsed[1], parsed[2]
    assert isinstance(start, TwilioStart) and start.encoding == "mulaw"
    assert (start.call_sid, start.stream_sid, start.custom) == (CALL, STREAM, {"a": "1"})
    assert isinstance(media, TwilioMedia) and media.track == "inbound" and media.payload
    fmt = {"encoding": "audio/x-L16", "sampleRate": "24000", "channels": 1}
    (l16,) = [parse_message(m, 4096) for m in conversation([], media_format=fmt)[1:2]]
    assert (l16.encoding, l16.sample_rate) == ("l16", 24000)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=8)
plain_messages = st.fixed_dictionaries(
    {"event": st.sampled_from(["start", "media", "stop", "dtmf", "mark", 3, None])},
    optional={"sequenceNumber": st.one_of(st.text(max_size=4), st.integers()),
              "start": st.fixed_dictionaries({}, optional={
                  "callSid": json_values, "streamSid": json_values, "tracks": json_values,
                  "mediaFormat": st.one_of(json_values, st.fixed_dictionaries({
                      "encoding": st.sampled_from(["audio/x-mulaw", "audio/x-L16", "x"]),
                      "sampleRate": st.sampled_from([8000, 16000, 24000, "16000", -1]),
                      "channels": st.sampled_from([1, 2, "1"])}))}),
              "media": st.fixed_dictionaries({}, optional={
                  "track": st.sampled_from(["inbound", "outbound", "both", 1]),
                  "chunk": json_values, "payload": st.text(max_size=12)})})
messages = st.one_of(plain_messages, plain_messages.map(
    lambda m: {"eventType": "x", "rawEvent": m}), st.fixed_dictionaries({"rawEvent": json_values}))


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(messages.map(json.dumps), st.text(max_size=40), st.binary(max_size=40)))
def test_parser_fuzz_raises_only_protocol_errors(text):
    try:
        m = parse_message(text, 4096)
    except ProtocolError as err:
        assert err.code in ("bad_json", "bad_message", "unsupported_format", "frame_too_large")
    else:
        if isinstance(m, TwilioStart):
            assert (m.encoding, m.sample_rate) in (("mulaw", 8000), ("l16", 16000),
                                                  ("l16", 24000))
