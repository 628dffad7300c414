"""Vonage Voice WebSocket gateway: documented first message and L16 frames, token auth."""

import asyncio
import json

import pytest
from gwsupport import (
    FUZZ_EXAMPLES,
    alerts,
    chunks,
    handshake_status,
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
from nes2net_gateways.vonage import parse_connected, parse_event

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/vonage"
TOKEN = "vonage-shared-token-0123456789"
UUID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"


def connected(rate=16000, event=True, **headers):
    """The first message: the content type and the NCCO headers at the top level."""
    msg = {"event": "websocket:connected"} if event else {}
    msg["content-type"] = f"audio/l16;rate={rate}"
    return json.dumps({**msg, **headers})


def frames(x, rate):
    """20 ms binary frames (320 bytes at 8 kHz, 640 at 16 kHz), DTMF events interleaved."""
    out: list = chunks(pcm16(x), rate // 25)
    out.insert(10, json.dumps({"event": "websocket:dtmf", "digit": "5", "duration": 260}))
    return out


async def service(make_service, **section):
    return await make_service(gateways={"vonage": {"enabled": True, "path": PATH, **section}})


async def test_documented_16k_call_mixed_audio(make_service, redis_client):
    svc = await service(make_service, token=TOKEN)
    x = speech(6.0, 16000, seed=1)
    first = connected(16000, call_id=UUID, token=TOKEN, app="demo", **{"from": "447700900000",
                                                                       "to": "447700900001"})
    _, code, _ = await play(ws_url(svc, PATH), [first, *frames(x, 16000)], close=True)
    (s,) = await summaries(redis_client, UUID)
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
    assert s["source"]["gateway"] == "vonage"
    assert s["metadata"] == {"provider": "vonage", "provider_call_id": UUID,
                             "ani": "447700900000", "dnis": "447700900001", "mixed": True,
                             "custom": {"call_id": UUID, "app": "demo"}}
    assert TOKEN not in json.dumps(alerts(redis_client))
    # 16-bit signed little-endian: the same windows as the generic protocol's pcm_s16le
    ref = await reference_scores(svc, x, 16000)
    assert await window_scores(redis_client, UUID) == pytest.approx(ref, abs=1e-4)


async def test_legacy_first_message_8k_and_generated_call_id(make_service, redis_client):
    svc = await service(make_service)
    first = connected(8000, event=False, app="demo")
    await play(ws_url(svc, PATH), [first, *frames(speech(5.0, 8000), 8000)], close=True)
    found = await summaries(redis_client, None)
    assert len(found) == 1 and found[0]["call_id"].startswith("vonage-")
    assert found[0]["summary"]["duration_s"] == pytest.approx(5.0, abs=0.05)
    assert "provider_call_id" not in found[0]["metadata"]


async def test_token_in_uri_or_headers(make_service, redis_client):
    svc = await service(make_service, token=TOKEN)
    audio = frames(speech(2.0, 8000), 8000)
    assert await handshake_status(ws_url(svc, PATH, "token=nope")) == 401
    await play(ws_url(svc, PATH, f"token={TOKEN}"), [connected(8000, uuid="uri"), *audio],
               close=True)
    assert await summaries(redis_client, "uri")
    for i, hdr in enumerate([{}, {"token": "wrong-wrong-wrong-wrong"}, {"token": 5}]):
        _, code, reason = await play(ws_url(svc, PATH),
                                     [connected(8000, uuid=f"bad{i}", **hdr), *audio])
        assert (code, reason) == (4401, "unauthorized")
    await asyncio.sleep(0.3)
    assert not [d for d in alerts(redis_client) if d["call_id"].startswith("bad")]
    with pytest.raises(ConfigError, match="gateways.vonage.token"):
        await service(make_service, auth="required")


@pytest.mark.parametrize("case,close", [
    ("odd_frame", 4400), ("audio_first", 4400), ("content_type", 4415), ("not_json", 4400),
    ("wrong_event", 4400), ("huge_frame", 4413), ("bad_event", 4400),
])
async def test_bad_input(make_service, case, close):
    svc = await service(make_service)
    first = connected(16000, uuid="b")
    bad = {
        "odd_frame": [first, b"\x00" * 321],
        "audio_first": [b"\x00" * 640],
        "content_type": [first.replace("audio/l16;rate=16000", "audio/opus")],
        "not_json": ["hello"],
        "wrong_event": [json.dumps({"event": "websocket:dtmf",
                                    "content-type": "audio/l16;rate=8000"})],
        "huge_frame": [first, b"\x00" * 70_000],
        "bad_event": [first, b"\x00" * 640, json.dumps({"digit": "1"})],
    }[case]
    _, code, reason = await play(ws_url(svc, PATH), bad)
    assert code == close and reason


async def test_start_and_idle_timeouts(make_service, redis_client):
    svc = await make_service(gateways={"vonage": {"enabled": True, "path": PATH}},
                             limits={"start_timeout_s": 0.3, "idle_timeout_s": 0.3})
    _, code, reason = await play(ws_url(svc, PATH), [], wait=3)
    assert (code, reason) == (4408, "start_timeout")
    _, code, reason = await play(ws_url(svc, PATH), [connected(8000, uuid="idle"),
                                                     *frames(speech(2.0, 8000), 8000)], wait=3)
    assert (code, reason) == (4408, "idle_timeout")
    (s,) = await summaries(redis_client, "idle")
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("error", "idle_timeout")


def test_connected_parsing():
    first = parse_connected(connected(16000, app="demo"), 4096)
    assert first.sample_rate == 16000 and first.headers == {"app": "demo"}
    assert parse_connected('{"content-type": "Audio/L16; rate=8000"}', 4096).sample_rate == 8000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=8)
firsts = st.fixed_dictionaries({}, optional={
    "event": st.sampled_from(["websocket:connected", "websocket:dtmf", 1]),
    "content-type": st.sampled_from(["audio/l16;rate=16000", "audio/l16;rate=8000",
                                     "audio/l16", "audio/l16;rate=x", 7]),
    "token": json_values, "uuid": json_values})


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(firsts.map(json.dumps), st.text(max_size=40), st.binary(max_size=40)))
def test_parser_fuzz_raises_only_protocol_errors(text):
    for parse in (parse_connected, parse_event):
        try:
            parse(text, 4096)
        except ProtocolError as err:
            assert err.code in ("bad_json", "bad_message", "unsupported_format",
                                "frame_too_large")
