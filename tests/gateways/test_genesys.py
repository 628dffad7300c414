"""Genesys AudioHook gateway: documented sessions over loopback, signatures, probe, pitfalls."""

import asyncio
import base64
import json
import time
import uuid

import numpy as np
import pytest
from gwsupport import FUZZ_EXAMPLES, alerts, handshake_status, speech, summaries, ws_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nes2net_gateways.genesys_protocol import (
    AudioHookSession,
    Media,
    check_parameters,
    choose_media,
    format_duration,
    parse_client_message,
    parse_duration,
    parse_open,
)
from nes2net_gateways.genesys_signature import (
    RequestView,
    build_signature,
    signature_base,
    verify_signature,
)
from nes2net_gateways.structured_fields import StructuredFieldError, parse_dictionary
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nes2net_stream.client import encode_samples
from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/genesys"
API_KEY = "audiohook-api-key-0123"
SECRET = base64.b64encode(bytes(range(32))).decode()
ORG = "d7934305-0972-4844-938e-9060eef73d05"
NULL = "00000000-0000-0000-0000-000000000000"
COMPONENTS = ["@request-target", "@authority", "audiohook-organization-id",
              "audiohook-session-id", "audiohook-correlation-id", "x-api-key"]
STEREO_PCMU = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"],
               "rate": 8000}


def headers(svc, *, session=None, org=ORG, api_key=API_KEY, secret=SECRET, created=None,
            components=COMPONENTS, target=PATH, nonce=None, signed=True):
    """The upgrade headers Genesys sends, signed like the reference client signs them."""
    h = {"audiohook-organization-id": org, "audiohook-session-id": session or str(uuid.uuid4()),
         "audiohook-correlation-id": str(uuid.uuid4()), "x-api-key": api_key}
    if signed:
        fields = {k: [v] for k, v in h.items()}
        view = RequestView("GET", target, f"127.0.0.1:{svc.port}", fields)
        created = int(time.time()) if created is None else created
        h |= build_signature(view, components, keyid=api_key, key=base64.b64decode(secret),
                             created=created, expires=created + 30,
                             nonce=nonce or base64.b64encode(uuid.uuid4().bytes[:18]).decode())
    return h


class AudioHookClient:
    """A Genesys-like client: numbered messages, checks the server's seq/clientseq/parameters."""

    def __init__(self, ws, session_id):
        self.ws, self.id = ws, session_id
        self.seq = self.serverseq = 0
        self.position = 0.0

    async def send(self, kind, parameters=None, *, seq=None, drop_parameters=False):
        self.seq = self.seq + 1 if seq is None else seq
        msg = {"version": "2", "id": self.id, "type": kind, "seq": self.seq,
               "serverseq": self.serverseq, "position": format_duration(self.position),
               "parameters": parameters or {}}
        if drop_parameters:
            del msg["parameters"]
        await self.ws.send(json.dumps(msg))

    async def recv(self, wait=5.0):
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
        assert msg["version"] == "2" and msg["id"] == self.id
        assert msg["seq"] == self.serverseq + 1  # server seq rises by exactly one
        assert isinstance(msg["parameters"], dict)  # always present, even when empty
        self.serverseq = msg["seq"]
        return msg

    async def audio(self, frames, frame_bytes):
        for f in frames:
            await self.ws.send(f)
            self.position += len(f) / frame_bytes / 8000


def open_params(conversation, *, media=None, participant=None, custom=None):
    p = {"organizationId": ORG, "conversationId": conversation,
         "participant": participant or {"id": str(uuid.uuid4()), "ani": "+1-555-555-1234",
                                        "aniName": "John Doe", "dnis": "+1-800-555-6789"},
         "media": media if media is not None else [
             STEREO_PCMU, {"type": "audio", "format": "PCMU", "channels": ["external"],
                           "rate": 8000},
             {"type": "audio", "format": "L16", "channels": ["external", "internal"],
              "rate": 8000}],
         "language": "en-US"}
    if custom is not None:
        p["customConfig"] = custom
    return p


def stereo_pcmu(seconds, frame_ms=100):
    """Interleaved PCMU, customer (external) left and agent (internal) right, 100 ms frames."""
    x = np.stack([speech(seconds, 8000, seed=1), speech(seconds, 8000, seed=2)], axis=1)
    raw = encode_samples(x, "mulaw")
    step = 2 * 8 * frame_ms
    return [raw[i:i + step] for i in range(0, len(raw), step)]


async def service(make_service, **section):
    cfg = {"enabled": True, "path": PATH, "api_key": API_KEY, "client_secret": SECRET, **section}
    return await make_service(gateways={"genesys": cfg})


async def session(svc, conv, *, hdrs=None, **open_kw):
    """Connect, open, return (ws, client, opened)."""
    h = hdrs or headers(svc)
    ws = await connect(ws_url(svc, PATH), additional_headers=h, open_timeout=5)
    client = AudioHookClient(ws, h["audiohook-session-id"])
    await client.send("open", open_params(conv, **open_kw))
    return ws, client, await client.recv()


@pytest.mark.both_loops
async def test_monitor_session_end_to_end(make_service, redis_client):
    svc = await service(make_service)
    conv = str(uuid.uuid4())
    ws, client, opened = await session(svc, conv, custom={"tenant": "acme"})
    assert opened["type"] == "opened" and opened["clientseq"] == 1
    assert opened["parameters"] == {"media": [STEREO_PCMU], "startPaused": False}
    await client.send("ping", {"rtt": "PT0.05S"})
    pong = await client.recv()
    assert pong["type"] == "pong" and pong["clientseq"] == 2 and pong["parameters"] == {}
    frames = stereo_pcmu(7.0)
    await client.audio(frames[:30], 2)
    await client.send("paused")
    await client.send("resumed", {"start": format_duration(client.position),
                                  "discarded": "PT2.5S"})
    await client.audio(frames[30:50], 2)
    await client.send("discarded", {"start": format_duration(client.position),
                                    "discarded": "PT0.4S"})
    await client.send("update", {"language": "fr-FR"})
    await client.audio(frames[50:], 2)
    await client.send("close", {"reason": "end"})
    closed = await client.recv()
    assert closed["type"] == "closed" and closed["parameters"] == {}
    await ws.wait_closed()
    (s,) = await summaries(redis_client, conv)
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    # 7 s of audio plus the 2.5 s + 0.4 s Genesys reported as discarded: the call clock
    # follows the provider's position
    assert s["summary"]["duration_s"] == pytest.approx(7.0 + 2.5 + 0.4, abs=0.01)
    assert s["summary"]["windows_scored"] >= 2
    assert s["source"]["gateway"] == "genesys" and s["source"]["kind"] == "gateway"
    meta = s["metadata"]
    assert meta["provider"] == "genesys" and meta["provider_call_id"] == conv
    assert meta["provider_stream_id"] == client.id
    assert meta["ani"] == "+1-555-555-1234" and meta["dnis"] == "+1-800-555-6789"
    assert meta["custom"]["organization_id"] == ORG
    assert meta["custom"]["custom_config"] == {"tenant": "acme"}
    assert meta["custom"]["media"] == STEREO_PCMU and meta["custom"]["ani_name"] == "John Doe"
    assert meta["custom"]["language"] == "fr-FR"  # the update's, not the open's en-US
    # only the customer is scored by default
    assert {d["channel"] for d in alerts(redis_client)} == {"caller"}


async def test_agent_scored_on_request_and_l16_little_endian(make_service, redis_client):
    svc = await service(make_service, score_agent=True, prefer_format="L16")
    conv = str(uuid.uuid4())
    l16 = {"type": "audio", "format": "L16", "channels": ["internal", "external"], "rate": 8000}
    ws, client, opened = await session(svc, conv, media=[STEREO_PCMU, l16])
    assert opened["parameters"]["media"] == [l16]  # channel order as offered is honoured
    x = np.stack([speech(5.0, 8000, seed=3), np.zeros(40000, np.float32)], axis=1)
    raw = encode_samples(x, "pcm_s16le")  # internal (agent) left, external (customer) right
    await client.audio([raw[i:i + 3200] for i in range(0, len(raw), 3200)], 4)
    await client.send("close", {"reason": "end"})
    assert (await client.recv())["type"] == "closed"
    await ws.close()
    found = {d["channel"]: d for d in await summaries(redis_client, conv, n=2)}
    assert set(found) == {"caller", "agent"}
    assert found["agent"]["summary"]["windows_scored"] >= 1
    assert found["caller"]["summary"]["speech_s"] == 0.0  # the silent right channel


async def test_connection_probe_gets_opened_and_closed_without_a_call(make_service, redis_client):
    svc = await service(make_service)
    participant = {"id": NULL, "ani": "", "aniName": "", "dnis": ""}
    ws, client, opened = await session(svc, NULL, participant=participant)
    assert opened["type"] == "opened" and opened["parameters"]["media"] == [STEREO_PCMU]
    await client.send("close", {"reason": "end"})
    assert (await client.recv())["type"] == "closed"
    await ws.wait_closed()
    await asyncio.sleep(0.3)
    assert svc.ctx.calls == {} and alerts(redis_client) == []


@pytest.mark.parametrize("case,info", [
    ("seq_gap", "invalid seq"), ("missing_parameters", "parameters"),
    ("unknown_type", "not a supported"), ("odd_audio", "whole number"),
    ("bad_close_reason", "reason"), ("serverseq_ahead", "serverseq"),
    ("audio_while_paused", "paused"),
])
async def test_protocol_violations_disconnect_with_error(make_service, redis_client, case, info):
    svc = await service(make_service)
    good_conv = str(uuid.uuid4())
    good_ws, good, _ = await session(svc, good_conv)
    conv = str(uuid.uuid4())
    ws, client, _ = await session(svc, conv)
    await client.audio(stereo_pcmu(1.0), 2)
    if case == "seq_gap":
        await client.send("ping", seq=5)
    elif case == "missing_parameters":
        await client.send("ping", drop_parameters=True)
    elif case == "unknown_type":
        await client.send("hello")
    elif case == "odd_audio":
        await ws.send(b"\x7f" * 3)
    elif case == "bad_close_reason":
        await client.send("close", {"reason": "because"})
    elif case == "serverseq_ahead":
        client.serverseq = 9
        await client.send("ping")
    else:
        await client.send("paused")
        await ws.send(b"\xff" * 1600)
    msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert msg["type"] == "disconnect" and msg["parameters"]["reason"] == "error"
    assert info in msg["parameters"]["info"]
    # Genesys then runs its close transaction; the server answers 'closed'
    client.seq = msg["clientseq"]
    client.serverseq = msg["seq"]
    await client.send("close", {"reason": "disconnect"})
    closed = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert closed["type"] == "closed" and closed["seq"] == msg["seq"] + 1
    await ws.wait_closed()
    (s,) = await summaries(redis_client, conv)
    assert s["summary"]["end_reason"] == "error"
    # the other session is untouched
    await good.send("ping")
    assert (await good.recv())["type"] == "pong"
    await good.send("close", {"reason": "end"})
    assert (await good.recv())["type"] == "closed"
    await good_ws.close()
    (g,) = await summaries(redis_client, good_conv)
    assert g["summary"]["end_reason"] == "stop"


async def test_audio_before_open_and_org_mismatch(make_service, redis_client):
    svc = await service(make_service)
    h = headers(svc)
    async with connect(ws_url(svc, PATH), additional_headers=h) as ws:
        await ws.send(b"\xff" * 1600)
        msg = json.loads(await ws.recv())
        assert msg["type"] == "disconnect" and "before the 'open'" in msg["parameters"]["info"]
    h = headers(svc)
    async with connect(ws_url(svc, PATH), additional_headers=h) as ws:
        client = AudioHookClient(ws, h["audiohook-session-id"])
        params = open_params(str(uuid.uuid4()))
        params["organizationId"] = str(uuid.uuid4())
        await client.send("open", params)
        msg = await client.recv()
        assert msg["type"] == "disconnect" and msg["parameters"]["reason"] == "unauthorized"
    assert svc.ctx.calls == {} and alerts(redis_client) == []


async def test_same_conversation_twice_gets_distinct_call_ids(make_service, redis_client):
    svc = await service(make_service)
    conv = str(uuid.uuid4())
    ws1, c1, _ = await session(svc, conv)
    ws2, c2, _ = await session(svc, conv)
    for c, ws in ((c1, ws1), (c2, ws2)):
        await c.audio(stereo_pcmu(2.0), 2)
        await c.send("close", {"reason": "end"})
        assert (await c.recv())["type"] == "closed"
        await ws.close()
    ids = {d["call_id"] for d in await summaries(redis_client, conv)} | {
        d["call_id"] for d in await summaries(redis_client, f"{conv}:{c2.id}")}
    assert ids == {conv, f"{conv}:{c2.id}"}


async def test_signature_valid_wrong_stale_and_replayed(make_service, redis_client):
    other = base64.b64encode(b"k" * 32).decode()
    svc = await service(make_service, organization_ids=[ORG],
                        extra_credentials=[{"api_key": "unsigned-key-0123", "client_secret": ""}])
    url = ws_url(svc, PATH)
    now = int(time.time())
    assert await handshake_status(url, headers(svc)) == 101
    assert await handshake_status(url, headers(svc, secret=other)) == 401  # wrong secret
    assert await handshake_status(url, headers(svc, created=now - 60)) == 401  # stale
    assert await handshake_status(url, headers(svc, created=now + 60)) == 401  # future
    assert await handshake_status(url, headers(svc, signed=False)) == 401  # key has a secret
    assert await handshake_status(url, headers(svc, nonce="short")) == 401
    assert await handshake_status(url, headers(svc, api_key="unknown-key-0123")) == 401
    assert await handshake_status(url, headers(svc, components=COMPONENTS[:-1])) == 401
    assert await handshake_status(url, headers(svc, target=PATH + "?x=1")) == 401
    replay = headers(svc)
    assert await handshake_status(url, replay) == 101
    assert await handshake_status(url, replay) == 401  # the same signature twice
    respaced = dict(replay, **{"signature-input": replay["signature-input"].replace("(", "( ")})
    assert await handshake_status(url, respaced) == 401  # same nonce, equivalent encoding
    dup = [*headers(svc).items(), ("audiohook-session-id", str(uuid.uuid4()))]
    assert await handshake_status(url, dup) == 400  # a repeated id header is refused cleanly
    # unsigned requests pass only for a key with an empty client secret (as the reference)
    assert await handshake_status(url, headers(svc, api_key="unsigned-key-0123",
                                               signed=False)) == 101
    assert await handshake_status(url, headers(svc, org=str(uuid.uuid4()))) == 403
    bad = headers(svc)
    del bad["audiohook-session-id"]
    assert await handshake_status(url, bad) == 400
    # a query string is covered by @request-target
    q_url = ws_url(svc, PATH, "tenant=a")
    assert await handshake_status(q_url, headers(svc, target=PATH + "?tenant=a")) == 101
    assert alerts(redis_client) == []


async def test_config_errors(make_service):
    with pytest.raises(ConfigError, match="client_secret"):
        await service(make_service, client_secret="%%%")
    with pytest.raises(ConfigError, match="gateways.genesys.api_key"):
        await make_service(gateways={"genesys": {"enabled": True, "auth": "required"}})
    with pytest.raises(ConfigError, match="organization_ids"):
        await service(make_service, organization_ids=["acme"])


async def test_drain_sends_disconnect_completed(make_service, redis_client):
    svc = await service(make_service)
    conv = str(uuid.uuid4())
    ws, client, _ = await session(svc, conv)
    await client.audio(stereo_pcmu(2.0), 2)
    drain = asyncio.create_task(svc.drain())
    await client.send("ping")
    got = []
    try:
        while True:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            if got[-1]["type"] == "disconnect":
                await client.send("close", {"reason": "disconnect"})
    except (ConnectionClosed, TimeoutError):
        pass
    await drain
    assert any(m["type"] == "disconnect" and m["parameters"]["reason"] == "completed"
               for m in got)
    (s,) = await summaries(redis_client, conv)
    assert s["summary"]["end_reason"] == "shutdown"


# ----------------------------------------------------------------------------- pure parts

def test_rfc9421_hmac_test_vector():
    """RFC 9421 Appendix B.2.5: HMAC-SHA256 over date, @authority and content-type."""
    key = base64.b64decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhI"
                           "Di6pcl8jsasjlTMtDQ==")
    fields = {"date": ["Tue, 20 Apr 2021 02:07:55 GMT"], "content-type": ["application/json"],
              "signature-input": ['sig-b25=("date" "@authority" "content-type")'
                                  ';created=1618884473;keyid="test-shared-secret"'],
              "signature": ["sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"]}
    view = RequestView("POST", "/foo?param=Value&Pet=dog", "example.com", fields)
    inner = parse_dictionary(fields["signature-input"][0])["sig-b25"]
    assert signature_base(inner, view) == (
        '"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@authority": example.com\n'
        '"content-type": application/json\n"@signature-params": ("date" "@authority" '
        '"content-type");created=1618884473;keyid="test-shared-secret"')
    kw = dict(api_key="test-shared-secret", required=("@authority",), max_age_s=10,
              clock_skew_s=3, min_nonce_len=0, now=1618884475)
    ok = verify_signature(view, secret_for=lambda k: key, **kw)
    assert ok.code == "verified"
    assert verify_signature(view, secret_for=lambda k: b"x" * 64, **kw).code == "failed"
    assert verify_signature(view, secret_for=lambda k: None, **kw).code == "failed"
    assert verify_signature(view, secret_for=lambda k: key,
                            **{**kw, "now": 1618884473 + 11}).code == "expired"
    # a non-canonical but equivalent Signature-Input re-serialises to the same base
    spaced = dict(fields, **{"signature-input": [
        'sig-b25=( "date"  "@authority" "content-type" );created=1618884473;'
        'keyid="test-shared-secret"']})
    assert verify_signature(RequestView("POST", "/foo", "example.com", spaced),
                            secret_for=lambda k: key, **kw).code == "verified"


def test_structured_fields_and_durations():
    d = parse_dictionary('a=1, b;x=?0, c=("x" "y");p=:AQID:, d=-1.5, e=tok/en:1')
    assert d["a"].value == 1 and d["b"].value is True and d["b"].params == [("x", False)]
    assert [i.value for i in d["c"].items] == ["x", "y"] and d["c"].params == [("p", b"\1\2\3")]
    assert d["d"].value == -1.5 and d["e"].value == "tok/en:1"
    for bad in ('a=', 'a=1,', 'A=1', 'a="unterminated', 'a=(1 2', 'a=?2', 'a=:@@:', 'a=1 b'):
        with pytest.raises(StructuredFieldError):
            parse_dictionary(bad)
    assert parse_duration("PT12.345S") == pytest.approx(12.345) and format_duration(1.5) == "PT1.5S"
    assert format_duration(0) == "PT0S"


def test_media_choice_prefers_stereo_customer_pcmu():
    mono_int = Media("PCMU", ("internal",), 8000)
    stereo_l16 = Media("L16", ("external", "internal"), 8000)
    stereo = Media("PCMU", ("external", "internal"), 8000)
    assert choose_media((mono_int, stereo_l16, stereo)) == stereo
    assert choose_media((mono_int, stereo_l16, stereo), "L16") == stereo_l16
    assert choose_media((mono_int,)) == mono_int and choose_media(()) is None
    # unknown codecs in the offer are skipped, not fatal
    params = open_params(str(uuid.uuid4()), media=[
        {"type": "audio", "format": "opus", "channels": ["external"], "rate": 48000},
        STEREO_PCMU])
    assert parse_open(params).media == (stereo,)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2 ** 60) | st.floats(allow_nan=False)
    | st.text(max_size=12), lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
keys = st.sampled_from(["version", "id", "type", "seq", "serverseq", "position", "parameters"])


@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(max_size=200),
    st.dictionaries(keys, json_values, max_size=7).map(json.dumps),
    st.fixed_dictionaries({
        "version": st.just("2"), "id": st.just(str(uuid.uuid4())),
        "type": st.sampled_from(["open", "close", "ping", "paused", "resumed", "discarded",
                                 "update", "error", "x"]),
        "seq": st.integers(0, 3), "serverseq": st.integers(0, 3),
        "position": st.sampled_from(["PT0S", "PT1.5S", "1.5", "PT.S"]),
        "parameters": st.dictionaries(st.sampled_from([
            "reason", "start", "discarded", "rtt", "language", "code", "message",
            "organizationId", "conversationId", "participant", "media", "customConfig",
            "continuedSessions"]), json_values, max_size=6)}).map(json.dumps)))
def test_fuzz_client_message_parsers_raise_only_protocol_errors(text):
    sess = AudioHookSession(str(uuid.uuid4()))
    try:
        msg = parse_client_message(text)
        check_parameters(msg)
        if msg.type == "open":
            req = parse_open(msg.parameters)
            choose_media(req.media)
        sess.accept(msg)
    except ProtocolError as err:
        assert err.code in ("bad_json", "bad_message", "unknown_message")


@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None)
@given(st.text(max_size=120), st.text(max_size=80))
def test_fuzz_signature_parsing_never_raises_unexpectedly(sig_input, sig):
    try:
        parse_dictionary(sig_input)
    except StructuredFieldError:
        pass
    view = RequestView("GET", PATH, "h", {"signature-input": [sig_input], "signature": [sig],
                                          "x-api-key": ["k"]})
    result = verify_signature(view, api_key="k", secret_for=lambda k: b"s", required=(),
                              max_age_s=10, clock_skew_s=3, min_nonce_len=0, now=time.time())
    assert result.code != "verified"
