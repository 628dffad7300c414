"""Bandwidth media streams gateway: documented messages over loopback, token auth, bad input."""

import asyncio
import base64
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
from nes2net_gateways.bandwidth import BandwidthMedia, BandwidthStart, parse_message

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/bandwidth"
TOKEN = "BandwidthStreamToken0123456789"
ACCOUNT = "9900000"
CALL = "c-2a913f94-7fa91773-a426-4e8d-a9e6-a5ad8d5a1c5b"
STREAM = "s-2a913f94-93b8-4fd8-b6b5-f1cbb1d5e4f6"
PCMU = {"encoding": "audio/PCMU", "sampleRate": 8000}


def metadata(call=CALL, stream=STREAM, tracks=("inbound",), fmt=PCMU):
    return {"accountId": ACCOUNT, "callId": call, "streamId": stream,
            "streamName": "live_audience",
            "tracks": [{"name": t, "mediaFormat": fmt} for t in tracks]}


def conversation(inbound, *, outbound=None, params=None, call=CALL, stream=STREAM,
                 fmt=PCMU, stop=True):
    """start, media per track, stop: the packet format of Bandwidth's <StartStream> page."""
    tracks = ("inbound", "outbound") if outbound else ("inbound",)
    meta = metadata(call, stream, tracks, fmt)
    start = {"eventType": "start", "metadata": meta}
    if params is not None:
        start["streamParams"] = params
    msgs = [start]
    for i, payload in enumerate(inbound):
        pairs = [("inbound", payload)] + ([("outbound", outbound[i])] if outbound else [])
        msgs += [{"eventType": "media", "track": t, "payload": p} for t, p in pairs]
    if stop:
        msgs.append({"eventType": "stop", "metadata": meta})
    return [json.dumps(m) for m in msgs]


async def service(make_service, **section):
    return await make_service(gateways={"bandwidth": {"enabled": True, "path": PATH,
                                                      **section}})


async def test_both_tracks_with_token_in_stream_params(make_service, redis_client):
    svc = await service(make_service, token=TOKEN, score_agent=True)
    msgs = conversation(mulaw_b64_frames(6.0, seed=1), outbound=mulaw_b64_frames(6.0, seed=2),
                        params={"internal_id": "call_ABC", "token": TOKEN})
    _, code, _ = await play(ws_url(svc, PATH), msgs)
    assert code == 1000
    found = await summaries(redis_client, f"{CALL}:{STREAM}", n=2)
    assert {d["channel"] for d in found} == {"caller", "agent"}
    for d in found:
        assert d["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
        assert d["summary"]["end_reason"] == "stop" and d["summary"]["windows_scored"] >= 1
        assert d["source"]["gateway"] == "bandwidth"
        # the token is never published
        assert d["metadata"] == {"provider": "bandwidth", "provider_call_id": CALL,
                                 "provider_stream_id": STREAM, "account_id": ACCOUNT,
                                 "custom": {"internal_id": "call_ABC",
                                            "streamName": "live_audience"}}
    assert TOKEN not in json.dumps(alerts(redis_client))


async def test_customer_track_outbound_and_close_without_stop(make_service, redis_client):
    svc = await service(make_service, customer_track="outbound", stream_in_call_id=False)
    silence = [base64.b64encode(b"\xff" * 160).decode()] * 250
    msgs = conversation(silence, outbound=mulaw_b64_frames(5.0), call="c-out", stop=False)
    await play(ws_url(svc, PATH), msgs, close=True)
    (s,) = await summaries(redis_client, "c-out")
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "disconnect"
    assert s["summary"]["speech_s"] > 3.0 and s["summary"]["windows_scored"] >= 1


async def test_token_in_query_or_stream_params(make_service, redis_client):
    svc = await service(make_service, token=TOKEN)
    frames = mulaw_b64_frames(2.0)
    assert await handshake_status(ws_url(svc, PATH, "token=wrong")) == 401
    await play(ws_url(svc, PATH, f"token={TOKEN}"), conversation(frames, call="c-q"))
    assert await summaries(redis_client, f"c-q:{STREAM}")
    for i, params in enumerate([None, {"internal_id": "1"}, {"token": "wrong"}, {"token": ""}]):
        _, code, reason = await play(ws_url(svc, PATH), conversation(
            frames, call=f"c-x{i}", params=params))
        assert (code, reason) == (4401, "unauthorized")
    await asyncio.sleep(0.3)
    assert not [d for d in alerts(redis_client) if d["call_id"].startswith("c-x")]
    with pytest.raises(ConfigError, match="gateways.bandwidth.token"):
        await service(make_service, auth="required")


@pytest.mark.parametrize("case,close", [
    ("format", 4415), ("rate", 4415), ("media_first", 4400), ("binary", 4400),
    ("unlisted_track", 4400), ("bad_json", 4400), ("no_call", 4400), ("no_tracks", 4400),
    ("bad_payload", 4400), ("start_twice", 4400), ("huge", 4413),
])
async def test_bad_input_closes_that_call_only(make_service, redis_client, case, close):
    svc = await service(make_service)
    good = asyncio.create_task(play(ws_url(svc, PATH), conversation(
        mulaw_b64_frames(4.0), call="c-good")))
    msgs = conversation(mulaw_b64_frames(0.5), call="c-bad")
    start, media = json.loads(msgs[0]), json.loads(msgs[1])
    meta = start["metadata"]
    bad = {
        "format": [json.dumps({**start, "metadata": metadata(fmt={"encoding": "audio/opus"})})],
        "rate": [json.dumps({**start, "metadata": metadata(
            fmt={"encoding": "audio/PCMU", "sampleRate": 16000})})],
        "media_first": [msgs[1]],
        "binary": [msgs[0], b"\x00" * 160],
        "unlisted_track": [msgs[0], json.dumps({**media, "track": "outbound"})],
        "bad_json": [msgs[0], "{]"],
        "no_call": [json.dumps({**start, "metadata": {**meta, "callId": None}})],
        "no_tracks": [json.dumps({**start, "metadata": {**meta, "tracks": []}})],
        "bad_payload": [msgs[0], json.dumps({**media, "payload": "%%%"})],
        "start_twice": [msgs[0], msgs[0]],
        "huge": [msgs[0], json.dumps({"eventType": "x", "pad": "y" * 20_000})],
    }[case]
    _, code, reason = await play(ws_url(svc, PATH), bad)
    assert code == close and reason
    _, good_code, _ = await good
    assert good_code == 1000
    (ok,) = await summaries(redis_client, f"c-good:{STREAM}")
    assert ok["summary"]["end_reason"] == "stop"


def test_parser_reads_the_documented_messages():
    msgs = conversation(mulaw_b64_frames(0.1), outbound=mulaw_b64_frames(0.1),
                        params={"internal_id": "call_ABC"})
    start, media, *_ = (parse_message(m, 4096) for m in msgs)
    assert isinstance(start, BandwidthStart)
    assert (start.call_id, start.stream_id, start.account_id, start.stream_name) == (
        CALL, STREAM, ACCOUNT, "live_audience")
    assert start.tracks == ("inbound", "outbound") and start.params == {"internal_id": "call_ABC"}
    assert isinstance(media, BandwidthMedia) and media.track == "inbound"
    assert len(media.payload) == 160
    assert parse_message(msgs[-1], 4096).event == "stop"
    # the encoding's case and a format-less track are accepted
    low = metadata(fmt={"encoding": "audio/pcmu", "sampleRate": "8000"})
    assert parse_message(json.dumps({"eventType": "start", "metadata": low}), 4096).tracks
    bare = {**metadata(), "tracks": [{"name": "inbound"}]}
    assert parse_message(json.dumps({"eventType": "start", "metadata": bare}), 4096).tracks


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=8)
tracks = st.lists(st.fixed_dictionaries(
    {"name": st.sampled_from(["inbound", "outbound", "both", 1])},
    optional={"mediaFormat": st.one_of(json_values, st.fixed_dictionaries(
        {"encoding": st.sampled_from(["audio/PCMU", "audio/pcma", 3])},
        optional={"sampleRate": st.sampled_from([8000, "8000", 16000, -1])}))}), max_size=3)
messages = st.fixed_dictionaries(
    {"eventType": st.sampled_from(["start", "media", "stop", "x", 3, None])},
    optional={"sequenceNumber": json_values, "track": st.sampled_from(["inbound", "x", 1]),
              "payload": st.text(max_size=12), "streamParams": json_values,
              "metadata": st.one_of(json_values, st.fixed_dictionaries({}, optional={
                  "callId": json_values, "streamId": json_values, "accountId": json_values,
                  "streamName": json_values, "tracks": st.one_of(tracks, json_values)}))})


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(messages.map(json.dumps), st.text(max_size=40), st.binary(max_size=40)))
def test_parser_fuzz_raises_only_protocol_errors(text):
    try:
        m = parse_message(text, 4096)
    except ProtocolError as err:
        assert err.code in ("bad_json", "bad_message", "unsupported_format", "frame_too_large")
    else:
        if isinstance(m, BandwidthStart):
            assert m.call_id and m.stream_id and set(m.tracks) <= {"inbound", "outbound"}
            assert all(isinstance(v, str) for v in m.params.values())
