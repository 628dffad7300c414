"""FreeSWITCH mod_audio_fork / mod_audio_stream gateway: metadata frame, L16, mix types, auth."""

import base64
import json

import numpy as np
import pytest
from gwsupport import (
    FUZZ_EXAMPLES,
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
from nes2net_gateways.freeswitch import parse_metadata, parse_rate
from websockets.asyncio.client import connect

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/freeswitch"
FORK = ["audio.drachtio.org"]
USER, PASSWORD = "fs", "fork-password-0123456789"
UUID = "7dd5e34e-5db4-4edb-a166-757e5d29b941"


def basic(user=USER, password=PASSWORD):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def service(make_service, **section):
    cfg = {"enabled": True, "path": PATH, "username": USER, "password": PASSWORD, **section}
    return await make_service(gateways={"freeswitch": cfg})


async def test_audio_fork_stereo_16k_with_json_metadata(make_service, redis_client):
    """uuid_audio_fork <uuid> start <url> stereo 16k {"callId": ..., ...}; stop {"bye": 1}."""
    svc = await service(make_service, score_agent=True)
    caller, callee = speech(6.0, 16000, seed=1), np.zeros(16000 * 6, np.float32)
    meta = {"callId": UUID, "mixType": "stereo", "sampleRate": 16000, "from": "2061236666",
            "to": "6173333456", "agentId": "42"}
    audio = chunks(pcm16(np.stack([caller, callee], axis=1)), 1280)  # 20 ms stereo frames
    # send_text mid-call: an update of the custom metadata (the agent changed, an account
    # was found), and text that is no update (ignored)
    update = json.dumps({"type": "update", "metadata": {"agentId": "43", "account": "A-1"}})
    msgs = [json.dumps(meta), *audio[:100], "dtmf 5", update, *audio[100:],
            json.dumps({"bye": 1})]
    _, code, _ = await play(ws_url(svc, PATH), msgs, headers=basic(), subprotocols=FORK,
                            close=True)
    found = await summaries(redis_client, UUID, n=2)
    by = {d["channel"]: d for d in found}
    assert set(by) == {"caller", "agent"}
    assert by["caller"]["summary"]["windows_scored"] >= 1
    assert by["agent"]["summary"]["windows_scored"] == 0  # silence: the channels are not mixed
    assert all(d["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05) for d in found)
    assert by["caller"]["summary"]["end_reason"] == "stop"
    assert by["caller"]["metadata"] == {"provider": "freeswitch", "provider_call_id": UUID,
                                        "ani": "2061236666", "dnis": "6173333456",
                                        "custom": {"callId": UUID, "agentId": "43",
                                                   "account": "A-1"}}


async def test_stereo_customer_on_the_right(make_service, redis_client):
    svc = await service(make_service, stereo_customer_channel="right", mix_type="stereo",
                        sample_rate=16000)
    left, right = np.zeros(16000 * 5, np.float32), speech(5.0, 16000, seed=2)
    msgs = [UUID, *chunks(pcm16(np.stack([left, right], axis=1)), 1280)]  # plain-text uuid
    await play(ws_url(svc, PATH), msgs, headers=basic(), subprotocols=FORK, close=True)
    (s,) = await summaries(redis_client, UUID)
    assert s["channel"] == "caller" and s["summary"]["windows_scored"] >= 1
    assert s["metadata"] == {"provider": "freeswitch", "provider_call_id": UUID}


async def test_audio_stream_no_metadata_token_mixed(make_service, redis_client):
    """mod_audio_stream: no subprotocol, token in the URL, audio first, JSON text mid-stream."""
    token = "stream-token-0123456789"
    svc = await service(make_service, username="", password="", token=token,
                        mix_type="mixed", sample_rate=8000)
    x = speech(5.0, 8000, seed=3)
    audio = chunks(pcm16(x), 1600)  # STREAM_BUFFER_SIZE=100 ms
    msgs = [*audio[:10], json.dumps({"event": "note"}), *audio[10:]]
    await play(ws_url(svc, PATH, f"token={token}"), msgs, close=True)
    (s,) = await summaries(redis_client, None)
    assert s["call_id"].startswith("freeswitch-") and s["metadata"] == {
        "provider": "freeswitch", "mixed": True}
    # little-endian L16: the same windows as pcm_s16le over the generic protocol
    ref = await reference_scores(svc, x, 8000)
    assert await window_scores(redis_client, s["call_id"]) == pytest.approx(ref, abs=1e-4)


async def test_plain_text_metadata_kept(make_service, redis_client):
    svc = await service(make_service)
    await play(ws_url(svc, PATH), ["caller from queue 7", *chunks(pcm16(speech(3.0, 8000)),
                                                                   320)],
               headers=basic(), close=True)
    (s,) = await summaries(redis_client, None)
    assert s["metadata"]["custom"] == {"text": "caller from queue 7"}


async def test_rate_and_duration_limits(make_service, redis_client):
    svc = await make_service(
        gateways={"freeswitch": {"enabled": True, "path": PATH, "auth": "off"}},
        limits={"max_realtime_factor": 1.0, "realtime_burst_s": 1.0})
    _, code, reason = await play(ws_url(svc, PATH), ["fast", *chunks(pcm16(speech(
        6.0, 8000)), 320)])
    assert (code, reason) == (4429, "rate_limited")
    (s,) = await summaries(redis_client, "fast")
    assert s["summary"]["end_reason"] == "error"


async def test_basic_auth(make_service, redis_client):
    svc = await service(make_service)
    url = ws_url(svc, PATH)
    assert await handshake_status(url, subprotocols=FORK) == 401
    assert await handshake_status(url, basic(password="wrong"), FORK) == 401
    assert await handshake_status(url, basic(user="other"), FORK) == 401
    assert await handshake_status(url, {"Authorization": "Basic %%%"}, FORK) == 401
    assert await handshake_status(url, basic(), FORK) == 101
    async with connect(url, additional_headers=basic(), subprotocols=FORK) as ws:
        assert ws.subprotocol == "audio.drachtio.org"
    assert redis_client.xlen("nes2net:alerts") == 0
    with pytest.raises(ConfigError, match="gateways.freeswitch.username"):
        await make_service(gateways={"freeswitch": {"enabled": True, "auth": "required"}})
    with pytest.raises(ConfigError, match="set both"):
        await make_service(gateways={"freeswitch": {"enabled": True, "username": "u"}})


@pytest.mark.parametrize("case,close", [
    ("odd_stereo", 4400), ("bad_json", 4400), ("mix", 4415), ("rate", 4415),
    ("huge", 4413), ("bad_call_id", 4400), ("bad_update", 4400),
])
async def test_bad_input(make_service, case, close):
    svc = await service(make_service)
    bad = {
        "odd_stereo": [json.dumps({"mixType": "stereo"}), b"\x00" * 6],
        "bad_json": ["{oops"],
        "mix": [json.dumps({"mixType": "quad"})],
        "rate": [json.dumps({"sampleRate": "fast"})],
        "huge": [UUID, b"\x00" * 70_000],
        "bad_call_id": [json.dumps({"callId": "has spaces in it"})],
        "bad_update": [UUID, b"\x00" * 320, json.dumps({"type": "update", "metadata": 7})],
    }[case]
    _, code, reason = await play(ws_url(svc, PATH), bad, headers=basic(), subprotocols=FORK)
    assert code == close and reason


def test_metadata_forms():
    kw = {"mix_type": "mono", "sample_rate": 8000, "call_id_keys": ("callId", "uuid")}
    info = parse_metadata('{"uuid": "abc", "sample_rate": "16k", "mix_type": "mixed"}', 4096,
                          **kw)
    assert (info.call_id, info.sample_rate, info.mix_type) == ("abc", 16000, "mixed")
    assert parse_metadata("", 4096, **kw).custom == {}
    assert parse_rate("8k") == 8000 and parse_rate(24000) == 24000
    with pytest.raises(ProtocolError):
        parse_metadata("plain", 4096, json_only=True, **kw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=8)
metas = st.fixed_dictionaries({}, optional={
    "callId": json_values, "mixType": st.sampled_from(["mono", "mixed", "stereo", "x", 3]),
    "sampleRate": st.one_of(st.sampled_from(["8k", "16k", "16000", "k"]), json_values),
    "from": json_values})


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(metas.map(json.dumps), st.text(max_size=40)), st.booleans())
def test_parser_fuzz_raises_only_protocol_errors(text, json_only):
    try:
        parse_metadata(text, 4096, mix_type="mono", sample_rate=8000,
                       call_id_keys=("callId",), json_only=json_only)
    except ProtocolError as err:
        assert err.code in ("bad_json", "bad_message", "unsupported_format", "frame_too_large")
