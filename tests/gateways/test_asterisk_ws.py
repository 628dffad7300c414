"""Asterisk chan_websocket gateway: documented MEDIA_START formats, auth, bad input, fuzzing."""

import asyncio
import base64
import json

import pytest
from gwsupport import FUZZ_EXAMPLES, alerts, handshake_status, pcm16, play, speech, summaries
from gwsupport import ws_url as url_of
from hypothesis import given, settings
from hypothesis import strategies as st
from nes2net_gateways.asterisk_ws import parse_control, parse_media_start
from websockets.asyncio.client import connect

from nes2net_stream.client import encode_samples
from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/asterisk"
USER, PASSWORD = "asterisk", "media-password-0123"
TOKEN = "asterisk-media-token-0123456789"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


def plain_start(conn_id, fmt="ulaw", frame=160, channel_id=None):
    """The plain-text MEDIA_START of Asterisk 20.16/21.11/22.6/23.0 (channel_id from 20.17)."""
    text = f"MEDIA_START connection_id:{conn_id} channel:WebSocket/media_connection1-00000001"
    if channel_id:
        text += f" channel_id:{channel_id}"
    return text + f" format:{fmt} optimal_frame_size:{frame} ptime:20"


def json_start(conn_id, channel_id, fmt="slin16", variables=None):
    """The JSON MEDIA_START of Asterisk 20.18/22.8/23.2 with f(json)."""
    return json.dumps({"event": "MEDIA_START", "connection_id": conn_id,
                       "channel": "WebSocket/media_connection1-00000002",
                       "channel_id": channel_id, "format": fmt, "optimal_frame_size": 640,
                       "ptime": 20, "channel_variables": variables or {}})


def ulaw_frames(seconds, seed=0):
    raw = encode_samples(speech(seconds, 8000, seed), "mulaw")
    return [raw[i:i + 160] for i in range(0, len(raw), 160)]


async def service(make_service, **section):
    cfg = {"enabled": True, "path": PATH, "username": USER, "password": PASSWORD,
           "token": TOKEN, **section}
    return await make_service(gateways={"asterisk_ws": cfg})


async def test_plain_text_events_ulaw_audio_and_normal_close(make_service, redis_client):
    svc = await service(make_service)
    conn_id = "e226e283-c90a-4ea9-9e37-389000b9ef47"
    frames = ulaw_frames(6.0)
    msgs = [plain_start(conn_id), *frames[:100], "DTMF_END digit:5", "MEDIA_XOFF", "MEDIA_XON",
            "MEDIA_FUTURE_EVENT something:new", *frames[100:]]
    got, code, _ = await play(url_of(svc, PATH), msgs, headers=BASIC, subprotocols=["media"],
                              close=True)
    assert got == []  # a listen-only consumer sends nothing back
    (s,) = await summaries(redis_client, conn_id)
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.01)
    assert s["summary"]["windows_scored"] >= 2
    assert s["source"]["gateway"] == "asterisk_ws"
    assert s["metadata"] == {
        "provider": "asterisk_ws", "provider_call_id": conn_id, "provider_stream_id": conn_id,
        "custom": {"channel": "WebSocket/media_connection1-00000001", "format": "ulaw",
                   "optimal_frame_size": 160, "ptime": 20}}


async def test_json_events_slin16_and_channel_variables(make_service, redis_client):
    svc = await service(make_service)
    chan = "pbx1-1718000000.42"
    variables = {"NES2NET_ANI": "+15551230000", "NES2NET_DNIS": "+18005550100", "QUEUE": "sales"}
    raw = pcm16(speech(5.0, 16000, seed=4))
    msgs = [json_start("c0ffee00-0000-4000-8000-000000000001", chan, variables=variables),
            *[raw[i:i + 640] for i in range(0, len(raw), 640)],
            json.dumps({"event": "DTMF_END", "channel_id": chan, "digit": "#"}),
            json.dumps({"event": "STATUS", "channel_id": chan, "queue_length": 0})]
    await play(url_of(svc, PATH, f"token={TOKEN}"), msgs, close=True)
    (s,) = await summaries(redis_client, chan)
    meta = s["metadata"]
    assert meta["provider_call_id"] == chan and meta["ani"] == "+15551230000"
    assert meta["dnis"] == "+18005550100" and meta["custom"]["channel_variables"] == variables
    assert s["summary"]["duration_s"] == pytest.approx(5.0, abs=0.01)


async def test_auth_basic_token_and_subprotocol(make_service, redis_client):
    svc = await service(make_service)
    url = url_of(svc, PATH)
    assert await handshake_status(url, BASIC) == 101
    assert await handshake_status(url, {"Authorization": f"Bearer {TOKEN}"}) == 101
    assert await handshake_status(url_of(svc, PATH, f"token={TOKEN}")) == 101
    wrong = base64.b64encode(f"{USER}:nope".encode()).decode()
    assert await handshake_status(url, {"Authorization": f"Basic {wrong}"}) == 401
    assert await handshake_status(url, {"Authorization": "Bearer " + "x" * 30}) == 401
    assert await handshake_status(url_of(svc, PATH, "token=wrong")) == 401
    assert await handshake_status(url) == 401
    async with connect(url, additional_headers=BASIC, subprotocols=["media"]) as ws:
        assert ws.subprotocol == "media"
    assert alerts(redis_client) == []


@pytest.mark.parametrize("case,close", [
    ("audio_first", 4400), ("opus", 4415), ("start_twice", 4400), ("bad_json", 4400),
    ("odd_slin", 4400), ("bad_event", 4400), ("huge_text", 4413), ("no_ids", 4400),
    ("bad_frame_size", 4400),
])
async def test_bad_input_closes_that_call_only(make_service, redis_client, case, close):
    svc = await service(make_service)
    good = asyncio.create_task(play(url_of(svc, PATH), [plain_start("good-1"), *ulaw_frames(3.0)],
                                    headers=BASIC, close=True))
    start = plain_start("bad-1", fmt="slin")
    msgs = {
        "audio_first": [b"\x00" * 320],
        "opus": [plain_start("bad-1", fmt="opus")],
        "start_twice": [start, start],
        "bad_json": [start, '{"event": "DTMF_END",'],
        "odd_slin": [start, b"\x00" * 321],
        "bad_event": [start, "dtmf end"],
        "huge_text": [start, "MEDIA_XON " + "x" * 20_000],
        "no_ids": ["MEDIA_START format:ulaw"],
        "bad_frame_size": ["MEDIA_START connection_id:x format:ulaw optimal_frame_size:big"],
    }[case]
    _, code, reason = await play(url_of(svc, PATH), msgs, headers=BASIC)
    assert code == close and reason
    _, good_code, _ = await good
    assert good_code == 1000
    (ok,) = await summaries(redis_client, "good-1")
    assert ok["summary"]["end_reason"] == "stop"
    if case in ("start_twice", "bad_json", "odd_slin", "bad_event", "huge_text"):
        (s,) = await summaries(redis_client, "bad-1")
        assert s["summary"]["end_reason"] == "error"


async def test_config_errors(make_service):
    with pytest.raises(ConfigError, match="username/password"):
        await make_service(gateways={"asterisk_ws": {"enabled": True, "username": "a"}})
    with pytest.raises(ConfigError, match="token"):
        await make_service(gateways={"asterisk_ws": {"enabled": True, "token": "short"}})
    with pytest.raises(ConfigError, match="gateways.asterisk_ws.password"):
        await make_service(gateways={"asterisk_ws": {"enabled": True, "auth": "required"}})


def test_control_parsing_examples():
    c = parse_control(plain_start("abc", channel_id="pbx1-1.2"))
    ms = parse_media_start(c)
    assert (ms.call_id, ms.connection_id, ms.encoding, ms.sample_rate) == (
        "pbx1-1.2", "abc", "mulaw", 8000)
    assert parse_control("MEDIA_BUFFERING_COMPLETED id-7").fields == {"args": ["id-7"]}
    assert parse_control('{"event":"MEDIA_XOFF","channel_id":"x"}').fields == {"channel_id": "x"}
    ms = parse_media_start(parse_control(json_start("c", "ch", fmt="slin44")))
    assert (ms.encoding, ms.sample_rate) == ("pcm_s16le", 44100)


@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None)
@given(st.one_of(
    st.text(max_size=120),
    st.builds(lambda kv: "MEDIA_START " + " ".join(f"{k}:{v}" for k, v in kv),
              st.lists(st.tuples(st.sampled_from(["connection_id", "channel_id", "format",
                                                  "optimal_frame_size", "ptime", "channel"]),
                                 st.text(max_size=8).filter(lambda t: " " not in t)),
                       max_size=6)),
    st.dictionaries(st.sampled_from(["event", "connection_id", "channel_id", "format",
                                     "optimal_frame_size", "ptime", "channel_variables"]),
                    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
                    | st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
                    max_size=7).map(json.dumps)))
def test_fuzz_control_parsers_raise_only_protocol_errors(text):
    try:
        ctrl = parse_control(text)
        assert ctrl.event
        ms = parse_media_start(ctrl)
        assert ms.call_id and ms.sample_rate >= 8000
    except ProtocolError as err:
        assert err.code in ("bad_json", "bad_message", "unsupported_format")
