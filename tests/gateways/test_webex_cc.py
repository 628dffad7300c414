"""Webex Contact Center media forking: a real gRPC client over loopback, signed JWS tokens,
real Redis, real speech."""

import asyncio
import json
import time

import grpc
import jwt
import numpy as np
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from gwsupport import (
    FUZZ_EXAMPLES,
    StubHandle,
    loopback_http,
    stub_gateway,
    summaries,
    window_scores,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from nes2net_gateways.webex_cc_proto import (
    AGENT,
    ALAW,
    CALLER,
    ERROR_INVALID_AUDIO_FORMAT,
    LINEAR16,
    METHOD,
    MULAW,
    AudioStream,
    ForkingRequest,
    ForkingResponse,
)
from siprec_client import real_speech

from nes2net_stream.audio.io import resample
from nes2net_stream.client import encode_samples, stream_samples
from nes2net_stream.errors import ConfigError

ISSUER = "https://idbroker.example.test/idb"
URL = "https://nes2net.example.test:443"
SCHEMA = "523e1b7f-4693-47bc-b84e-a7b7a505fb0b"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key, kid="k1"):
    return {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid,
            "use": "sig", "alg": "RS256"}


def token(key=KEY, kid="k1", **over):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "wxcc", "sub": "org-1", "jti": "j1", "iat": now,
              "exp": now + 3600, "com.cisco.datasource.url": URL,
              "com.cisco.datasource.schema.uuid": SCHEMA, **over}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def jwks_file(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [jwk(KEY)]}))
    return str(path)


async def service(make_service, jwks_file=None, limits=None, **section):
    cfg = {"enabled": True, "port": 0, "datasource_url": URL, "issuers": [ISSUER],
           **({"jwks_file": jwks_file} if jwks_file else {}), **section}
    svc = await make_service(gateways={"webex_cc": cfg}, limits=limits or {})
    (gw,) = svc.gateways
    svc.gw = gw
    svc.target = f"127.0.0.1:{gw.bound_port}"
    return svc


def audio(conversation, data, role=CALLER, encoding=MULAW, rate=8000, org="org-1", leg=None):
    return ForkingRequest(conversation_id=conversation, customer_org_id=org, audio=AudioStream(
        audio_data=data, encoding=encoding, sample_rate_hertz=rate, role=role,
        role_id=leg or f"leg-{role}"))


def conversation(conv, caller: bytes, agent: bytes, chunk=1600, **kw):
    """Messages of both parties, 200 ms at a time, interleaved as Webex sends them."""
    out = []
    for i in range(0, max(len(caller), len(agent)), chunk):
        for role, data in ((CALLER, caller), (AGENT, agent)):
            if data[i:i + chunk]:
                out.append(audio(conv, data[i:i + chunk], role, **kw))
    return out


async def fork(target, messages, *, tok=None, pace=0.0, metadata=None):
    """Stream ``messages`` as Webex does; the responses, or the RpcError that ended it."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(METHOD, request_serializer=ForkingRequest.SerializeToString,
                                     response_deserializer=ForkingResponse.FromString)
        md = metadata if metadata is not None else (
            [("authorization", f"Bearer {tok or token()}")])

        async def requests():
            for m in messages:
                yield m
                if pace:
                    await asyncio.sleep(pace)

        try:
            return [r async for r in call(requests(), metadata=md)]
        except grpc.aio.AioRpcError as err:
            return err


@pytest.mark.both_loops
async def test_a_forked_conversation_end_to_end(make_service, redis_client, jwks_file):
    svc = await service(make_service, jwks_file)
    caller = encode_samples(real_speech(), "mulaw")
    agent = encode_samples(real_speech("synthetic_call.wav"), "mulaw")
    got = await fork(svc.target, conversation("conv-1", caller, agent))
    assert not isinstance(got, grpc.aio.AioRpcError), got
    assert [(r.status_message, r.error_code) for r in got] == [("ok", 0)]
    (s,) = await summaries(redis_client, "conv-1")
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(len(caller) / 8000, abs=0.03)
    assert s["source"]["gateway"] == "webex_cc"
    assert s["metadata"] == {"provider": "webex_cc", "provider_call_id": "conv-1",
                             "custom": {"customer_org_id": "org-1", "codec": "pcmu"}}
    # scored exactly as the same bytes over the generic protocol; the agent is not scored
    scores = await window_scores(redis_client, "conv-1")
    ref = await stream_samples(svc.url, real_speech(), 8000, encoding="mulaw", realtime=False)
    assert len(scores) >= 2 and scores == pytest.approx(
        [w["score"]["spoof_probability"] for w in ref.of_type("window")], abs=1e-6)
    reg = svc.ctx.metrics.registry
    assert reg.get_sample_value("nes2net_webex_cc_streams_total", {"code": "OK"}) == 1


async def test_both_parties_scored_at_16_khz_linear16(make_service, redis_client, jwks_file):
    svc = await service(make_service, jwks_file, score_agent=True)
    wide = (np.clip(resample(real_speech(seconds=5.0), 8000, 16000), -1, 1) * 32767
            ).astype("<i2").tobytes()  # a wideband leg: LINEAR16 at 16 kHz
    got = await fork(svc.target, conversation("conv-16k", wide, wide, chunk=6400,
                                              encoding=LINEAR16, rate=16000))
    assert [r.status_message for r in got] == ["ok"]
    found = await summaries(redis_client, "conv-16k", n=2)
    assert sorted(d["channel"] for d in found) == ["agent", "caller"]
    assert all(d["summary"]["duration_s"] == pytest.approx(5.0, abs=0.03) for d in found)


@pytest.mark.parametrize(("claims", "why"), [
    ({"com.cisco.datasource.url": "https://other.example.test:443"}, "URL"),
    ({"com.cisco.datasource.schema.uuid": "5397013b-0000-0000-0000-000000000000"}, "schema"),
    ({"iss": "https://evil.example.test/idb"}, "issuers"),
    ({"exp": int(time.time()) - 600}, "Expired"),
    ({"jti": None}, "jti"),
    ({"aud": None}, "aud"),
])
async def test_tokens_are_checked(make_service, redis_client, jwks_file, claims, why):
    svc = await service(make_service, jwks_file)
    msgs = [audio("conv-auth", b"\xff" * 1600)]
    err = await fork(svc.target, msgs, tok=token(**claims))
    assert isinstance(err, grpc.aio.AioRpcError)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and why in err.details()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for bad, what in ((token(other), "bad signature"), (token(kid="k9"), "unknown key"),
                      ("not-a-token", "malformed")):
        err = await fork(svc.target, msgs, tok=bad)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and what in err.details()
    err = await fork(svc.target, msgs, metadata=[])
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await summaries(redis_client, "conv-auth", within=0.3) == []
    assert svc.ctx.metrics.registry.get_sample_value(
        "nes2net_calls_rejected_total", {"reason": "unauthorized"}) == 5


async def test_keys_come_from_the_issuers_key_url(make_service, redis_client):
    hits = []

    async def keys(request):
        hits.append(request.path)
        return web.json_response({"keys": [jwk(KEY)]})

    runner, base = await loopback_http({"/idb/oauth2/v2/keys/verificationjwk": keys})
    issuer = f"{base}/idb"
    try:
        svc = await service(make_service, issuers=[issuer])
        msgs = [audio("conv-keys", b"\xff" * 1600)]
        for _ in range(2):
            got = await fork(svc.target, msgs, tok=token(iss=issuer))
            assert [r.status_message for r in got] == ["ok"]
        assert hits == ["/idb/oauth2/v2/keys/verificationjwk"]  # loaded once, cached
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("messages", "status", "code"), [
    ([audio("c", b"\xff" * 160, encoding=0)], grpc.StatusCode.INVALID_ARGUMENT,
     "unsupported_format"),
    ([audio("c", b"\xff" * 160), audio("c", b"\xff" * 160, encoding=ALAW)],
     grpc.StatusCode.INVALID_ARGUMENT, "unsupported_format"),
    ([audio("c", b"\x00" * 161, encoding=LINEAR16)], grpc.StatusCode.INVALID_ARGUMENT,
     "bad_audio_frame"),
    ([audio("", b"\xff" * 160)], grpc.StatusCode.INVALID_ARGUMENT, "bad_message"),
    ([audio("c", b"\xff" * 160, role=0)], grpc.StatusCode.INVALID_ARGUMENT, "bad_message"),
    ([audio("c", b"\xff" * 160), audio("d", b"\xff" * 160)], grpc.StatusCode.INVALID_ARGUMENT,
     "bad_message"),
    ([ForkingRequest(conversation_id="c")], grpc.StatusCode.INVALID_ARGUMENT, "bad_message"),
    ([audio("c", b"\xff" * 160, rate=3000)], grpc.StatusCode.INVALID_ARGUMENT,
     "unsupported_format"),
    ([audio("c", b"\xff" * 160, org="org-9")], grpc.StatusCode.PERMISSION_DENIED, "unauthorized"),
])
async def test_bad_input_ends_that_stream_only(make_service, redis_client, jwks_file,
                                               messages, status, code):
    svc = await service(make_service, jwks_file, customer_org_ids=["org-1"])
    caller = encode_samples(real_speech(seconds=3.0), "mulaw")
    good = asyncio.create_task(fork(svc.target, conversation("conv-good", caller, b""),
                                    pace=0.02))
    err = await fork(svc.target, messages)
    assert isinstance(err, grpc.aio.AioRpcError)
    assert err.code() == status and err.details().startswith(code)
    assert [r.status_message for r in await good] == ["ok"]
    (s,) = await summaries(redis_client, "conv-good")
    assert s["summary"]["end_reason"] == "stop"


async def test_the_error_is_also_answered_in_the_stream(make_service, jwks_file):
    svc = await service(make_service, jwks_file)
    async with grpc.aio.insecure_channel(svc.target) as channel:
        call = channel.stream_stream(METHOD, request_serializer=ForkingRequest.SerializeToString,
                                     response_deserializer=ForkingResponse.FromString)
        stream = call(iter([audio("c", b"\xff" * 160, encoding=0)]),
                      metadata=[("authorization", token())])  # no "Bearer " prefix: accepted
        first = await stream.read()
        assert first.error_code == ERROR_INVALID_AUDIO_FORMAT
        assert first.status_message.startswith("unsupported_format")
        assert await stream.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_capacity_limits_and_oversized_messages(make_service, redis_client, jwks_file):
    svc = await service(make_service, jwks_file, limits={"max_calls": 1,
                                                         "max_frame_bytes": 4096})
    caller = encode_samples(real_speech(seconds=2.0), "mulaw")
    first = asyncio.create_task(fork(svc.target, conversation("conv-a", caller, b""),
                                     pace=0.05))
    await asyncio.sleep(0.3)
    err = await fork(svc.target, [audio("conv-b", b"\xff" * 160)])
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details().startswith("too_many_calls")
    assert [r.status_message for r in await first] == ["ok"]
    # a message over max_frame_bytes of audio ends its call as an error, with a summary
    err = await fork(svc.target, [audio("conv-c", b"\xff" * 1600), audio("conv-c", b"\xff" * 9000)])
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details().startswith("frame_too_large")
    (s,) = await summaries(redis_client, "conv-c")
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("error", "frame_too_large")
    err = await fork(svc.target, [audio("conv-d", b"\xff" * 40000)])  # beyond gRPC's own cap
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    got = await fork(svc.target, [audio("conv-e", b"\xff" * 1600)])
    assert [r.status_message for r in got] == ["ok"]  # the service goes on


async def test_new_streams_are_rate_limited_per_address(make_service, jwks_file):
    svc = await service(make_service, jwks_file, max_streams_per_s=1.0)
    codes = []
    for k in range(4):  # each on its own connection (its own port): limited by address
        got = await fork(svc.target, [audio(f"conv-r{k}", b"\xff" * 160)])
        codes.append(got.code() if isinstance(got, grpc.aio.AioRpcError) else grpc.StatusCode.OK)
    assert codes[:2] == [grpc.StatusCode.OK] * 2  # a burst of two
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[2:]
    assert svc.ctx.metrics.registry.get_sample_value(
        "nes2net_calls_rejected_total", {"reason": "rate_limited"}) >= 1


async def test_an_idle_stream_times_out(make_service, redis_client, jwks_file):
    svc = await service(make_service, jwks_file, limits={"idle_timeout_s": 0.3})
    msgs = [audio("conv-idle", b"\xff" * 1600)]

    async def stalled():
        for m in msgs:
            yield m
        await asyncio.sleep(5)

    async with grpc.aio.insecure_channel(svc.target) as channel:
        call = channel.stream_stream(METHOD, request_serializer=ForkingRequest.SerializeToString,
                                     response_deserializer=ForkingResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            [r async for r in call(stalled(), metadata=[("authorization", token())])]
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    (s,) = await summaries(redis_client, "conv-idle")
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("timeout", "idle_timeout")


async def test_undecodable_messages_end_that_stream_only(make_service, jwks_file):
    svc = await service(make_service, jwks_file)
    async with grpc.aio.insecure_channel(svc.target) as channel:
        raw = channel.stream_stream(METHOD, request_serializer=lambda b: b,
                                    response_deserializer=ForkingResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            [r async for r in raw(iter([b"\xff\xff\xff"]),
                                  metadata=[("authorization", token())])]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("bad_message")
    got = await fork(svc.target, [audio("conv-after", b"\xff" * 1600)])
    assert [r.status_message for r in got] == ["ok"]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_message_rules_raise_only_protocol_errors(payloads):
    from nes2net_gateways.webex_cc import WebexCcConfig, _Conversation, parse_request

    from nes2net_stream.service.errors import ProtocolError

    rules = _Conversation(stub_gateway(WebexCcConfig(enabled=True), "webex_cc"))
    handle = StubHandle()
    for payload in payloads:
        try:
            role, data = rules.on_message(parse_request(payload), handle, None)
        except ProtocolError:
            continue
        assert role in ("caller", "agent") and isinstance(data, bytes)


async def test_health_checks_answer_without_a_token(make_service, jwks_file):
    """The standard gRPC health service and Cisco's (same messages): SERVING, no token."""
    svc = await service(make_service, jwks_file)
    async with grpc.aio.insecure_channel(svc.target) as channel:
        for name in ("grpc.health.v1.Health", "com.cisco.wcc.ccai.v1.Health"):
            check = channel.unary_unary(f"/{name}/Check", request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
            assert await check(b"") == b"\x08\x01"  # HealthCheckResponse{status: SERVING}
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch",
                                     request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            [r async for r in watch(b"")]
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_config_errors_name_the_key(make_service, tmp_path):
    with pytest.raises(ConfigError, match="gateways.webex_cc.datasource_url"):
        await make_service(gateways={"webex_cc": {"enabled": True, "host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match=r"gateways.webex_cc.issuers\[0\]"):
        await make_service(gateways={"webex_cc": {"enabled": True, "datasource_url": URL,
                                                  "issuers": ["http://idb.example.test"]}})
    with pytest.raises(ConfigError, match="gateways.webex_cc.tls_key"):
        await make_service(gateways={"webex_cc": {"enabled": True, "tls_cert": "c.pem"}})
