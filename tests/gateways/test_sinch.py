"""Sinch Voice API stream gateway: ConnectRequest/answer, PCM frames, heartbeats, busy/reject."""

import asyncio
import json

import pytest
from fuzzing import json_values
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
from nes2net_gateways.sinch import parse_connect, parse_control
from websockets.asyncio.client import connect

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/sinch"
TOKEN = "sinch-shared-token-0123456789"
APP = "a3f6b2c1-0000-4000-8000-5e2d9c7b1a00"
ANSWER = {"command": "answer"}


def connect_request(call_id, rate=8000, headers=None, **extra):
    """The first message, as in the Voice Stream AsyncAPI (``ConnectRequest``)."""
    return json.dumps({"command": "connect", "version": 1, "callId": call_id,
                       "applicationKey": APP, "codec": "PCM", "sampleRate": rate,
                       "callHeaders": headers if headers is not None else {}, **extra})


def frames(x, rate):
    """20 ms binary frames of 16-bit little-endian PCM (320 bytes at 8 kHz)."""
    return chunks(pcm16(x), rate // 25)


async def service(make_service, limits=None, **section):
    return await make_service(gateways={"sinch": {"enabled": True, "path": PATH, **section}},
                              **({"limits": limits} if limits else {}))


async def test_documented_call_answered_and_scored(make_service, redis_client):
    svc = await service(make_service, token=TOKEN)
    x = speech(6.0, 16000, seed=1)
    first = connect_request("sinch-call-1", 16000, {"token": TOKEN, "cli": "+46700000001",
                                                    "to": "+46700000002", "queue": "vip"})
    # the conference's customer call named in a call header becomes the call id
    named = connect_request("stream-leg-2", 8000, {"token": TOKEN, "call_id": "customer-2"})
    replies, code, _ = await play(ws_url(svc, PATH), [first, *frames(x, 16000)], close=True)
    assert json.loads(replies[0]) == ANSWER and code == 1000
    (s,) = await summaries(redis_client, "sinch-call-1")
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
    assert s["source"]["gateway"] == "sinch"
    assert s["metadata"] == {"provider": "sinch", "provider_call_id": "sinch-call-1",
                             "ani": "+46700000001", "dnis": "+46700000002", "account_id": APP,
                             "mixed": True, "custom": {"queue": "vip"}}
    assert TOKEN not in json.dumps(alerts(redis_client))
    assert await window_scores(redis_client, "sinch-call-1") == pytest.approx(
        await reference_scores(svc, x, 16000), abs=1e-4)
    await play(ws_url(svc, PATH), [named, *frames(speech(2.0, 8000), 8000)], close=True)
    (s,) = await summaries(redis_client, "customer-2")
    assert s["metadata"]["provider_call_id"] == "stream-leg-2"
    assert s["metadata"]["custom"] == {"call_id": "customer-2"}


async def test_heartbeats_keep_a_quiet_leg_alive(make_service, redis_client):
    """Nothing is streamed back, so heartbeat commands go out every ``heartbeat_s``."""
    svc = await service(make_service, heartbeat_s=0.2, mixed=False)
    got = []
    async with connect(ws_url(svc, PATH)) as ws:
        await ws.send(connect_request("quiet", 8000, [{"key": "cli", "value": "+4670"}]))
        got.append(json.loads(await ws.recv()))
        for f in frames(speech(1.2, 8000), 8000):
            await ws.send(f)
        async with asyncio.timeout(3):
            while len(got) < 4:
                got.append(json.loads(await ws.recv()))
        await ws.close()
    assert got == [ANSWER] + [{"command": "heartbeat"}] * 3
    (s,) = await summaries(redis_client, "quiet")
    assert s["metadata"] == {"provider": "sinch", "provider_call_id": "quiet", "ani": "+4670",
                             "account_id": APP}
    assert s["summary"]["end_reason"] == "stop"


async def test_token_in_url_or_call_headers(make_service, redis_client):
    svc = await service(make_service, token=TOKEN)
    audio = frames(speech(2.0, 8000), 8000)
    assert await handshake_status(ws_url(svc, PATH, "token=nope")) == 401
    replies, _, _ = await play(ws_url(svc, PATH, f"token={TOKEN}"),
                               [connect_request("uri"), *audio], close=True)
    assert json.loads(replies[0]) == ANSWER and await summaries(redis_client, "uri")
    listed = [{"key": "token", "value": TOKEN}]
    replies, _, _ = await play(ws_url(svc, PATH), [connect_request("list", headers=listed),
                                                   *audio], close=True)
    assert json.loads(replies[0]) == ANSWER and await summaries(redis_client, "list")
    for i, hdr in enumerate([{}, {"token": "wrong-wrong-wrong-wrong"}, {"token": 5}]):
        replies, code, reason = await play(ws_url(svc, PATH),
                                           [connect_request(f"bad{i}", headers=hdr), *audio])
        assert [json.loads(r) for r in replies] == [{"command": "reject"}]
        assert (code, reason) == (4401, "unauthorized")
    await asyncio.sleep(0.3)
    assert not [d for d in alerts(redis_client) if d["call_id"].startswith("bad")]
    with pytest.raises(ConfigError, match="gateways.sinch.token"):
        await service(make_service, auth="required")


async def test_busy_at_capacity_other_call_unharmed(make_service, redis_client):
    svc = await service(make_service, limits={"max_calls": 1})
    x = speech(4.0, 8000, seed=2)
    async with connect(ws_url(svc, PATH)) as first:
        await first.send(connect_request("first"))
        assert json.loads(await first.recv()) == ANSWER
        replies, code, reason = await play(ws_url(svc, PATH), [connect_request("second")])
        assert [json.loads(r) for r in replies] == [{"command": "busy"}]
        assert (code, reason) == (4429, "too_many_calls")
        for f in frames(x, 8000):
            await first.send(f)
        await first.close()
    (s,) = await summaries(redis_client, "first")
    assert s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(4.0, abs=0.05)


@pytest.mark.parametrize("case,close,reply", [
    ("codec", 4415, "reject"), ("rate", 4415, "reject"), ("no_call_id", 4400, "reject"),
    ("not_json", 4400, "reject"), ("audio_first", 4400, "reject"), ("odd_frame", 4400, None),
    ("connect_twice", 4400, None), ("huge_frame", 4413, None), ("bad_json_later", 4400, None),
    ("bad_header_call_id", 4400, "reject"),
])
async def test_bad_input(make_service, redis_client, case, close, reply):
    svc = await service(make_service)
    first = connect_request(f"bad-{case}")
    bad = {
        "codec": [connect_request("c", codec="OPUS")],
        "rate": [connect_request("r", 11025)],
        "no_call_id": [json.dumps({"command": "connect", "codec": "PCM", "sampleRate": 8000})],
        "not_json": ["hello"],
        "audio_first": [b"\x00" * 320],
        "odd_frame": [first, b"\x00" * 321],
        "connect_twice": [first, b"\x00" * 320, first],
        "huge_frame": [first, b"\x00" * 70_000],
        "bad_json_later": [first, "{"],
        "bad_header_call_id": [connect_request("h", headers={"call_id": "has spaces"})],
    }[case]
    replies, code, reason = await play(ws_url(svc, PATH), bad)
    assert code == close and reason
    want = [{"command": reply}] if reply else [ANSWER]
    assert [json.loads(r) for r in replies] == want
    if reply is None:  # an answered call that failed still gets its summary
        (s,) = await summaries(redis_client, f"bad-{case}")
        assert s["summary"]["end_reason"] == "error"


def test_connect_parsing():
    first = parse_connect(connect_request("p", 44100, {"a": "b"}, version=2), 4096)
    assert (first.call_id, first.sample_rate, first.version) == ("p", 44100, 2)
    assert first.application_key == APP and first.headers == {"a": "b"}
    assert parse_control('{"command": "whatever"}', 4096) == "whatever"
    assert parse_control("{}", 4096) is None


firsts = st.fixed_dictionaries({}, optional={
    "command": st.sampled_from(["connect", "heartbeat", 1]),
    "callId": st.sampled_from(["abc", "", "x" * 200, 5]),
    "codec": st.sampled_from(["PCM", "pcm", "OPUS", None]),
    "sampleRate": st.sampled_from([8000, 16000, 96000, 11025, "8000", True]),
    "version": json_values, "applicationKey": json_values, "callHeaders": json_values})


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(firsts.map(json.dumps), st.text(max_size=40), st.binary(max_size=40)))
def test_parser_fuzz_raises_only_protocol_errors(text):
    for parse in (parse_connect, parse_control):
        try:
            parse(text, 4096)
        except ProtocolError as err:
            assert err.code in ("bad_json", "bad_message", "unsupported_format",
                                "frame_too_large")
