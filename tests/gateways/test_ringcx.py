"""RingCX Start Streaming: a real gRPC client over loopback, real Redis, real speech."""

import asyncio

import grpc
import pytest
from gwsupport import FUZZ_EXAMPLES, StubHandle, stub_gateway, summaries, window_scores
from hypothesis import given, settings
from hypothesis import strategies as st
from nes2net_gateways.ringcx_proto import (
    AGENT,
    BOT,
    CONTACT,
    MESSAGES,
    METHOD,
    OPUS,
    PCMA,
    PCMU,
    Empty,
    StreamEvent,
)
from siprec_client import real_speech

from nes2net_stream.client import encode_samples, stream_samples
from nes2net_stream.errors import ConfigError

M = MESSAGES


async def service(make_service, limits=None, **section):
    cfg = {"enabled": True, "port": 0, **section}
    svc = await make_service(gateways={"ringcx": cfg}, limits=limits or {})
    (gw,) = svc.gateways
    svc.gw = gw
    svc.target = f"127.0.0.1:{gw.bound_port}"
    return svc


def init(session="sess-1", dialog="dlg-1", **dialog_fields):
    return StreamEvent(session_id=session, dialog_init=M["DialogInitEvent"](
        account=M["Account"](id="acc-1", sub_account_id="sub-1"),
        dialog=M["Dialog"](id=dialog, type=1, **dialog_fields)))


def start(segment, kind, codec=PCMU, session="sess-1", fmt=True):
    seg = M["SegmentStartEvent"](segment_id=segment, participant=M["Participant"](
        id=f"p-{segment}", type=kind))
    if fmt:
        seg.audio_format.CopyFrom(M["AudioFormat"](codec=codec, rate=8000, ptime=100))
    return StreamEvent(session_id=session, segment_start=seg)


def media(segment, payload, seq=0, session="sess-1"):
    return StreamEvent(session_id=session, segment_media=M["SegmentMediaEvent"](
        segment_id=segment, audio_content=M["AudioContent"](payload=payload, seq=seq,
                                                            duration=100)))


def stop(segment, session="sess-1"):
    return StreamEvent(session_id=session, segment_stop=M["SegmentStopEvent"](segment_id=segment))


def dialog(caller: bytes, agent: bytes, **kw):
    """A whole dialog as RingCX streams it: 100 ms chunks of both segments, interleaved."""
    events = [init(**kw), start("seg-c", CONTACT), start("seg-a", AGENT)]
    for i in range(0, max(len(caller), len(agent)), 800):
        for seg, data in (("seg-c", caller), ("seg-a", agent)):
            if data[i:i + 800]:
                events.append(media(seg, data[i:i + 800], seq=i // 800))
    return events + [stop("seg-c"), stop("seg-a")]


async def stream(target, events, *, pace=0.0, serializer=StreamEvent.SerializeToString):
    """Stream ``events`` as RingCX does; Empty, or the RpcError that ended the call."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_unary(METHOD, request_serializer=serializer,
                                    response_deserializer=Empty.FromString)

        async def requests():
            for e in events:
                yield e
                if pace:
                    await asyncio.sleep(pace)

        try:
            return await call(requests())
        except grpc.aio.AioRpcError as err:
            return err


@pytest.mark.both_loops
async def test_a_streamed_dialog_end_to_end(make_service, redis_client):
    svc = await service(make_service)
    caller = encode_samples(real_speech(), "mulaw")
    agent = encode_samples(real_speech("synthetic_call.wav"), "mulaw")
    events = dialog(caller, agent, ani="+15551230001", dnis="+18005550100", language="en-US")
    events[0].dialog_init.dialog.attributes["queue"] = "billing"
    events.insert(3, start("seg-b", BOT))  # a bot's segment: not scored
    events.insert(4, media("seg-b", b"\x00" * 800))
    got = await stream(svc.target, events)
    assert isinstance(got, Empty), got
    (s,) = await summaries(redis_client, "dlg-1")
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(len(caller) / 8000, abs=0.03)
    assert s["metadata"] == {
        "provider": "ringcx", "provider_call_id": "dlg-1", "provider_stream_id": "sess-1",
        "ani": "+15551230001", "dnis": "+18005550100",
        "custom": {"account_id": "acc-1", "sub_account_id": "sub-1", "dialog_type": "inbound",
                   "codec": "pcmu", "language": "en-US", "attributes": {"queue": "billing"}}}
    scores = await window_scores(redis_client, "dlg-1")
    ref = await stream_samples(svc.url, real_speech(), 8000, encoding="mulaw", realtime=False)
    assert len(scores) >= 2 and scores == pytest.approx(
        [w["score"]["spoof_probability"] for w in ref.of_type("window")], abs=1e-6)
    assert svc.ctx.metrics.registry.get_sample_value("nes2net_ringcx_streams_total",
                                                     {"code": "OK"}) == 1


async def test_a_law_and_the_default_codec(make_service, redis_client):
    svc = await service(make_service, default_codec="PCMA", score_agent=True)
    audio = encode_samples(real_speech(seconds=3.0), "alaw")
    events = [init(dialog="dlg-a"), start("c", CONTACT, fmt=False), start("a", AGENT, PCMA)]
    events += [media(seg, audio[i:i + 800]) for i in range(0, len(audio), 800)
               for seg in ("c", "a")]
    assert isinstance(await stream(svc.target, events), Empty)
    found = await summaries(redis_client, "dlg-a", n=2)
    assert sorted(d["channel"] for d in found) == ["agent", "caller"]
    assert found[0]["metadata"]["custom"]["codec"] == "pcma"


@pytest.mark.parametrize(("events", "status", "code"), [
    ([media("c", b"\xff" * 800)], grpc.StatusCode.INVALID_ARGUMENT, "audio_before_start"),
    ([start("c", CONTACT)], grpc.StatusCode.INVALID_ARGUMENT, "bad_message"),
    ([init(dialog="dlg-x"), init(dialog="dlg-x")], grpc.StatusCode.INVALID_ARGUMENT,
     "bad_message"),
    ([init(dialog="dlg-x"), start("c", CONTACT), media("z", b"\xff" * 800)],
     grpc.StatusCode.INVALID_ARGUMENT, "bad_message"),
    ([init(dialog="dlg-x"), start("c", CONTACT, OPUS)], grpc.StatusCode.INVALID_ARGUMENT,
     "unsupported_format"),
    ([init(dialog="dlg-x"), start("c", CONTACT), start("a", AGENT, PCMA)],
     grpc.StatusCode.INVALID_ARGUMENT, "unsupported_format"),
    ([init(dialog="dlg-x"), StreamEvent(session_id="s")], grpc.StatusCode.INVALID_ARGUMENT,
     "bad_message"),
    ([init(dialog="dlg-x"), start("c", CONTACT), media("c", b"\xff" * 9000)],
     grpc.StatusCode.RESOURCE_EXHAUSTED, "frame_too_large"),
])
async def test_bad_input_ends_that_stream_only(make_service, redis_client, events, status,
                                               code):
    svc = await service(make_service, limits={"max_frame_bytes": 4096})
    caller = encode_samples(real_speech(seconds=3.0), "mulaw")
    good = asyncio.create_task(stream(svc.target, dialog(caller, b"", dialog="dlg-good"),
                                      pace=0.02))
    err = await stream(svc.target, events)
    assert isinstance(err, grpc.aio.AioRpcError), err
    assert err.code() == status and err.details().startswith(code)
    assert isinstance(await good, Empty)
    (s,) = await summaries(redis_client, "dlg-good")
    assert s["summary"]["end_reason"] == "stop"


async def test_garbage_and_other_networks_are_refused(make_service, redis_client):
    svc = await service(make_service)
    err = await stream(svc.target, [b"\xff\xff\xff"], serializer=lambda b: b)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("bad_message")
    other = await service(make_service, allowed_networks=["192.0.2.0/24"])
    err = await stream(other.target, dialog(b"\xff" * 1600, b""))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert svc.ctx.metrics.registry.get_sample_value(
        "nes2net_calls_rejected_total", {"reason": "unauthorized"}) is None
    assert other.ctx.metrics.registry.get_sample_value(
        "nes2net_calls_rejected_total", {"reason": "unauthorized"}) == 1
    assert isinstance(await stream(svc.target, dialog(b"\xff" * 1600, b"",
                                                      dialog="dlg-after")), Empty)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8))
def test_event_rules_raise_only_protocol_errors(payloads):
    from nes2net_gateways.ringcx import RingCxConfig, _Dialog, parse_event

    from nes2net_stream.service.errors import ProtocolError

    rules = _Dialog(stub_gateway(RingCxConfig(enabled=True), "ringcx"), StubHandle(), None)
    for payload in payloads:
        try:
            role, data = rules.on_event(parse_event(payload))
        except ProtocolError:
            continue
        assert role in ("", "caller", "agent") and isinstance(data, bytes)


async def test_health_check(make_service):
    svc = await service(make_service, allowed_networks=["192.0.2.0/24"])  # not for health
    async with grpc.aio.insecure_channel(svc.target) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        assert await check(b"") == b"\x08\x01"


async def test_config_errors_name_the_key(make_service):
    with pytest.raises(ConfigError, match="gateways.ringcx.allowed_networks"):
        await make_service(gateways={"ringcx": {"enabled": True, "host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="gateways.ringcx.allowed_networks"):
        await make_service(gateways={"ringcx": {"enabled": True, "allowed_networks": []}})
    with pytest.raises(ConfigError, match="gateways.ringcx.tls_key"):
        await make_service(gateways={"ringcx": {"enabled": True, "tls_cert": "c.pem"}})
