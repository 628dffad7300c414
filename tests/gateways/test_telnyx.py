"""Telnyx media streaming gateway: documented frames over loopback, token auth, re-ordering."""

import asyncio
import base64
import json
import random

import pytest
from gwsupport import (
    FUZZ_EXAMPLES,
    amr_pack,
    chunks,
    decode_packets,
    encode_packets,
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nes2net_gateways.rtp_amr import AMR_WB
from nes2net_gateways.telnyx import ReorderBuffer, parse_message

from nes2net_stream.audio import g711
from nes2net_stream.audio.io import float_to_pcm16
from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

PATH = "/v1/gateways/telnyx"
TOKEN = "telnyx-stream-token-0123456789"
CCID = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"


def frames(inbound, outbound=None, *, order=None):
    """media frames of one or two tracks, as in Telnyx's AsyncAPI examples."""
    out = []
    for track, payloads in (("inbound", inbound), ("outbound", outbound or [])):
        for i, p in enumerate(payloads):
            out.append({"event": "media", "media": {"track": track, "chunk": str(i + 1),
                                                    "timestamp": str(20 * i), "payload": p}})
    out.sort(key=lambda m: int(m["media"]["chunk"]))  # tracks interleaved
    if order:
        out = order(out)
    for seq, m in enumerate(out, start=2):
        m["sequence_number"] = str(seq)
    return out


def conversation(stream_id, media, *, encoding="PCMU", rate=8000, ccid=CCID, extra=None):
    start = {"user_id": "3E6F995F-85F7-4705-9741-53B116D28237", "call_control_id": ccid,
             "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
             "from": "+13122010094", "to": "+13122123456", "tags": ["TAG1"],
             "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
             "custom_parameters": {"customer_id": "customer_123"},
             "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1},
             **(extra or {})}
    msgs = [{"event": "connected", "version": "1.0.0"},
            {"event": "start", "sequence_number": "1", "stream_id": stream_id, "start": start}]
    for m in media:
        msgs.append({**m, "stream_id": stream_id})
    msgs.append({"event": "dtmf", "stream_id": stream_id, "sequence_number": "9998",
                 "dtmf": {"digit": "1"}})
    msgs.append({"event": "stop", "sequence_number": "9999", "stream_id": stream_id,
                 "stop": {"user_id": start["user_id"], "call_control_id": ccid}})
    return [json.dumps(m) for m in msgs]


def local_shuffle(window):
    """Permute frames so that none moves further than ``window`` places (same seed)."""
    def order(items):
        rng = random.Random(7)
        keyed = [(i + rng.uniform(0, window), m) for i, m in enumerate(items)]
        return [m for _, m in sorted(keyed, key=lambda t: t[0])]
    return order


async def service(make_service, **section):
    return await make_service(gateways={"telnyx": {"enabled": True, "path": PATH, **section}})


async def test_documented_conversation_both_tracks(make_service, redis_client):
    svc = await service(make_service, score_agent=True, stream_auth_token=TOKEN)
    sid = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
    media = frames(mulaw_b64_frames(6.0, seed=1), mulaw_b64_frames(6.0, seed=2))
    msgs = conversation(sid, media)
    msgs.insert(5, json.dumps({"event": "error", "stream_id": sid, "payload": {
        "code": 100002, "title": "Unknown error", "detail": "reported by the test"}}))
    _, code, _ = await play(ws_url(svc, PATH), msgs,
                            headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 1000
    found = await summaries(redis_client, f"{CCID}:{sid}", n=2)
    assert {d["channel"] for d in found} == {"caller", "agent"}
    for d in found:
        assert d["summary"]["duration_s"] == pytest.approx(6.0, abs=0.05)
        assert d["summary"]["end_reason"] == "stop"
        assert d["source"] == {"kind": "gateway", "gateway": "telnyx",
                               "remote": d["source"]["remote"]}
        assert d["metadata"] == {
            "provider": "telnyx", "provider_call_id": CCID, "provider_stream_id": sid,
            "ani": "+13122010094", "dnis": "+13122123456",
            "account_id": "3E6F995F-85F7-4705-9741-53B116D28237",
            "custom": {"customer_id": "customer_123", "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
                       "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f"}}


async def test_out_of_order_media_is_restored(make_service, redis_client):
    svc = await service(make_service)
    payloads = mulaw_b64_frames(6.0, seed=3)
    await play(ws_url(svc, PATH), conversation("in-order", frames(payloads)))
    await play(ws_url(svc, PATH), conversation("shuffled", frames(
        payloads, order=local_shuffle(6))))
    ordered = await summaries(redis_client, f"{CCID}:in-order")
    shuffled = await summaries(redis_client, f"{CCID}:shuffled")
    assert ordered[0]["summary"]["duration_s"] == shuffled[0]["summary"]["duration_s"]
    a = await window_scores(redis_client, f"{CCID}:in-order")
    b = await window_scores(redis_client, f"{CCID}:shuffled")
    assert len(a) >= 2 and b == pytest.approx(a, abs=1e-4)


async def test_pcma_and_big_endian_l16(make_service, redis_client):
    svc = await service(make_service, stream_in_call_id=False)
    x = speech(5.0, 16000, seed=4)
    be = [base64.b64encode(c).decode() for c in chunks(pcm16(x, ">"), 640)]
    le = [base64.b64encode(c).decode() for c in chunks(pcm16(x, "<"), 640)]
    await play(ws_url(svc, PATH), conversation("s1", frames(be), encoding="L16", rate=16000,
                                               ccid="v3:l16-be"))
    svc_le = await service(make_service, l16_byte_order="le", stream_in_call_id=False)
    await play(ws_url(svc_le, PATH), conversation("s2", frames(le), encoding="L16",
                                                  rate=16000, ccid="v3:l16-le"))
    await summaries(redis_client, "v3:l16-be")
    await summaries(redis_client, "v3:l16-le")
    a = await window_scores(redis_client, "v3:l16-be")
    b = await window_scores(redis_client, "v3:l16-le")
    assert len(a) >= 1 and b == pytest.approx(a, abs=1e-4)
    alaw = g711.alaw_encode(float_to_pcm16(speech(5.0, 8000, seed=5))).tobytes()
    pcma = [base64.b64encode(c).decode() for c in chunks(alaw, 160)]
    await play(ws_url(svc, PATH), conversation("s3", frames(pcma), encoding="PCMA",
                                               ccid="v3:pcma"))
    (s,) = await summaries(redis_client, "v3:pcma")
    assert s["summary"]["windows_scored"] >= 1 and s["summary"]["speech_s"] > 2.0


@pytest.mark.parametrize("codec,declared_rate", [("G722", 16000), ("OPUS", 48000)])
async def test_hd_codecs_decoded_per_track_after_reordering(make_service, redis_client, codec,
                                                            declared_rate):
    """``stream_codec`` G722 / OPUS: RTP payloads decoded per track, scored as their audio."""
    pytest.importorskip("av")
    svc = await service(make_service, score_agent=True, stream_in_call_id=False)
    caller, agent = speech(6.0, 16000, seed=8), speech(6.0, 16000, seed=9)
    packets = {"in": encode_packets(codec, caller), "out": encode_packets(codec, agent)}
    b64 = {k: [base64.b64encode(p).decode() for p in v] for k, v in packets.items()}
    ccid = f"v3:{codec.lower()}"
    # Opus is declared as RFC 7587 names it (48 kHz, 2 channels); it decodes to mono
    extra = {"media_format": {"encoding": codec, "sample_rate": declared_rate,
                              "channels": 2 if codec == "OPUS" else 1}}
    msgs = conversation("hd", frames(b64["in"], b64["out"], order=local_shuffle(6)),
                        ccid=ccid, extra=extra)
    _, code, _ = await play(ws_url(svc, PATH), msgs)
    assert code == 1000
    found = {d["channel"]: d for d in await summaries(redis_client, ccid, n=2)}
    for role, key in (("caller", "in"), ("agent", "out")):
        audio, rate = decode_packets(codec, packets[key])
        assert found[role]["summary"]["duration_s"] == pytest.approx(len(audio) / rate,
                                                                     abs=0.005)
        got = await window_scores(redis_client, ccid, channel=role)
        assert len(got) >= 2
        assert got == pytest.approx(await reference_scores(svc, audio, rate), abs=1e-4)


async def test_amr_wb_packing_read_off_the_stream(make_service, redis_client):
    """AMR-WB (mobile HD calls): bandwidth-efficient RFC 4867 payloads, decoded per track."""
    pytest.importorskip("av")
    svc = await service(make_service, score_agent=True, stream_in_call_id=False)
    rng = random.Random(10)

    def payloads(n):
        frames = [bytes([2 << 3 | 4]) + rng.getrandbits(256).to_bytes(32, "big")
                  for _ in range(n)]
        return [amr_pack([f], AMR_WB.bits, octet=False) for f in frames]

    inbound, outbound = payloads(150), payloads(100)
    b64 = [[base64.b64encode(p).decode() for p in x] for x in (inbound, outbound)]
    extra = {"media_format": {"encoding": "AMR-WB", "sample_rate": 16000, "channels": 1}}
    _, code, _ = await play(ws_url(svc, PATH), conversation("amr", frames(*b64),
                                                            ccid="v3:amr-wb", extra=extra))
    assert code == 1000
    found = {d["channel"]: d for d in await summaries(redis_client, "v3:amr-wb", n=2)}
    assert found["caller"]["summary"]["duration_s"] == pytest.approx(3.0, abs=0.005)
    assert found["agent"]["summary"]["duration_s"] == pytest.approx(2.0, abs=0.005)


async def test_token_auth_on_upgrade(make_service, redis_client):
    svc = await service(make_service, stream_auth_token=TOKEN)
    url = ws_url(svc, PATH)
    assert await handshake_status(url) == 401
    assert await handshake_status(url, {"Authorization": "Bearer wrong-token-0000000"}) == 401
    assert await handshake_status(ws_url(svc, PATH, "token=wrong")) == 401
    assert await handshake_status(url, {"Authorization": f"Bearer {TOKEN}"}) == 101
    assert await handshake_status(ws_url(svc, PATH, f"token={TOKEN}")) == 101
    await asyncio.sleep(0.2)
    assert redis_client.xlen("nes2net:alerts") == 0
    with pytest.raises(ConfigError, match="gateways.telnyx.stream_auth_token"):
        await service(make_service, auth="required")


@pytest.mark.parametrize("case,close", [
    ("speex", 4415), ("stereo", 4415), ("media_first", 4400), ("binary", 4400),
    ("bad_track", 4400), ("bad_chunk", 4400), ("huge", 4413), ("no_ccid", 4400),
])
async def test_bad_input(make_service, case, close):
    svc = await service(make_service)
    msgs = conversation("bad", frames(mulaw_b64_frames(0.5)))
    start = json.loads(msgs[1])
    media = json.loads(msgs[2])
    bad = {
        "speex": [msgs[0], msgs[1].replace('"PCMU"', '"SPEEX"')],
        "stereo": [msgs[0], msgs[1].replace('"channels": 1', '"channels": 2')],
        "media_first": [msgs[0], msgs[2]],
        "binary": [msgs[0], msgs[1], b"\x00" * 160],
        "bad_track": [msgs[1], json.dumps({**media, "media": {**media["media"], "track": "x"}})],
        "bad_chunk": [msgs[1], json.dumps({**media, "media": {**media["media"], "chunk": "a"}})],
        "huge": [msgs[1], "{" + " " * 20_000 + "}"],
        "no_ccid": [json.dumps({**start, "start": {}})],
    }[case]
    _, code, reason = await play(ws_url(svc, PATH), bad)
    assert code == close and reason


def test_reorder_buffer_releases_in_order_and_counts_losses():
    buf = ReorderBuffer(window=3)
    out = []
    for chunk in (2, 1, 3, 5, 4, 4, 9, 10, 11, 12):  # 6-8 lost, a duplicate 4
        out += buf.push(chunk, bytes([chunk]))
    out += buf.flush()
    assert [b[0] for b in out] == [1, 2, 3, 4, 5, 9, 10, 11, 12]
    assert (buf.lost, buf.late) == (3, 1)


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.integers(1, 8), st.integers(1, 60), st.randoms(use_true_random=False))
def test_reorder_buffer_property(window, n, rnd):
    keyed = sorted(range(1, n + 1), key=lambda i: i + rnd.uniform(0, window))
    buf = ReorderBuffer(window)
    out = [b for c in keyed for b in buf.push(c, c.to_bytes(2, "big"))] + buf.flush()
    assert [int.from_bytes(b, "big") for b in out] == list(range(1, n + 1))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3), max_leaves=8)
messages = st.fixed_dictionaries(
    {"event": st.sampled_from(["start", "media", "stop", "dtmf", "error", "mark", 5])},
    optional={"sequence_number": st.one_of(st.text(max_size=4), st.integers()),
              "stream_id": json_values,
              "payload": json_values,
              "start": st.fixed_dictionaries({}, optional={
                  "call_control_id": json_values, "custom_parameters": json_values,
                  "media_format": st.fixed_dictionaries({}, optional={
                      "encoding": st.sampled_from(["PCMU", "PCMA", "L16", "OPUS", 1]),
                      "sample_rate": json_values, "channels": json_values})}),
              "media": st.fixed_dictionaries({}, optional={
                  "track": st.sampled_from(["inbound", "outbound", None]),
                  "chunk": json_values, "payload": st.text(max_size=12)})})


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(messages.map(json.dumps), st.text(max_size=40), st.binary(max_size=40)))
def test_parser_fuzz_raises_only_protocol_errors(text):
    try:
        parse_message(text, 4096)
    except ProtocolError as err:
        assert err.code in ("bad_json", "bad_message", "unsupported_format", "frame_too_large")
