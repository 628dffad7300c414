"""Every bad-input case of the generic protocol: an error event and a close code for that
connection only, other calls unaffected, summaries still published."""

import asyncio
import json

import pytest
from helpers import tone_bursts
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nes2net_stream.client import encode_samples, stream_samples

START = {"type": "start", "call_id": "bad-1", "encoding": "pcm_s16le", "sample_rate": 8000,
         "channels": 1}


async def exchange(url, messages, *, wait=5.0, headers=None):
    """Send messages, collect what comes back until the server closes."""
    got = []
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        try:
            for m in messages:
                await ws.send(m)
        except ConnectionClosed:
            pass
        try:
            async with asyncio.timeout(wait):
                async for msg in ws:
                    got.append(json.loads(msg))
        except (ConnectionClosed, TimeoutError):
            pass
        return got, ws.close_code


def frame(seconds=0.1):
    return encode_samples(tone_bursts(max(seconds, 0.1), 8000)[: int(8000 * seconds)], "pcm_s16le")


@pytest.mark.parametrize("messages,code,close", [
    (["{not json"], "bad_json", 4400),
    (['["start"]'], "bad_message", 4400),
    ([json.dumps({k: v for k, v in START.items() if k != "call_id"})], "bad_message", 4400),
    ([json.dumps({**START, "colour": "blue"})], "bad_message", 4400),
    ([json.dumps({**START, "encoding": "speex"})], "unsupported_format", 4415),
    ([json.dumps({**START, "encoding": "opus", "channels": 2})], "unsupported_format", 4415),
    ([json.dumps({**START, "sample_rate": 11025})], "unsupported_format", 4415),
    ([json.dumps({**START, "channels": 3})], "unsupported_format", 4415),
    ([json.dumps({**START, "call_id": "bad id with spaces"})], "bad_message", 4400),
    ([json.dumps({**START, "channels": 2, "channel_roles": ["caller"]})], "bad_message", 4400),
    ([json.dumps({**START, "score_channels": ["agent"]})], "bad_message", 4400),
    ([b"\x00\x01" * 160], "audio_before_start", 4400),
    ([json.dumps(START), b"\x00" * 321], "bad_audio_frame", 4400),
    ([json.dumps(START), b"\x00" * 70000], "frame_too_large", 4413),
    ([json.dumps(START), "x" * 20000], "frame_too_large", 4413),
    ([json.dumps(START), json.dumps({"type": "dance"})], "unknown_message", 4400),
    ([json.dumps(START), json.dumps(START)], "bad_message", 4400),
])
async def test_protocol_errors(make_service, messages, code, close):
    svc = await make_service()
    got, close_code = await exchange(svc.url, messages)
    errors = [e for e in got if e["type"] == "error"]
    assert errors and errors[0]["code"] == code, got
    assert close_code == close


async def test_errors_only_affect_their_connection(make_service, redis_client):
    svc = await make_service()
    good = asyncio.create_task(stream_samples(svc.url, tone_bursts(6.0, 8000), 8000,
                                              call_id="good", realtime=True, speed=3.0))
    await asyncio.sleep(0.3)
    bad = [exchange(svc.url, ["{oops"]),
           exchange(svc.url, [json.dumps({**START, "call_id": "b2"}), b"\x00" * 3]),
           exchange(svc.url, [b"audio"])]
    await asyncio.gather(*bad)
    res = await good
    assert res.summary is not None and res.summary["summary"]["end_reason"] == "stop"
    assert res.close_code == 1000


async def test_duplicate_call_id_is_refused_and_first_call_continues(make_service):
    svc = await make_service()
    first = asyncio.create_task(stream_samples(svc.url, tone_bursts(5.0, 8000), 8000,
                                               call_id="dup", realtime=True, speed=2.0))
    await asyncio.sleep(0.5)
    got, close_code = await exchange(svc.url, [json.dumps({**START, "call_id": "dup"})])
    assert got[-1]["code"] == "duplicate_call_id" and close_code == 4409
    res = await first
    assert res.summary["summary"]["end_reason"] == "stop"


async def test_abrupt_disconnect_still_publishes_summary(make_service, redis_client):
    svc = await make_service()
    async with connect(svc.url) as ws:
        await ws.send(json.dumps({**START, "call_id": "cut"}))
        audio = encode_samples(tone_bursts(6.0, 8000), "pcm_s16le")
        for i in range(0, len(audio), 3200):
            await ws.send(audio[i:i + 3200])
        await asyncio.sleep(0.5)
        ws.transport.abort()  # no close handshake: like a dropped TCP connection
    for _ in range(50):
        docs = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")]
        summaries = [d for d in docs if d["type"] == "summary" and d["call_id"] == "cut"]
        if summaries:
            break
        await asyncio.sleep(0.1)
    assert summaries, "summary of the cut call must be published"
    s = summaries[0]["summary"]
    assert s["end_reason"] == "disconnect" and s["windows_scored"] >= 1


async def test_start_and_idle_timeouts(make_service):
    svc = await make_service(limits={"start_timeout_s": 0.5, "idle_timeout_s": 0.5})
    got, close_code = await exchange(svc.url, [])
    assert got[-1]["code"] == "start_timeout" and close_code == 4408
    got, close_code = await exchange(svc.url, [json.dumps(START), frame(0.2)])
    assert any(e.get("code") == "idle_timeout" for e in got)
    assert got[-1]["type"] == "summary" and got[-1]["summary"]["end_reason"] == "error"
    assert close_code == 4408


async def test_call_limit(make_service):
    svc = await make_service(limits={"max_calls": 1})
    first = asyncio.create_task(stream_samples(svc.url, tone_bursts(3.0, 8000), 8000,
                                               call_id="one", realtime=True))
    await asyncio.sleep(0.5)
    got, close_code = await exchange(svc.url, [json.dumps({**START, "call_id": "two"})])
    assert got[-1]["code"] == "too_many_calls" and close_code == 4429
    await first


async def test_rate_limit(make_service):
    svc = await make_service(limits={"max_realtime_factor": 1.0, "realtime_burst_s": 1.0})
    res = await stream_samples(svc.url, tone_bursts(10.0, 8000), 8000, realtime=False)
    assert res.of_type("error")[0]["code"] == "rate_limited" and res.close_code == 4429
    assert res.summary is not None  # what was scored is still summarised


async def test_auth_required_rejects_before_upgrade(make_service):
    token = "a-very-long-secret-token-123"
    svc = await make_service(auth={"mode": "required", "tokens": [token]})
    with pytest.raises(InvalidStatus) as err:
        await exchange(svc.url, [json.dumps(START)])
    assert err.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        await exchange(svc.url, [json.dumps(START)],
                       headers={"Authorization": "Bearer wrong-token-wrong-token"})
    res = await stream_samples(svc.url, tone_bursts(3.0, 8000), 8000, realtime=False,
                               token=token)
    assert res.summary is not None


def test_non_loopback_bind_without_token_fails_fast(small_bundle):
    from nes2net_stream.config import load_settings
    from nes2net_stream.errors import ConfigError
    from nes2net_stream.service.server import build_context

    settings = load_settings(None, environ={}, overrides={
        "model": {"path": str(small_bundle)}, "server": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="authentication is required"):
        build_context(settings)
