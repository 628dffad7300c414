"""Twilio Media Streams gateway: documented conversations over loopback, signatures, pitfalls."""

import asyncio
import base64
import hashlib
import hmac
import json

import pytest
from gwsupport import (
    FUZZ_EXAMPLES,
    alerts,
    handshake_status,
    mulaw_b64_frames,
    play,
    summaries,
    ws_url,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nes2net_gateways.twilio import parse_message, parse_signature_settings, signature_urls
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/twilio"
TOKEN = "twilio-auth-token-0123456789abcdef"
ACCOUNT = "AC" + "a" * 32


def sign(token: str, url: str, digest=hashlib.sha1) -> str:
    """Twilio's documented scheme: base64 of HMAC-SHA1 over the full URL (no POST params)."""
    return base64.b64encode(hmac.new(token.encode(), url.encode(), digest).digest()).decode()


def conversation(call_sid, stream_sid, *, inbound, outbound=None, custom=None,
                 media_format=True, tracks=None):
    """connected, start, interleaved media of both tracks, stop: as in Twilio's examples."""
    msgs = [{"event": "connected", "protocol": "Call", "version": "1.0.0"}]
    start = {"accountSid": ACCOUNT, "streamSid": stream_sid, "callSid": call_sid,
             "tracks": tracks or (["inbound", "outbound"] if outbound else ["inbound"])}
    if custom is not None:
        start["customParameters"] = custom
    if media_format:
        start["mediaFormat"] = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    msgs.append({"event": "start", "sequenceNumber": "1", "start": start,
                 "streamSid": stream_sid})
    seq = 1
    for i, payload in enumerate(inbound):
        pairs = [("inbound", payload)] + ([("outbound", outbound[i])] if outbound else [])
        for track, p in pairs:
            seq += 1
            msgs.append({"event": "media", "sequenceNumber": str(seq), "streamSid": stream_sid,
                         "media": {"track": track, "chunk": str(i + 1),
                                   "timestamp": str(20 * i), "payload": p}})
    msgs.append({"event": "stop", "sequenceNumber": str(seq + 1), "streamSid": stream_sid,
                 "stop": {"accountSid": ACCOUNT, "callSid": call_sid}})
    return [json.dumps(m) for m in msgs]


def sid(prefix, n):
    return f"{prefix}{n:032x}"


async def service(make_service, **section):
    cfg = {"enabled": True, "path": PATH, **section}
    return await make_service(gateways={"twilio": cfg})


@pytest.mark.both_loops
async def test_both_tracks_demultiplexed_into_caller_and_agent(make_service, redis_client):
    svc = await service(make_service, score_agent=True)
    call, stream = sid("CA", 1), sid("MZ", 1)
    msgs = conversation(call, stream, inbound=mulaw_b64_frames(6.0, seed=1),
                        outbound=mulaw_b64_frames(6.0, seed=2),
                        custom={"FirstName": "Jane", "RemoteParty": "Bob"})
    _, code, _ = await play(ws_url(svc, PATH), msgs)
    assert code == 1000
    found = await summaries(redis_client, f"{call}:{stream}", n=2)
    by_channel = {d["channel"]: d for d in found}
    assert set(by_channel) == {"caller", "agent"}
    for d in found:
        # each track alone is 6 s: mixing interleaved tracks would double it
        assert d["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
        assert d["summary"]["end_reason"] == "stop" and d["summary"]["windows_scored"] >= 1
        assert d["source"]["kind"] == "gateway" and d["source"]["gateway"] == "twilio"
        assert d["source"]["remote"].startswith("127.0.0.1:")
        assert d["metadata"] == {"provider": "twilio", "provider_call_id": call,
                                 "provider_stream_id": stream, "account_id": ACCOUNT,
                                 "custom": {"FirstName": "Jane", "RemoteParty": "Bob"}}


async def test_only_customer_track_scored_by_default(make_service, redis_client):
    svc = await service(make_service, stream_in_call_id=False)
    call, stream = sid("CA", 2), sid("MZ", 2)
    silence = [base64.b64encode(b"\xff" * 160).decode()] * 300  # μ-law silence
    msgs = conversation(call, stream, inbound=mulaw_b64_frames(6.0), outbound=silence)
    await play(ws_url(svc, PATH), msgs)
    found = await summaries(redis_client, call)
    assert [d["channel"] for d in found] == ["caller"]
    assert found[0]["summary"]["windows_scored"] >= 1
    assert all(d["call_id"] == call for d in alerts(redis_client))


async def test_customer_track_outbound_maps_outbound_to_caller(make_service, redis_client):
    svc = await service(make_service, customer_track="outbound")
    call, stream = sid("CA", 3), sid("MZ", 3)
    silence = [base64.b64encode(b"\xff" * 160).decode()] * 300
    msgs = conversation(call, stream, inbound=silence, outbound=mulaw_b64_frames(6.0))
    await play(ws_url(svc, PATH), msgs)
    (summary,) = await summaries(redis_client, f"{call}:{stream}")
    assert summary["channel"] == "caller" and summary["summary"]["windows_scored"] >= 1
    assert summary["summary"]["speech_s"] > 3.0


async def test_agent_track_alone_is_rate_limited(make_service, redis_client):
    """Every track counts towards the rate and length limits, not only the customer's."""
    svc = await make_service(gateways={"twilio": {"enabled": True, "path": PATH,
                                                  "score_agent": True}},
                             limits={"max_realtime_factor": 1.0, "realtime_burst_s": 1.0})
    call, stream = sid("CA", 9), sid("MZ", 9)
    frames = mulaw_b64_frames(6.0, seed=2)
    msgs = [m for m in conversation(call, stream, inbound=frames, outbound=frames)
            if '"track": "inbound"' not in m]
    _, code, reason = await play(ws_url(svc, PATH), msgs)
    assert (code, reason) == (4429, "rate_limited")
    found = {d["channel"]: d["summary"] for d in
             await summaries(redis_client, f"{call}:{stream}", n=2)}
    assert found["agent"]["end_reason"] == "error" and found["agent"]["detail"] == "rate_limited"


async def test_missing_custom_parameters_and_media_format(make_service, redis_client):
    svc = await service(make_service)
    call, stream = sid("CA", 4), sid("MZ", 4)
    msgs = conversation(call, stream, inbound=mulaw_b64_frames(5.0), custom=None,
                        media_format=False)
    await play(ws_url(svc, PATH), msgs)
    (summary,) = await summaries(redis_client, f"{call}:{stream}")
    assert "custom" not in summary["metadata"]
    assert summary["summary"]["end_reason"] == "stop"


async def test_sequence_gaps_and_late_duplicates_are_tolerated(make_service, redis_client):
    svc = await service(make_service)
    call, stream = sid("CA", 5), sid("MZ", 5)
    msgs = conversation(call, stream, inbound=mulaw_b64_frames(5.0))
    media = msgs[2:-1]
    replayed = media[100:150]  # late duplicates: sequence numbers already seen
    msgs = msgs[:2] + media[:200] + media[205:] + replayed + msgs[-1:]  # gap of 5
    _, code, _ = await play(ws_url(svc, PATH), msgs)
    assert code == 1000
    (summary,) = await summaries(redis_client, f"{call}:{stream}")
    # 250 frames minus the 5 missing; the 50 duplicates are dropped
    assert summary["summary"]["duration_s"] == pytest.approx(245 * 0.02, abs=0.01)


@pytest.mark.parametrize("case,close", [
    ("bad_json", 4400), ("binary", 4400), ("media_first", 4400), ("format", 4415),
    ("huge", 4413), ("bad_payload", 4400), ("other_stream", 4400), ("start_twice", 4400),
])
@pytest.mark.both_loops
async def test_bad_input_closes_that_call_only(make_service, redis_client, case, close):
    svc = await service(make_service)
    good_call, good_stream = sid("CA", 100), sid("MZ", 100)
    good = asyncio.create_task(play(ws_url(svc, PATH), conversation(
        good_call, good_stream, inbound=mulaw_b64_frames(4.0))))
    call, stream = sid("CA", 101), sid("MZ", 101)
    msgs = conversation(call, stream, inbound=mulaw_b64_frames(1.0))
    media = json.loads(msgs[2])
    bad = {
        "bad_json": [msgs[0], msgs[1], "{not json"],
        "binary": [msgs[0], msgs[1], b"\x00" * 160],
        "media_first": [msgs[0], msgs[2]],
        "format": [msgs[0], msgs[1].replace("audio/x-mulaw", "audio/x-l16")],
        "huge": [msgs[0], msgs[1], "x" * 20_000],
        "bad_payload": [msgs[0], msgs[1], json.dumps(
            {**media, "media": {**media["media"], "payload": "%%%"}})],
        "other_stream": [msgs[0], msgs[1], json.dumps({**media, "streamSid": sid("MZ", 9)})],
        "start_twice": [msgs[0], msgs[1], msgs[1]],
    }[case]
    _, code, reason = await play(ws_url(svc, PATH), bad)
    assert code == close and reason
    _, good_code, _ = await good
    assert good_code == 1000
    (ok,) = await summaries(redis_client, f"{good_call}:{good_stream}")
    assert ok["summary"]["end_reason"] == "stop"
    if case not in ("media_first", "format"):  # started calls are summarised as errors
        (s,) = await summaries(redis_client, f"{call}:{stream}")
        assert s["summary"]["end_reason"] == "error"


async def test_drain_ends_streaming_call_with_shutdown(make_service, redis_client):
    svc = await service(make_service)
    call, stream = sid("CA", 7), sid("MZ", 7)
    msgs = conversation(call, stream, inbound=mulaw_b64_frames(4.0))[:-1]  # no stop
    async with connect(ws_url(svc, PATH)) as ws:
        for m in msgs:
            await ws.send(m)
        await asyncio.sleep(0.3)
        await svc.drain()
        with pytest.raises(ConnectionClosed):
            for _ in range(10):
                await ws.send(msgs[-1])
                await asyncio.sleep(0.05)
        assert ws.close_code == 1001
    (s,) = await summaries(redis_client, f"{call}:{stream}")
    assert s["summary"]["end_reason"] == "shutdown" and s["summary"]["windows_scored"] >= 1


async def test_signature_valid_wrong_and_stale(make_service, redis_client):
    svc = await service(make_service, auth_token=TOKEN, secondary_auth_token="old-" + TOKEN)
    url = ws_url(svc, PATH)
    signed_url = f"wss://127.0.0.1:{svc.port}{PATH}"
    assert await handshake_status(url) == 403  # missing header
    assert await handshake_status(url, {"X-Twilio-Signature": sign("x" * 32, signed_url)}) == 403
    stale = [f"wss://old-host.example.com{PATH}",  # signed for another host
             f"https://127.0.0.1:{svc.port}{PATH}",  # https:// instead of wss://
             f"wss://127.0.0.1:{svc.port}{PATH}/other"]
    for other in stale:
        assert await handshake_status(url, {"X-Twilio-Signature": sign(TOKEN, other)}) == 403
    assert await handshake_status(url, {"X-Twilio-Signature": sign(TOKEN, signed_url)}) == 101
    # Twilio's validators also accept the URL without its port, and the secondary token
    no_port = f"wss://127.0.0.1{PATH}"
    assert await handshake_status(url, {"X-Twilio-Signature": sign(TOKEN, no_port)}) == 101
    assert await handshake_status(
        url, {"X-Twilio-Signature": sign("old-" + TOKEN, signed_url)}) == 101
    # a refused upgrade never starts a call
    assert not [d for d in alerts(redis_client) if d["source"]["gateway"] == "twilio"]
    call, stream = sid("CA", 6), sid("MZ", 6)
    _, code, _ = await play(url, conversation(call, stream, inbound=mulaw_b64_frames(3.0)),
                            headers={"X-Twilio-Signature": sign(TOKEN, signed_url)})
    assert code == 1000 and await summaries(redis_client, f"{call}:{stream}")


async def test_signature_over_configured_public_url(make_service):
    public = "wss://media.example.com/twilio/stream"
    svc = await service(make_service, auth_token=TOKEN, public_url=public)
    url = ws_url(svc, PATH)
    assert await handshake_status(url, {"X-Twilio-Signature": sign(TOKEN, public)}) == 101
    local = f"wss://127.0.0.1:{svc.port}{PATH}"
    assert await handshake_status(url, {"X-Twilio-Signature": sign(TOKEN, local)}) == 403


async def test_auth_required_without_token_fails_at_start(make_service):
    with pytest.raises(ConfigError, match="gateways.twilio.auth_token"):
        await service(make_service, auth="required")
    with pytest.raises(ConfigError, match="public_url"):
        await service(make_service, public_url="https://example.com/x")


async def test_webhooks_shared_key_signatures(make_service, redis_client):
    """A Webhooks Rule signs with a shared key and says so in a settings header."""
    key = "shared-key-secret-0f1e2d3c4b5a6978"
    svc = await service(make_service, auth_token=TOKEN, shared_key_secret=key,
                        secondary_shared_key_secret="old-" + key)
    url = ws_url(svc, PATH)
    signed_url = f"wss://127.0.0.1:{svc.port}{PATH}"

    def headers(secret, algorithm="HMAC_SHA256", digest=hashlib.sha256, settings=True):
        h = {"X-Twilio-Signature": sign(secret, signed_url, digest)}
        if settings:
            h["X-Twilio-Webhooks-Signature-Settings"] = f"key=KS0123,algorithm={algorithm}"
        return h

    assert await handshake_status(url, headers(key)) == 101
    assert await handshake_status(url, headers("old-" + key)) == 101
    assert await handshake_status(url, headers(key, "hmac_sha1", hashlib.sha1)) == 101
    # the settings header decides the secret: the auth token does not sign shared-key upgrades
    assert await handshake_status(url, headers(TOKEN)) == 403
    assert await handshake_status(url, headers(key, settings=False)) == 403
    assert await handshake_status(url, headers(key, "HMAC_SHA1")) == 403  # wrong algorithm
    assert await handshake_status(url, headers(key, "HMAC_MD5", hashlib.md5)) == 403
    # no settings header: the auth token and HMAC-SHA1, as before
    assert await handshake_status(url, headers(TOKEN, digest=hashlib.sha1,
                                               settings=False)) == 101
    call, stream = sid("CA", 8), sid("MZ", 8)
    _, code, _ = await play(url, conversation(call, stream, inbound=mulaw_b64_frames(3.0)),
                            headers=headers(key))
    assert code == 1000 and await summaries(redis_client, f"{call}:{stream}")


async def test_shared_key_alone_or_auth_token_alone(make_service):
    key = "shared-key-secret-0f1e2d3c4b5a6978"
    svc = await service(make_service, auth="required", shared_key_secret=key)
    url, signed_url = ws_url(svc, PATH), f"wss://127.0.0.1:{svc.port}{PATH}"
    settings = {"X-Twilio-Webhooks-Signature-Settings": "key=KS1,algorithm=HMAC_SHA256"}
    assert await handshake_status(url, {"X-Twilio-Signature": sign(
        key, signed_url, hashlib.sha256), **settings}) == 101
    # an auth-token signature cannot be checked without the auth token
    assert await handshake_status(url, {"X-Twilio-Signature": sign(TOKEN, signed_url)}) == 403
    svc2 = await service(make_service, auth_token=TOKEN)
    assert await handshake_status(ws_url(svc2, PATH), {"X-Twilio-Signature": sign(
        key, f"wss://127.0.0.1:{svc2.port}{PATH}", hashlib.sha256), **settings}) == 403


def test_signature_settings_header_parsing():
    assert parse_signature_settings("key=KS1,algorithm=HMAC_SHA256") == ("KS1", "HMAC_SHA256")
    assert parse_signature_settings(" algorithm = hmac_sha256 , key = KS2 ") == (
        "KS2", "HMAC_SHA256")
    assert parse_signature_settings("key=") == (None, "HMAC_SHA1")
    assert parse_signature_settings("") == (None, "HMAC_SHA1")


def test_signature_url_variants():
    assert signature_urls("wss://h.example.com/p") == [
        "wss://h.example.com/p", "wss://h.example.com:443/p"]
    assert signature_urls("wss://h.example.com:8443/p?a=1") == [
        "wss://h.example.com:8443/p?a=1", "wss://h.example.com/p?a=1"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=8)
messages = st.fixed_dictionaries(
    {"event": st.sampled_from(["start", "media", "stop", "dtmf", "mark", 3, None])},
    optional={"sequenceNumber": st.one_of(st.text(max_size=4), st.integers()),
              "streamSid": json_values,
              "start": st.fixed_dictionaries({}, optional={
                  "callSid": json_values, "streamSid": json_values, "tracks": json_values,
                  "customParameters": json_values, "mediaFormat": json_values}),
              "media": st.fixed_dictionaries({}, optional={
                  "track": st.sampled_from(["inbound", "outbound", "both", 1]),
                  "chunk": json_values, "payload": st.text(max_size=12)})})


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(messages.map(json.dumps), st.text(max_size=40), st.binary(max_size=40)))
def test_parser_fuzz_raises_only_protocol_errors(text):
    try:
        parse_message(text, 4096)
    except ProtocolError as err:
        assert err.code in ("bad_json", "bad_message", "unsupported_format", "frame_too_large")
