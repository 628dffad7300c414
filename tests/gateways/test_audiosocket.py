"""Asterisk AudioSocket gateway over real TCP connections: frames, rates, bad input, networks."""

import asyncio
import uuid

import pytest
from gwsupport import FUZZ_EXAMPLES, alerts, pcm16, speech, summaries
from hypothesis import given, settings
from hypothesis import strategies as st
from nes2net_gateways.audiosocket import (
    AUDIO_RATES,
    FrameDecoder,
    StreamState,
    describe_error,
)

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError


def frame(kind, payload=b""):
    """kind (1 byte), payload length (2 bytes, big-endian), payload."""
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


def audio_frames(seconds, rate=8000, kind=0x10, seed=0):
    """slin little-endian mono, 20 ms per frame (320 bytes at 8 kHz), as Asterisk sends it."""
    raw = pcm16(speech(seconds, rate, seed))
    step = rate // 50 * 2
    return [frame(kind, raw[i:i + step]) for i in range(0, len(raw), step)]


async def service(make_service, limits=None, **section):
    cfg = {"enabled": True, "port": 0, **section}
    svc = await make_service(gateways={"audiosocket": cfg}, limits=limits or {})
    (gw,) = svc.gateways
    svc.as_port = gw.bound_port
    return svc


async def call(svc, data, *, chunk=None, read=True, close=True):
    """Connect like Asterisk, write ``data`` (optionally in ``chunk``-byte pieces), return
    what the server sent back before it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.as_port)
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    try:
        for p in pieces:
            writer.write(p)
            await writer.drain()
        if close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), 10) if read else b""
    except ConnectionResetError:  # the server dropped us while we were still writing
        return b""
    finally:
        writer.close()


@pytest.mark.both_loops
async def test_documented_call_uuid_audio_dtmf_hangup(make_service, redis_client):
    svc = await service(make_service)
    cid = uuid.uuid4()
    data = frame(0x01, cid.bytes) + b"".join(audio_frames(6.0)) + frame(0x03, b"5") + frame(0x00)
    assert await call(svc, data) == b""
    (s,) = await summaries(redis_client, str(cid))
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    assert s["summary"]["detail"] == "hangup frame"
    assert s["summary"]["duration_s"] == pytest.approx(6.0, abs=0.01)
    assert s["summary"]["windows_scored"] >= 2
    assert s["source"] == {"kind": "gateway", "gateway": "audiosocket",
                           "remote": s["source"]["remote"]}
    assert s["source"]["remote"].startswith("127.0.0.1:")
    assert s["metadata"] == {"provider": "audiosocket", "provider_call_id": str(cid),
                             "custom": {"sample_rate": 8000}}


@pytest.mark.parametrize("kind", [0x12, 0x16])
async def test_higher_rate_kinds_and_byte_by_byte_delivery(make_service, redis_client, kind):
    svc = await service(make_service)
    cid = uuid.uuid4()
    rate = AUDIO_RATES[kind]
    data = frame(0x01, cid.bytes) + b"".join(audio_frames(4.0, rate, kind))
    # odd-sized TCP writes split headers and payloads; socket close ends the call normally
    await call(svc, data, chunk=997)
    (s,) = await summaries(redis_client, str(cid))
    assert s["metadata"]["custom"]["sample_rate"] == rate
    assert s["summary"]["duration_s"] == pytest.approx(4.0, abs=0.01)
    assert s["summary"]["end_reason"] == "stop" and s["summary"]["detail"] == "socket closed"


async def test_asterisk_error_frame_ends_call(make_service, redis_client):
    svc = await service(make_service)
    ids = [uuid.uuid4(), uuid.uuid4()]
    await call(svc, frame(1, ids[0].bytes) + b"".join(audio_frames(1.0)) + frame(0xFF, b"\x01"))
    await call(svc, frame(1, ids[1].bytes) + b"".join(audio_frames(1.0)) + frame(0xFF, b"\x02"))
    (a,) = await summaries(redis_client, str(ids[0]))
    (b,) = await summaries(redis_client, str(ids[1]))
    assert (a["summary"]["end_reason"], a["summary"]["detail"]) == ("stop", "caller hung up")
    assert (b["summary"]["end_reason"], b["summary"]["detail"]) == (
        "error", "frame forwarding error")


@pytest.mark.parametrize("case,code", [
    ("audio_before_uuid", 0x11), ("unknown_kind", 0x10), ("oversized", 0x12),
    ("odd_payload", 0x10), ("short_uuid", 0x10), ("second_uuid", 0x10), ("rate_change", 0x17),
    ("idle", 0x13), ("no_uuid", 0x13), ("truncated", 0x10),
])
async def test_bad_input_closes_that_connection_only(make_service, redis_client, case, code):
    svc = await service(make_service, limits={"max_frame_bytes": 4096, "idle_timeout_s": 0.5,
                                              "start_timeout_s": 0.5})
    good_id = uuid.uuid4()
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.as_port)
    writer.write(frame(1, good_id.bytes) + b"".join(audio_frames(2.0)))
    trickle_frames = audio_frames(10.0, seed=2)

    async def trickle():  # the good call keeps streaming (20 ms every 50 ms) meanwhile
        for f in trickle_frames:
            writer.write(f)
            await asyncio.sleep(0.05)

    keep = asyncio.create_task(trickle())
    cid = uuid.uuid4()
    head = frame(1, cid.bytes) + audio_frames(0.2)[0]
    data, close = {
        "audio_before_uuid": (audio_frames(0.2)[0], True),
        "unknown_kind": (head + frame(0x05, b"xx"), True),
        "oversized": (head + b"\x10\xff\xff", True),
        "odd_payload": (head + frame(0x10, b"\x00" * 321), True),
        "short_uuid": (frame(1, b"\x01" * 8), True),
        "second_uuid": (head + frame(1, uuid.uuid4().bytes), True),
        "rate_change": (head + audio_frames(0.1, 16000, 0x12)[0], True),
        "idle": (head, False),
        "no_uuid": (b"", False),
        "truncated": (head + frame(0x10, b"\x00" * 320)[:100], True),
    }[case]
    got = await call(svc, data, close=close)
    assert got == (b"\xff\x00\x01" + bytes([code]) if code else b"")
    keep.cancel()
    # the other connection keeps streaming and ends normally
    writer.write(b"".join(audio_frames(2.0, seed=1)) + frame(0))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    (ok,) = await summaries(redis_client, str(good_id))
    assert ok["summary"]["end_reason"] == "stop"
    assert ok["summary"]["duration_s"] >= 4.0
    bad = [d for d in alerts(redis_client) if d["call_id"] == str(cid)]
    if case in ("odd_payload", "second_uuid", "rate_change", "idle", "truncated", "unknown_kind",
                "oversized"):
        (s,) = await summaries(redis_client, str(cid))  # started calls are summarised
        assert s["summary"]["end_reason"] == "error"
    else:
        assert bad == []


async def test_error_frames_can_be_disabled(make_service):
    svc = await service(make_service, error_frames=False)
    assert await call(svc, frame(0x42, b"x")) == b""


async def test_only_allowed_networks_may_connect(make_service, redis_client):
    svc = await service(make_service, allowed_networks=["10.0.0.0/8", "192.0.2.7"])
    cid = uuid.uuid4()
    got = await call(svc, frame(1, cid.bytes) + b"".join(audio_frames(2.0)))
    assert got == b""
    await asyncio.sleep(0.3)
    assert alerts(redis_client) == [] and svc.ctx.calls == {}
    gw = svc.gateways[0]
    assert gw.allowed("10.1.2.3") and gw.allowed("::ffff:192.0.2.7")
    assert not gw.allowed("127.0.0.1") and not gw.allowed("garbage") and not gw.allowed(None)


async def test_allowed_networks_required_beyond_loopback(make_service):
    with pytest.raises(ConfigError, match="allowed_networks"):
        await service(make_service, host="0.0.0.0")
    with pytest.raises(ConfigError, match="empty"):
        await service(make_service, allowed_networks=[])
    with pytest.raises(ConfigError, match="allowed_networks"):
        await service(make_service, allowed_networks=["10.0.0.300/8"])


def test_error_payload_descriptions():
    assert describe_error(b"\x01") == "caller hung up"
    assert describe_error(b"\x06") == "frame forwarding error, memory error"
    assert describe_error(b"") == "error (no code)"
    assert describe_error(b"\x80\x01") == "error code 8001"


@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(frame, st.sampled_from([0x00, 0x01, 0x03, 0x10, 0x12, 0x18, 0x7f, 0xFF]),
              st.binary(max_size=24)),
    st.just(frame(0x01, uuid.UUID(int=7).bytes))), max_size=12))
def test_fuzz_frame_decoder_and_state_raise_only_protocol_errors(chunks):
    decoder, state = FrameDecoder(32), StreamState()
    try:
        for chunk in chunks:
            decoder.push(chunk)
            for f in decoder.frames():
                ev = state.on_frame(f)
                assert ev.type in ("start", "audio", "dtmf", "hangup", "error")
                if ev.type == "audio":
                    assert len(ev.data) % 2 == 0 and ev.rate in AUDIO_RATES.values()
    except ProtocolError as err:
        assert err.code in ("frame_too_large", "bad_message", "unknown_message",
                            "audio_before_start", "bad_audio_frame", "unsupported_format")
    else:  # memory stays bounded: at most one incomplete frame is held back
        assert decoder.pending < 3 + 32
