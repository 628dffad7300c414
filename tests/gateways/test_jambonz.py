"""jambonz ``listen`` gateway: the documented first JSON frame, L16 audio, wsAuth, DTMF frames."""

import asyncio
import base64
import json

import numpy as np
import pytest
from gwsupport import (
    FUZZ_EXAMPLES,
    alerts,
    chunks,
    handshake_status,
    pcm16,
    play,
    speech,
    summaries,
    ws_url,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nes2net_gateways.freeswitch import parse_metadata
from nes2net_gateways.jambonz import JambonzGateway
from websockets.asyncio.client import connect

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/jambonz"
PROTO = ["audio.jambonz.org"]
USER, PASSWORD = "jambonz", "ws-auth-password-0123456789"
SID = "9d5e3a2b-0c4f-4c1e-8f7a-0123456789ab"


def basic(user=USER, password=PASSWORD):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def first_frame(rate=16000, mix="stereo", **extra):
    """Call attributes as on a jambonz webhook, sampleRate, mixType and the verb's metadata."""
    return json.dumps({"sampleRate": rate, "mixType": mix, "callSid": SID,
                       "direction": "inbound", "from": "+15083084809", "to": "+15083728299",
                       "callId": "f0414693-bdb3-1239-abc3-0242ac130002", "sipStatus": 200,
                       "callStatus": "in-progress", "accountSid": "bb845d4b-83a9-4cde-a6e9",
                       "applicationSid": "0e0681b9-c0f4-4c4d-8f4d", **extra})


async def service(make_service, **section):
    cfg = {"enabled": True, "path": PATH, "username": USER, "password": PASSWORD, **section}
    return await make_service(gateways={"jambonz": cfg})


async def test_documented_listen_stereo(make_service, redis_client):
    svc = await service(make_service)
    caller, callee = speech(6.0, 16000, seed=1), speech(6.0, 16000, seed=2)
    audio = chunks(pcm16(np.stack([caller, callee], axis=1)), 1280)
    dtmf = json.dumps({"event": "dtmf", "dtmf": "5", "duration": 1600})
    msgs = [first_frame(campaign="spring"), *audio[:50], dtmf, *audio[50:]]
    _, code, _ = await play(ws_url(svc, PATH), msgs, headers=basic(), subprotocols=PROTO,
                            close=True)
    (s,) = await summaries(redis_client, SID)
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
    assert s["source"]["gateway"] == "jambonz"
    meta = s["metadata"]
    assert meta["provider"] == "jambonz" and meta["provider_call_id"] == SID
    assert (meta["ani"], meta["dnis"]) == ("+15083084809", "+15083728299")
    assert meta["custom"]["campaign"] == "spring" and meta["custom"]["direction"] == "inbound"
    assert "sampleRate" not in meta["custom"] and "mixType" not in meta["custom"]


async def test_mono_24k_and_subprotocol(make_service, redis_client):
    svc = await service(make_service)
    async with connect(ws_url(svc, PATH), additional_headers=basic(),
                       subprotocols=PROTO) as ws:
        assert ws.subprotocol == "audio.jambonz.org"
        await ws.send(first_frame(24000, "mono"))
        for c in chunks(pcm16(speech(5.0, 24000, seed=3)), 960):
            await ws.send(c)
    (s,) = await summaries(redis_client, SID)
    assert s["summary"]["duration_s"] == pytest.approx(5.0, abs=0.05)
    assert s["summary"]["windows_scored"] >= 1


@pytest.mark.parametrize("msgs,close", [
    (["not json"], 4400), ([b"\x00" * 320], 4400), ([first_frame(mix="quad")], 4415),
    ([first_frame(mix="stereo"), b"\x00" * 2], 4400),
])
async def test_bad_input(make_service, msgs, close):
    svc = await service(make_service)
    _, code, reason = await play(ws_url(svc, PATH), msgs, headers=basic(), subprotocols=PROTO)
    assert code == close and reason


async def test_ws_auth(make_service, redis_client):
    svc = await service(make_service)
    url = ws_url(svc, PATH)
    assert await handshake_status(url, subprotocols=PROTO) == 401
    assert await handshake_status(url, basic(password="nope"), PROTO) == 401
    await asyncio.sleep(0.2)
    assert alerts(redis_client) == []
    with pytest.raises(ConfigError, match="gateways.jambonz.username"):
        await make_service(gateways={"jambonz": {"enabled": True, "auth": "required"}})


metas = st.fixed_dictionaries({}, optional={
    "callSid": st.one_of(st.text(max_size=10), st.integers(), st.none()),
    "mixType": st.sampled_from(["mono", "mixed", "stereo", "x", 3]),
    "sampleRate": st.one_of(st.integers(), st.text(max_size=5), st.none()),
    "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)})


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(metas.map(json.dumps), st.text(max_size=40)))
def test_first_frame_fuzz_raises_only_protocol_errors(text):
    try:
        parse_metadata(text, 4096, mix_type="mono", sample_rate=8000,
                       call_id_keys=JambonzGateway.call_id_keys, json_only=True)
    except ProtocolError as err:
        assert err.code in ("bad_json", "bad_message", "unsupported_format", "frame_too_large")
