"""Exotel AgentStream gateway: documented messages over loopback, Basic auth, formats."""

import base64
import json

import pytest
from gwsupport import (
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
from nes2net_gateways.exotel import parse_media_format

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/exotel"
CALL = "b6a1f0c2e6d84b0c9c6c1a2b3c4d5e6f"
STREAM = "a8f2e1d0c9b84a7f8e6d5c4b3a2f1e0d"
USER, PASSWORD = "exotel-api-key", "exotel-api-token-0123456789"


def basic(user=USER, password=PASSWORD):
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def conversation(payloads, *, media_format=None, outbound=None, stop=True, call=CALL):
    """connected, start, media (100 ms chunks as Exotel sends them), dtmf, stop."""
    start = {"stream_sid": STREAM, "call_sid": call, "account_sid": "exotel-account",
             "from": "09876543210", "to": "08012345678",
             "custom_parameters": {"queue": "premium"}}
    if media_format is not None:
        start["media_format"] = media_format
    msgs = [{"event": "connected"},
            {"event": "start", "sequence_number": "1", "stream_sid": STREAM, "start": start}]
    seq = 1
    for i, p in enumerate(payloads):
        tracks = [("inbound", p)] + ([("outbound", outbound[i])] if outbound else [])
        for track, payload in tracks:
            seq += 1
            media = {"chunk": i + 1, "timestamp": str(100 * i), "payload": payload}
            if outbound:
                media["track"] = track
            msgs.append({"event": "media", "sequence_number": str(seq), "stream_sid": STREAM,
                         "media": media})
    msgs.append({"event": "dtmf", "stream_sid": STREAM, "dtmf": {"digit": "5"}})
    if stop:
        msgs.append({"event": "stop", "sequence_number": str(seq + 1), "stream_sid": STREAM,
                     "stop": {"call_sid": call, "account_sid": "exotel-account",
                              "reason": "callended"}})
    return [json.dumps(m) for m in msgs]


def slin_chunks(x, rate):
    """Base64 chunks of 100 ms of 16-bit little-endian PCM (Exotel streams about every 100 ms)."""
    return [base64.b64encode(c).decode() for c in chunks(pcm16(x), rate // 10 * 2)]


async def service(make_service, **section):
    return await make_service(gateways={"exotel": {"enabled": True, "path": PATH, **section}})


async def test_documented_slin_stream(make_service, redis_client):
    svc = await service(make_service, username=USER, password=PASSWORD)
    x = speech(6.0, 8000, seed=1)
    msgs = conversation(slin_chunks(x, 8000),
                        media_format={"encoding": "base64", "sample_rate": "8000",
                                      "bit_rate": "128kbps"})
    _, code, _ = await play(ws_url(svc, PATH), msgs, headers=basic())
    assert code == 1000
    (s,) = await summaries(redis_client, f"{CALL}:{STREAM}")
    assert s["summary"]["end_reason"] == "stop" and s["channel"] == "caller"
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
    assert s["metadata"] == {"provider": "exotel", "provider_call_id": CALL,
                             "provider_stream_id": STREAM, "ani": "09876543210",
                             "dnis": "08012345678", "account_id": "exotel-account",
                             "custom": {"queue": "premium"}}
    ref = await reference_scores(svc, x, 8000)
    assert await window_scores(redis_client, f"{CALL}:{STREAM}") == pytest.approx(ref, abs=1e-4)
    assert PASSWORD not in json.dumps(alerts(redis_client))


async def test_sample_rate_from_url_and_close_without_stop(make_service, redis_client):
    svc = await service(make_service, stream_in_call_id=False)
    x = speech(5.0, 16000, seed=2)
    # no media_format in start: the rate is the applet URL's sample-rate parameter
    await play(ws_url(svc, PATH, "sample-rate=16000"), conversation(
        slin_chunks(x, 16000), stop=False), close=True)
    (s,) = await summaries(redis_client, CALL)
    assert s["summary"]["duration_s"] == pytest.approx(5.0, abs=0.05)
    ref = await reference_scores(svc, x, 16000)
    assert await window_scores(redis_client, CALL) == pytest.approx(ref, abs=1e-4)


async def test_mulaw_both_tracks(make_service, redis_client):
    svc = await service(make_service, score_agent=True, stream_in_call_id=False)

    def hundred_ms(frames):  # 20 ms μ-law frames joined into Exotel's 100 ms chunks
        raw = b"".join(base64.b64decode(f) for f in frames)
        return [base64.b64encode(c).decode() for c in chunks(raw, 800)]

    msgs = conversation(hundred_ms(mulaw_b64_frames(5.0, seed=3)),
                        outbound=hundred_ms(mulaw_b64_frames(5.0, seed=4)),
                        media_format={"encoding": "audio/x-mulaw;rate=8000"}, call="mu")
    await play(ws_url(svc, PATH), msgs)
    found = await summaries(redis_client, "mu", n=2)
    assert {d["channel"] for d in found} == {"caller", "agent"}
    assert all(d["summary"]["duration_s"] == pytest.approx(5.0, abs=0.05) for d in found)


async def test_basic_auth(make_service, redis_client):
    svc = await service(make_service, username=USER, password=PASSWORD)
    url = ws_url(svc, PATH)
    assert await handshake_status(url) == 401
    assert await handshake_status(url, basic(password="wrong")) == 401
    assert await handshake_status(url, basic()) == 101
    with pytest.raises(ConfigError, match="gateways.exotel.password"):
        await service(make_service, auth="required")
    with pytest.raises(ConfigError, match="username/password"):
        await service(make_service, username=USER)


def test_media_formats():
    assert parse_media_format(None) == ("pcm_s16le", None)
    assert parse_media_format({"encoding": "base64", "sample_rate": "16000"}) == \
        ("pcm_s16le", 16000)
    assert parse_media_format({"encoding": "audio/L16;rate=24000"}) == ("pcm_s16le", 24000)
    assert parse_media_format({"encoding": "audio/x-mulaw;rate=8000"}) == ("mulaw", 8000)
    for bad in ({"encoding": "audio/opus"}, {"encoding": "base64", "sample_rate": 44100},
                {"encoding": "audio/x-mulaw", "sample_rate": 16000}, {"encoding": 3}):
        with pytest.raises(ProtocolError) as err:
            parse_media_format(bad)
        assert err.value.code == "unsupported_format"


@pytest.mark.parametrize("case,close", [
    ("format", 4415), ("media_first", 4400), ("binary", 4400), ("odd_pcm", 4400),
    ("other_stream", 4400), ("bad_json", 4400), ("no_call", 4400), ("huge", 4413),
    ("bad_track", 4400),
])
async def test_bad_input(make_service, case, close):
    svc = await service(make_service)
    msgs = conversation(slin_chunks(speech(0.5, 8000), 8000), stop=False)
    start, media = json.loads(msgs[1]), json.loads(msgs[2])
    bad = {
        "format": [json.dumps({**start, "start": {**start["start"],
                                                  "media_format": {"encoding": "opus"}}})],
        "media_first": [msgs[2]],
        "binary": [msgs[1], b"\x00" * 320],
        "odd_pcm": [msgs[1], json.dumps({**media, "media": {
            **media["media"], "payload": base64.b64encode(b"\x00" * 3).decode()}})],
        "other_stream": [msgs[1], json.dumps({**media, "stream_sid": "other"})],
        "bad_json": [msgs[1], "{]"],
        "no_call": [json.dumps({**start, "start": {"stream_sid": STREAM}})],
        "huge": [msgs[1], json.dumps({"event": "x", "pad": "y" * 20_000})],
        "bad_track": [msgs[1], json.dumps({**media, "media": {**media["media"],
                                                              "track": "both"}})],
    }[case]
    _, code, reason = await play(ws_url(svc, PATH), bad)
    assert code == close and reason
