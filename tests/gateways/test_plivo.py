"""Plivo audio streams gateway: documented messages over loopback, token auth, L16 byte order."""

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
from nes2net_gateways.plivo import parse_extra_headers, parse_message

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/plivo"
TOKEN = "PlivoStreamToken0123456789"
CALL = "12345678-1234-1234-1234-123456789abc"
STREAM = "87654321-4321-4321-4321-cba987654321"


def conversation(payloads, *, outbound=None, encoding="audio/x-l16", rate=8000,
                 extra_headers="userId=12345;sessionId=abc", call=CALL, stream=STREAM,
                 stop=False):
    """start then media as in Plivo's protocol reference; Plivo ends a stream by closing."""
    tracks = ["inbound", "outbound"] if outbound else ["inbound"]
    msgs = [{"event": "start", "sequenceNumber": 1,
             "start": {"callId": call, "streamId": stream, "accountId": "MAXXXXXXXXXXXXXXXXXX",
                       "tracks": tracks,
                       "mediaFormat": {"encoding": encoding, "sampleRate": rate}},
             "extra_headers": extra_headers}]
    seq = 1
    for i, p in enumerate(payloads):
        for track, payload in [("inbound", p)] + ([("outbound", outbound[i])] if outbound else []):
            seq += 1
            msgs.append({"event": "media", "sequenceNumber": seq, "streamId": stream,
                         "media": {"track": track, "timestamp": str(1705312200000 + 20 * i),
                                   "chunk": i + 1, "payload": payload},
                         "extra_headers": extra_headers})
    msgs.append({"event": "dtmf", "sequenceNumber": seq + 1, "streamId": stream,
                 "dtmf": {"track": "inbound", "digit": "5"}})
    if stop:
        msgs.append({"event": "stop", "sequenceNumber": seq + 2, "streamId": stream})
    return [json.dumps(m) for m in msgs]


def l16_frames(x, rate, byteorder="<"):
    return [base64.b64encode(c).decode() for c in chunks(pcm16(x, byteorder), rate // 25)]


async def service(make_service, **section):
    return await make_service(gateways={"plivo": {"enabled": True, "path": PATH, **section}})


async def test_documented_l16_stream_ending_with_close(make_service, redis_client):
    svc = await service(make_service, token=TOKEN)
    x = speech(6.0, 8000, seed=1)
    msgs = conversation(l16_frames(x, 8000),
                        extra_headers=f"userId=12345;sessionId=abc;token={TOKEN}")
    _, code, _ = await play(ws_url(svc, PATH), msgs, close=True)
    (s,) = await summaries(redis_client, f"{CALL}:{STREAM}")
    assert s["summary"]["end_reason"] == "stop" and s["channel"] == "caller"
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
    assert s["source"]["gateway"] == "plivo"
    # the token is never published
    assert s["metadata"] == {"provider": "plivo", "provider_call_id": CALL,
                             "provider_stream_id": STREAM, "account_id": "MAXXXXXXXXXXXXXXXXXX",
                             "custom": {"userId": "12345", "sessionId": "abc"}}
    assert TOKEN not in json.dumps(alerts(redis_client))
    # little-endian by default: the same windows as the same audio sent as pcm_s16le
    ref = await reference_scores(svc, x, 8000)
    got = await window_scores(redis_client, f"{CALL}:{STREAM}")
    assert got == pytest.approx(ref, abs=1e-4)


async def test_mulaw_both_tracks_and_stop_message(make_service, redis_client):
    svc = await service(make_service, score_agent=True, stream_in_call_id=False)
    msgs = conversation(mulaw_b64_frames(5.0, seed=2), outbound=mulaw_b64_frames(5.0, seed=3),
                        encoding="audio/x-mulaw", extra_headers="", stop=True)
    _, code, _ = await play(ws_url(svc, PATH), msgs)
    assert code == 1000
    found = await summaries(redis_client, CALL, n=2)
    assert {d["channel"] for d in found} == {"caller", "agent"}
    assert all(d["summary"]["duration_s"] == pytest.approx(5.0, abs=0.05) for d in found)
    assert all("custom" not in d["metadata"] for d in found)


async def test_big_endian_setting(make_service, redis_client):
    svc = await service(make_service, l16_byte_order="be")
    x = speech(5.0, 16000, seed=4)
    await play(ws_url(svc, PATH), conversation(l16_frames(x, 16000, ">"), rate=16000,
                                               call="be-call"), close=True)
    await summaries(redis_client, f"be-call:{STREAM}")
    ref = await reference_scores(svc, x, 16000)
    assert len(ref) >= 1
    got = await window_scores(redis_client, f"be-call:{STREAM}")
    assert got == pytest.approx(ref, abs=1e-4)


async def test_token_in_query_or_extra_headers(make_service, redis_client):
    svc = await service(make_service, token=TOKEN)
    frames = l16_frames(speech(2.0, 8000), 8000)
    assert await handshake_status(ws_url(svc, PATH, "token=wrong")) == 401
    # valid token in the query: nothing needed in extraHeaders
    await play(ws_url(svc, PATH, f"token={TOKEN}"), conversation(frames, call="q"), close=True)
    assert await summaries(redis_client, f"q:{STREAM}")
    # missing or wrong token in extraHeaders: closed 4401 before any audio, no call
    for i, extra in enumerate(["userId=1", "token=wrong1234567890", "token="]):
        _, code, reason = await play(ws_url(svc, PATH), conversation(frames, call=f"x{i}",
                                                                     extra_headers=extra))
        assert (code, reason) == (4401, "unauthorized")
    await asyncio.sleep(0.3)
    assert not [d for d in alerts(redis_client) if d["call_id"].startswith("x")]
    with pytest.raises(ConfigError, match="gateways.plivo.token"):
        await service(make_service, auth="required")


@pytest.mark.parametrize("case,close", [
    ("format", 4415), ("media_first", 4400), ("binary", 4400), ("odd_l16", 4400),
    ("other_stream", 4400), ("bad_json", 4400), ("no_call", 4400), ("huge", 4413),
])
async def test_bad_input(make_service, case, close):
    svc = await service(make_service)
    msgs = conversation(l16_frames(speech(0.5, 8000), 8000))
    media = json.loads(msgs[1])
    start = json.loads(msgs[0])
    bad = {
        "format": [msgs[0].replace("audio/x-l16", "audio/x-opus")],
        "media_first": [msgs[1]],
        "binary": [msgs[0], b"\x00" * 320],
        "odd_l16": [msgs[0], json.dumps({**media, "media": {
            **media["media"], "payload": base64.b64encode(b"\x00" * 3).decode()}})],
        "other_stream": [msgs[0], json.dumps({**media, "streamId": "other"})],
        "bad_json": [msgs[0], "{]"],
        "no_call": [json.dumps({**start, "start": {"streamId": STREAM}})],
        "huge": [msgs[0], json.dumps({"event": "x", "pad": "y" * 20_000})],
    }[case]
    _, code, reason = await play(ws_url(svc, PATH), bad)
    assert code == close and reason


def test_extra_headers_forms():
    assert parse_extra_headers("test1=12,test2=123") == {"test1": "12", "test2": "123"}
    assert parse_extra_headers("userId=12345;sessionId=abc-xyz") == {
        "userId": "12345", "sessionId": "abc-xyz"}
    assert parse_extra_headers({"a": 1}) == {"a": "1"}
    assert parse_extra_headers("novalue;=x") == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=8)
messages = st.fixed_dictionaries(
    {"event": st.sampled_from(["start", "media", "stop", "dtmf", "playedStream", None])},
    optional={"sequenceNumber": json_values, "streamId": json_values,
              "extra_headers": json_values,
              "start": st.fixed_dictionaries({}, optional={
                  "callId": json_values, "streamId": json_values,
                  "mediaFormat": st.fixed_dictionaries({}, optional={
                      "encoding": st.sampled_from(["audio/x-l16", "audio/x-mulaw",
                                                   "audio/x-l16;rate=16000", "x", 2]),
                      "sampleRate": json_values})}),
              "media": st.fixed_dictionaries({}, optional={
                  "track": st.sampled_from(["inbound", "outbound", 0]),
                  "payload": st.text(max_size=12)})})


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(messages.map(json.dumps), st.text(max_size=40), st.binary(max_size=40)))
def test_parser_fuzz_raises_only_protocol_errors(text):
    try:
        parse_message(text, 4096)
    except ProtocolError as err:
        assert err.code in ("bad_json", "bad_message", "unsupported_format", "frame_too_large")
