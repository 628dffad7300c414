"""WebRTC ingest: a real aiortc client over loopback, signalling errors, limits and auth."""

import asyncio
import json
import time
from fractions import Fraction
from pathlib import Path

import aiohttp
import pytest

aiortc = pytest.importorskip("aiortc", reason="WebRTC tests need the 'webrtc' extra (aiortc)")
from aioice.ice import get_host_addresses  # noqa: E402
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription  # noqa: E402
from aiortc.contrib.media import MediaPlayer  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "webrtc-test-token-0123456789"
FAST_WINDOWS = {"window_s": 2.0, "hop_s": 0.5}

if not get_host_addresses(use_ipv4=True, use_ipv6=False):
    pytest.skip("aiortc gathers no ICE candidate on loopback and this host has no other "
                "IPv4 address", allow_module_level=True)


def base_url(svc) -> str:
    return f"http://127.0.0.1:{svc.http.port}"


async def post_offer(svc, payload, *, token=None, raw=None, content_type="application/json"):
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = raw if raw is not None else json.dumps(payload).encode()
    async with aiohttp.ClientSession() as s, s.post(
            f"{base_url(svc)}/v1/webrtc/offer", data=body, headers=headers) as r:
        return r.status, await r.json()


async def local_offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


class Client:
    """An aiortc softphone: one audio track from a WAV file and the events data channel."""

    def __init__(self, wav: Path | None, codec: str | None = None, track=None):
        self.pc = RTCPeerConnection()
        self.player = MediaPlayer(str(wav)) if wav is not None else None
        track = track or self.player.audio
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        if codec:
            caps = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences([c for c in caps if c.mimeType == codec])
        self.channel = self.pc.createDataChannel("events")
        self.events: list[dict] = []
        self.channel.on("message", lambda m: self.events.append(json.loads(m)))

    async def call(self, svc, call_id: str, metadata: dict) -> dict:
        status, answer = await post_offer(svc, {"type": "offer", "call_id": call_id,
                                                "sdp": await local_offer(self.pc),
                                                "metadata": metadata})
        assert status == 200, answer
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return answer

    async def wait(self, predicate, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, [e["type"] for e in self.events]
            await asyncio.sleep(0.05)

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


@pytest.mark.both_loops
async def test_webrtc_calls_opus_and_g711_end_with_summaries_in_redis(make_service, redis_client):
    svc = await make_service(windows=FAST_WINDOWS)
    wav = FIXTURES / "synthetic_short.wav"
    opus, pcmu = Client(wav), Client(wav, codec="audio/PCMU")
    answers = await asyncio.gather(opus.call(svc, "rtc-opus", {"agent": "a-17"}),
                                   pcmu.call(svc, "rtc-pcmu", {}))
    assert answers[0]["call_ids"] == ["rtc-opus"] and answers[0]["events_channel"] == "events"
    assert len(svc.http.webrtc.peers) == 2
    await asyncio.gather(*(c.wait(lambda c=c: c.player.audio.readyState == "ended")
                           for c in (opus, pcmu)))
    # the Opus client hangs up with a stop message and reads its summary on the data channel
    opus.channel.send(json.dumps({"type": "stop"}))
    await opus.wait(lambda: opus.of_type("summary"))
    await opus.pc.close()
    # the G.711 client just closes its peer connection
    await pcmu.wait(lambda: pcmu.of_type("window"))
    await pcmu.pc.close()
    started = {c.of_type("started")[0]["call_id"]: c.of_type("started")[0] for c in (opus, pcmu)}
    assert started["rtc-opus"]["sample_rate"] == 48000   # Opus decodes to 48 kHz
    assert started["rtc-pcmu"]["sample_rate"] == 8000    # G.711 decodes to 8 kHz
    windows = opus.of_type("window")
    assert len(windows) >= 2 and all(0.0 <= w["score"]["spoof_probability"] <= 1.0
                                     for w in windows)
    summary = opus.of_type("summary")[0]
    assert summary["summary"]["end_reason"] == "stop"
    assert summary["summary"]["windows_scored"] == len(windows)
    assert 2.5 < summary["summary"]["duration_s"] < 4.5  # the 3.5 s file, as received
    deadline = time.monotonic() + 10
    while svc.http.webrtc.peers or len(redis_client.xrange("nes2net:alerts")) < 4:
        assert time.monotonic() < deadline, svc.http.webrtc.peers
        await asyncio.sleep(0.1)
    docs = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")]
    summaries = {d["call_id"]: d for d in docs if d["type"] == "summary"}
    assert set(summaries) == {"rtc-opus", "rtc-pcmu"}
    for doc in summaries.values():
        assert doc["source"]["kind"] == "webrtc" and doc["source"]["gateway"] == "webrtc"
        assert doc["source"]["remote"].startswith("127.0.0.1")
        assert doc["summary"]["windows_scored"] >= 1
    assert summaries["rtc-opus"]["metadata"] == {"agent": "a-17"}
    assert redis_client.hget("nes2net:call:rtc-pcmu", "ended") == "1"
    assert svc.ctx.calls == {}


class FastTrack(aiortc.MediaStreamTrack):
    """An audio track that makes its 20 ms frames as fast as the sender takes them."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.pts = 0

    async def recv(self):
        import av
        import numpy as np

        await asyncio.sleep(0)
        tone = (3000 * np.sin(np.arange(self.pts, self.pts + 960) * 0.05)).astype("<i2")
        frame = av.AudioFrame.from_ndarray(tone[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, self.pts
        frame.time_base = Fraction(1, 48000)
        self.pts += 960
        return frame


async def test_a_peer_faster_than_real_time_is_rate_limited(make_service, redis_client):
    svc = await make_service(windows=FAST_WINDOWS,
                             limits={"max_realtime_factor": 1.0, "realtime_burst_s": 1.0})
    client = Client(None, codec="audio/PCMU", track=FastTrack())
    await client.call(svc, "rtc-fast", {})
    await client.wait(lambda: client.of_type("summary"))
    summary = client.of_type("summary")[0]["summary"]
    assert (summary["end_reason"], summary["detail"]) == ("limit", "rate_limited")
    await client.pc.close()
    assert svc.ctx.calls == {}


@pytest.mark.parametrize("flood,code", [(["ping"] * 80, "rate_limited"),
                                        (["x" * 20000], "frame_too_large")])
async def test_data_channel_floods_and_oversized_messages_end_the_call(make_service, flood,
                                                                       code):
    svc = await make_service(windows=FAST_WINDOWS)
    client = Client(FIXTURES / "synthetic_short.wav")
    await client.call(svc, f"rtc-{code}", {})
    await client.wait(lambda: client.of_type("started"))
    for text in flood:
        client.channel.send(json.dumps({"type": text}) if text == "ping" else text)
    await client.wait(lambda: client.of_type("summary"))
    assert [e["code"] for e in client.of_type("error")] == [code]
    summary = client.of_type("summary")[0]["summary"]
    assert (summary["end_reason"], summary["detail"]) == ("error", code)
    await client.pc.close()


async def test_bad_requests_are_refused_with_json_errors(make_service):
    svc = await make_service(webrtc={"max_offer_bytes": 4096})
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    good = await local_offer(pc)
    no_fingerprint = "\r\n".join(ln for ln in good.split("\r\n")
                                 if not ln.startswith("a=fingerprint"))
    cases = [
        ({"type": "offer", "sdp": "garbage"}, None, 400, "bad_sdp"),
        ({"type": "offer", "sdp": no_fingerprint}, None, 400, "bad_sdp"),
        ({"type": "offer"}, None, 400, "bad_sdp"),
        ({"type": "answer", "sdp": good}, None, 400, "bad_request"),
        ({"type": "offer", "sdp": good, "video": True}, None, 400, "bad_request"),
        ({"type": "offer", "sdp": good, "call_id": "bad id!"}, None, 400, "bad_request"),
        (None, b"{not json", 400, "bad_json"),
        (None, b"x" * 5000, 413, "request_too_large"),
    ]
    for payload, raw, status, code in cases:
        got_status, body = await post_offer(svc, payload, raw=raw)
        assert (got_status, body["error"]["code"]) == (status, code), body
        assert body["error"]["message"]
    status, body = await post_offer(svc, None, raw=b"{}", content_type="text/plain")
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"
    await pc.close()
    assert svc.http.webrtc.peers == {}


async def test_offer_without_audio_track_is_refused(make_service):
    svc = await make_service()
    data_only = RTCPeerConnection()
    data_only.createDataChannel("events")
    receive_only = RTCPeerConnection()
    receive_only.addTransceiver("audio", direction="recvonly")
    for pc in (data_only, receive_only):
        status, body = await post_offer(svc, {"type": "offer", "sdp": await local_offer(pc)})
        assert status == 400 and body["error"]["code"] == "no_audio_track", body
        await pc.close()
    assert svc.http.webrtc.peers == {}


async def test_peer_limit_duplicate_id_hangup_and_connect_timeout(make_service):
    svc = await make_service(webrtc={"max_peers": 1, "connect_timeout_s": 1.5})
    clients = []

    async def offer(call_id):
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendonly")
        clients.append(pc)
        return await post_offer(svc, {"type": "offer", "call_id": call_id,
                                      "sdp": await local_offer(pc)})

    status, first = await offer("limit-1")  # answered, never completed by the client
    assert status == 200 and first["call_ids"] == ["limit-1"]
    status, body = await offer("limit-2")
    assert status == 429 and body["error"]["code"] == "too_many_peers"
    assert "limit 1" in body["error"]["message"]
    async with aiohttp.ClientSession() as s:
        url = f"{base_url(svc)}/v1/webrtc/peers/{first['peer_id']}"
        async with s.delete(url) as r:
            assert r.status == 200
        async with s.delete(url) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "no_such_peer"
    assert svc.http.webrtc.peers == {}
    status, second = await offer("limit-3")
    assert status == 200
    status, body = await offer("limit-3")
    assert status == 429  # still one peer at most: the limit is checked first
    # a peer that never connects is closed and released after connect_timeout_s
    deadline = time.monotonic() + 10
    while svc.http.webrtc.peers:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    svc2 = await make_service(webrtc={"max_peers": 5})
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    clients.append(pc)
    sdp = await local_offer(pc)
    assert (await post_offer(svc2, {"type": "offer", "call_id": "dup", "sdp": sdp}))[0] == 200
    status, body = await post_offer(svc2, {"type": "offer", "call_id": "dup", "sdp": sdp})
    assert status == 409 and body["error"]["code"] == "duplicate_call_id"
    for pc in clients:
        await pc.close()


async def test_signalling_requires_the_service_token(make_service):
    svc = await make_service(auth={"mode": "required", "tokens": [TOKEN]})
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    offer = {"type": "offer", "sdp": await local_offer(pc)}
    status, body = await post_offer(svc, offer)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await post_offer(svc, offer, token="wrong-token-0123456789")
    assert status == 401
    assert svc.http.webrtc.peers == {}
    status, body = await post_offer(svc, offer, token=TOKEN)
    assert status == 200 and body["type"] == "answer" and body["sdp"].startswith("v=0")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base_url(svc)}/v1/webrtc/config") as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        async with s.get(f"{base_url(svc)}/v1/webrtc/config?token={TOKEN}") as r:
            assert r.status == 200
            cfg = await r.json()
    assert cfg["offer_url"] == "/v1/webrtc/offer" and "synthetic_call.wav" in cfg["samples"]
    await pc.close()


@pytest.mark.both_loops
async def test_drain_ends_webrtc_calls_with_summaries(make_service, redis_client, tmp_path):
    import soundfile as sf
    from helpers import tone_bursts

    wav = tmp_path / "long.wav"
    sf.write(wav, tone_bursts(20.0, 16000), 16000, subtype="PCM_16")
    svc = await make_service(windows=FAST_WINDOWS)
    client = Client(wav)
    await client.call(svc, "rtc-drain", {})
    await client.wait(lambda: client.of_type("window"))
    await svc.drain()
    await client.wait(lambda: client.of_type("summary"), timeout_s=5)
    assert client.of_type("error")[0]["code"] == "shutting_down"
    summary = client.of_type("summary")[0]["summary"]
    assert summary["end_reason"] == "shutdown" and summary["duration_s"] < 15
    docs = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")]
    assert [d["summary"]["end_reason"] for d in docs if d["type"] == "summary"] == ["shutdown"]
    assert svc.http.webrtc.peers == {}
    with pytest.raises(aiohttp.ClientConnectionError):  # the listener is closed
        await post_offer(svc, {"type": "offer", "sdp": "v=0"})
    await client.pc.close()


def test_frames_of_any_layout_become_mono_pcm16():
    import av
    import numpy as np

    from nes2net_stream.web.webrtc_track import frame_to_pcm16

    left = np.arange(-480, 480, dtype=np.int16) * 30
    right = -left // 2
    packed = av.AudioFrame.from_ndarray(np.stack([left, right], 1).reshape(1, -1),
                                        format="s16", layout="stereo")
    assert np.array_equal(frame_to_pcm16(packed),
                          ((left.astype(np.int32) + right) // 2).astype(np.int16))
    planar = av.AudioFrame.from_ndarray(np.stack([left, left]).astype(np.float32) / 32768,
                                        format="fltp", layout="stereo")
    assert np.abs(frame_to_pcm16(planar).astype(int) - left).max() <= 1
    mono = av.AudioFrame.from_ndarray(left[None, :], format="s16", layout="mono")
    out = frame_to_pcm16(mono)
    assert out.dtype == np.int16 and np.array_equal(out, left)
