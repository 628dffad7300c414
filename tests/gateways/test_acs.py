"""Azure Communication Services gateway: documented messages over loopback, JWT auth, roles."""

import asyncio
import base64
import json
import time

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from gwsupport import (
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
from nes2net_gateways.acs import ISSUER
from nes2net_gateways.acs_participants import ParticipantChannels
from nes2net_gateways.jwks import JwksKeys, parse_jwks

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/acs"
CONNECTION = "6d09449c-6677-4f91-8cb7-012c338e6ec1"
CORRELATION = "a1b2c3d4-0000-4f91-8cb7-012c338e6ec1"
SUBSCRIPTION = "89e8cb59-b991-48b0-b154-1db84f16a077"
CUSTOMER = "4:+14255550123"
AGENT = "8:acs:3d20e1de-0f28-41c5-84c0-5fc8f2a8a1b2_00000020-7a3c-4f6e"
AUDIENCE = "3a0b5a8e-1f2d-4c3b-9a8e-7d6c5b4a3f21"
HEADERS = {"x-ms-call-connection-id": CONNECTION, "x-ms-call-correlation-id": CORRELATION}


def metadata_msg(rate=16000, encoding="PCM", sub=SUBSCRIPTION):
    return json.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": sub, "encoding": encoding, "sampleRate": rate, "channels": 1,
        "length": rate // 25}})


def audio_msgs(x, rate, participant=None, *, silent_every=0):
    """AudioData messages of 20 ms each, as Call Automation sends them."""
    out = []
    for i, c in enumerate(chunks(pcm16(x), rate // 25)):
        data = {"timestamp": f"2024-11-15T19:16:{12 + i // 50:02d}.{(i % 50) * 20:03d}Z",
                "data": base64.b64encode(c).decode(),
                "silent": bool(silent_every and i % silent_every == 0)}
        if participant is not None:
            data["participantRawID"] = participant
        out.append(json.dumps({"kind": "AudioData", "audioData": data}))
    return out


async def service(make_service, **section):
    return await make_service(gateways={"acs": {"enabled": True, "path": PATH, **section}})


async def test_unmixed_customer_and_agent(make_service, redis_client):
    svc = await service(make_service, score_agent=True)
    rate = 16000
    x, y = speech(6.0, rate, seed=1), speech(6.0, rate, seed=2)
    caller, agent = audio_msgs(x, rate, CUSTOMER), audio_msgs(y, rate, AGENT)
    # the agent speaks first: the PSTN participant is still the customer
    msgs = [metadata_msg(rate)] + [m for pair in zip(agent, caller, strict=True) for m in pair]
    msgs.insert(5, json.dumps({"kind": "DtmfData", "dtmfData": {"data": "5"}}))
    _, code, _ = await play(ws_url(svc, PATH, "crm_case=77"), msgs, headers=HEADERS, close=True)
    call_id = f"{CONNECTION}:{SUBSCRIPTION}"
    found = await summaries(redis_client, call_id, n=2)
    assert {d["channel"] for d in found} == {"caller", "agent"}
    s = next(d for d in found if d["channel"] == "caller")
    assert s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
    assert s["source"]["gateway"] == "acs"
    assert s["metadata"] == {
        "provider": "acs", "provider_call_id": CONNECTION, "provider_stream_id": SUBSCRIPTION,
        "ani": "+14255550123",
        "custom": {"crm_case": "77", "correlation_id": CORRELATION,
                   "participants": {"agent": AGENT, "caller": CUSTOMER}}}
    # the customer's windows are those of the same audio over the generic protocol
    ref = await reference_scores(svc, x, rate)
    assert await window_scores(redis_client, call_id) == pytest.approx(ref, abs=1e-4)


async def test_mixed_24k_stream_without_headers(make_service, redis_client):
    svc = await service(make_service, stream_in_call_id=False)
    rate = 24000
    x = speech(5.0, rate, seed=3)
    msgs = [metadata_msg(rate)] + audio_msgs(x, rate, silent_every=7)
    await play(ws_url(svc, PATH), msgs, close=True)
    (s,) = await summaries(redis_client, SUBSCRIPTION)  # no header: the subscription names it
    assert s["channel"] == "caller" and s["metadata"]["mixed"] is True
    assert s["summary"]["duration_s"] == pytest.approx(5.0, abs=0.05)
    # 24 kHz is not a rate of the generic protocol: no reference, but every window scored
    got = await window_scores(redis_client, SUBSCRIPTION)
    assert len(got) == s["summary"]["windows_scored"] >= 1


async def test_customer_named_in_url(make_service, redis_client):
    svc = await service(make_service)
    x = speech(5.0, 16000, seed=4)
    teams_customer = "8:orgid:2b7c9d1e-5f3a-4b6c-8d9e-0f1a2b3c4d5e"
    msgs = [metadata_msg()] + [m for pair in zip(
        audio_msgs(speech(5.0, 16000, seed=5), 16000, CUSTOMER),
        audio_msgs(x, 16000, teams_customer), strict=True) for m in pair]
    await play(ws_url(svc, PATH, f"customer={teams_customer}"), msgs, headers=HEADERS,
               close=True)
    (s,) = await summaries(redis_client, f"{CONNECTION}:{SUBSCRIPTION}")
    assert s["metadata"]["custom"]["participants"] == {"agent": CUSTOMER,
                                                       "caller": teams_customer}
    assert "ani" not in s["metadata"] and "customer" not in s["metadata"]["custom"]
    ref = await reference_scores(svc, x, 16000)
    got = await window_scores(redis_client, f"{CONNECTION}:{SUBSCRIPTION}")
    assert got == pytest.approx(ref, abs=1e-4)


async def test_third_participant_opens_its_channel_when_heard(make_service, redis_client):
    """A supervisor joining 3 s in gets a channel of its own from then on, on the call's clock;
    the fourth role, never heard, gets no summary."""
    svc = await service(make_service, score_agent=True)
    rate = 16000
    x, y, z = (speech(s, rate, seed=k) for s, k in ((8.0, 11), (8.0, 12), (5.0, 13)))
    caller, agent, third = (audio_msgs(x, rate, CUSTOMER), audio_msgs(y, rate, AGENT),
                            audio_msgs(z, rate, "8:orgid:supervisor"))
    msgs = [metadata_msg(rate)]
    for i, pair in enumerate(zip(caller, agent, strict=True)):
        msgs.extend(pair)
        if i >= 150 and i - 150 < len(third):  # from 3 s on (20 ms packets)
            msgs.append(third[i - 150])
    await play(ws_url(svc, PATH), msgs, headers=HEADERS, close=True)
    call_id = f"{CONNECTION}:{SUBSCRIPTION}"
    await summaries(redis_client, call_id, n=3)
    await asyncio.sleep(0.3)  # no fourth summary follows
    found = await summaries(redis_client, call_id, n=3)
    assert sorted(d["channel"] for d in found) == ["agent", "caller", "participant_3"]
    s3 = next(d for d in found if d["channel"] == "participant_3")
    assert s3["metadata"]["custom"]["participants"]["participant_3"] == "8:orgid:supervisor"
    assert s3["summary"]["windows_scored"] >= 1
    assert s3["summary"]["duration_s"] == pytest.approx(8.0, abs=0.05)  # 3 s + its 5 s
    # its windows score like the same audio over the generic protocol, at call times
    ref = await reference_scores(svc, z, rate)
    got = await window_scores(redis_client, call_id, channel="participant_3")
    assert got == pytest.approx(ref, abs=1e-4)
    windows = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:scores")]
    starts = [d["window"]["start_s"] for d in windows
              if d["call_id"] == call_id and d["channel"] == "participant_3"]
    assert starts and min(starts) >= 3.0 - 0.05


async def test_a_fifth_participant_and_unknown_kinds_are_counted(make_service, redis_client):
    svc = await service(make_service, score_agent=True)
    rate = 16000
    ids = [CUSTOMER, AGENT, "8:orgid:a", "8:orgid:b", "28:bot"]
    msgs = [metadata_msg(rate)]
    for k, who in enumerate(ids):
        msgs += audio_msgs(speech(1.0, rate, seed=20 + k), rate, who)
    msgs.append(json.dumps({"kind": "SomethingNew", "somethingNew": {}}))
    await play(ws_url(svc, PATH), msgs, headers=HEADERS, close=True)
    found = await summaries(redis_client, f"{CONNECTION}:{SUBSCRIPTION}", n=4)
    assert sorted(s["channel"] for s in found) == ["agent", "caller", "participant_3",
                                                   "participant_4"]
    value = svc.ctx.metrics.registry.get_sample_value
    assert value("nes2net_acs_ignored_total", {"reason": "participant"}) == 1
    assert value("nes2net_acs_ignored_total", {"reason": "unknown_kind"}) == 1


def test_participant_channels():
    p = ParticipantChannels("caller", ["4:"], None)
    assert p.channel_of("8:acs:a") == ("agent", True)
    assert p.channel_of("8:acs:a") == ("agent", False)
    assert p.channel_of("4:+1555") == ("caller", True)
    assert p.channel_of("4:+1666") == ("participant_3", True)  # a second number
    assert p.channel_of("8:orgid:sup") == ("participant_4", True)
    assert p.channel_of("28:bot") == (None, True) and p.dropped == 1  # a fifth
    assert p.channel_of("28:bot") == (None, False) and p.dropped == 1
    assert p.metadata["ani"] == "+1555"
    assert p.metadata["custom"]["participants"] == {
        "agent": "8:acs:a", "caller": "4:+1555", "participant_3": "4:+1666",
        "participant_4": "8:orgid:sup"}
    with pytest.raises(ProtocolError, match="mixed and unmixed"):
        p.channel_of(None)
    m = ParticipantChannels("caller", ["4:"], None)
    assert m.channel_of(None) == ("caller", True) and m.metadata == {"mixed": True}
    with pytest.raises(ProtocolError):
        m.channel_of(CUSTOMER)


# --------------------------------------------------------------------------- authentication

def make_key(kid):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return key, {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def token(key, kid, *, aud=AUDIENCE, iss=ISSUER, exp_in=3600.0, alg="RS256"):
    now = int(time.time())
    claims = {"aud": aud, "iss": iss, "iat": now, "nbf": now, "exp": now + int(exp_in)}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
async def jwks_server():
    """A loopback JWKS endpoint whose key set the test can change; counts its requests."""
    state = {"keys": [], "hits": 0, "status": 200, "delay": 0.0}

    async def keys(_request):
        state["hits"] += 1
        await asyncio.sleep(state["delay"])
        return web.json_response({"keys": state["keys"]}, status=state["status"])

    app = web.Application()
    app.router.add_get("/calling/keys", keys)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    state["url"] = f"http://127.0.0.1:{port}/calling/keys"
    yield state
    await runner.cleanup()


def bearer(tok):
    return {**HEADERS, "Authorization": f"Bearer {tok}"}


async def test_token_validation(make_service, redis_client, jwks_server):
    key, jwk = make_key("k1")
    other, _ = make_key("k1")  # same kid, another key: a forged signature
    jwks_server["keys"] = [jwk]
    svc = await service(make_service, audience=AUDIENCE, jwks_url=jwks_server["url"])
    url = ws_url(svc, PATH)
    assert await handshake_status(url, HEADERS) == 401
    for bad in (token(key, "k1", aud="another-resource"), token(key, "k1", iss="https://x"),
                token(key, "k1", exp_in=-3600), token(other, "k1"), token(key, "k9"),
                jwt.encode({"aud": AUDIENCE, "iss": ISSUER, "exp": time.time() + 60},
                           "a-shared-secret-of-32-bytes-at-least", algorithm="HS256"),
                "not-a-jwt"):
        assert await handshake_status(url, bearer(bad)) == 401
    assert await handshake_status(url, bearer(token(key, "k1"))) == 101
    # the header Call Automation's page calls "Authentication" works too
    assert await handshake_status(url, {"Authentication": f"Bearer {token(key, 'k1')}"}) == 101
    x = speech(3.0, 16000, seed=6)
    await play(url, [metadata_msg()] + audio_msgs(x, 16000, CUSTOMER),
               headers=bearer(token(key, "k1")), close=True)
    (s,) = await summaries(redis_client, f"{CONNECTION}:{SUBSCRIPTION}")
    assert s["summary"]["end_reason"] == "stop"
    assert jwks_server["hits"] <= 2  # cached: not fetched per connection
    assert token(key, "k1") not in json.dumps(alerts(redis_client))


async def test_key_rotation_and_unavailable_keys(make_service, jwks_server):
    key1, jwk1 = make_key("old")
    key2, jwk2 = make_key("new")
    jwks_server["status"] = 503
    svc = await service(make_service, audience=AUDIENCE, jwks_url=jwks_server["url"])
    gw = next(g for g in svc.gateways if g.name == "acs")
    gw._verifier.keys.min_refetch_s = 0.0
    url = ws_url(svc, PATH)
    assert await handshake_status(url, bearer(token(key1, "old"))) == 503
    assert 'calls_rejected_total{reason="unavailable"} 1.0' in svc.ctx.metrics.render().decode()
    jwks_server["status"], jwks_server["keys"] = 200, [jwk1]
    gw._verifier.keys._tried_at -= 10.0  # as if the 5 s pause after a failure had passed
    assert await handshake_status(url, bearer(token(key1, "old"))) == 101
    # Call Automation starts signing with a key published after our last fetch
    jwks_server["keys"] = [jwk1, jwk2]
    hits = jwks_server["hits"]
    assert await handshake_status(url, bearer(token(key2, "new"))) == 101
    assert jwks_server["hits"] == hits + 1
    # the endpoint fails later: the cached keys keep working
    jwks_server["status"] = 500
    assert await handshake_status(url, bearer(token(key1, "old"))) == 101


async def test_key_set_loaded_at_start(make_service, jwks_server):
    key, jwk = make_key("k1")
    jwks_server["keys"] = [jwk]
    svc = await service(make_service, audience=AUDIENCE, jwks_url=jwks_server["url"])
    assert jwks_server["hits"] == 1  # loaded when the service started, before any call
    assert await handshake_status(ws_url(svc, PATH), bearer(token(key, "k1"))) == 101
    assert jwks_server["hits"] == 1


async def test_concurrent_first_lookups_share_one_fetch(jwks_server):
    _, jwk = make_key("k1")
    jwks_server["keys"], jwks_server["delay"] = [jwk], 0.3
    keys = JwksKeys(url=jwks_server["url"])
    try:
        found = await asyncio.gather(*(keys.key_for("k1") for _ in range(8)))
    finally:
        await keys.close()
    assert all(len(k) == 1 for k in found) and jwks_server["hits"] == 1


async def test_jwks_file(make_service, tmp_path):
    key, jwk = make_key("f1")
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"kty": "EC", "kid": "skip"}, jwk]}))
    svc = await service(make_service, audience=AUDIENCE, jwks_file=str(path),
                        jwks_url="http://192.0.2.1/never-used")
    assert await handshake_status(ws_url(svc, PATH), bearer(token(key, "f1"))) == 101
    assert list(parse_jwks(path.read_text())) == ["f1"]
    with pytest.raises(ValueError, match="no usable"):
        parse_jwks('{"keys": []}')


async def test_config_errors(make_service):
    with pytest.raises(ConfigError, match="gateways.acs.audience"):
        await service(make_service, auth="required")
    with pytest.raises(ConfigError, match="gateways.acs.jwks_url"):
        await service(make_service, audience=AUDIENCE, jwks_url="http://keys.example.com/k")
    with pytest.raises(ConfigError, match="customer_id_prefixes"):
        await service(make_service, customer_id_prefixes=[""])


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("case,close", [
    ("format", 4415), ("audio_first", 4400), ("binary", 4400), ("odd_pcm", 4400),
    ("bad_json", 4400), ("twice", 4400), ("mix_modes", 4400), ("no_call", 4400),
    ("huge", 4413), ("no_kind", 4400), ("bad_participant", 4400),
])
async def test_bad_input(make_service, case, close):
    svc = await service(make_service)
    audio = audio_msgs(speech(0.2, 16000), 16000, CUSTOMER)
    mixed = audio_msgs(speech(0.2, 16000), 16000)
    odd = {"kind": "AudioData", "audioData": {"participantRawID": CUSTOMER,
                                              "data": base64.b64encode(b"\x00" * 3).decode()}}
    bad = {
        "format": [metadata_msg(encoding="OPUS")],
        "audio_first": audio[:1],
        "binary": [metadata_msg(), b"\x00" * 640],
        "odd_pcm": [metadata_msg(), json.dumps(odd)],
        "bad_json": [metadata_msg(), "{]"],
        "twice": [metadata_msg(), metadata_msg()],
        "mix_modes": [metadata_msg(), audio[0], mixed[0]],
        "no_call": [metadata_msg(sub=None)],
        "huge": [metadata_msg(), json.dumps({"kind": "x", "pad": "y" * 20_000})],
        "no_kind": [json.dumps({"audioMetadata": {}})],
        "bad_participant": [metadata_msg(), json.dumps(
            {"kind": "AudioData", "audioData": {"participantRawID": 7, "data": ""}})],
    }[case]
    headers = {} if case == "no_call" else HEADERS
    _, code, reason = await play(ws_url(svc, PATH), bad, headers=headers)
    assert code == close and reason
