"""Asterisk External Media over RTP: the control API over real HTTP, RTP over real UDP."""

import asyncio
import json
import shutil
import socket
import struct

import aiohttp
import numpy as np
import pytest
from gwsupport import free_port_run, gsm_frames, summaries, window_scores
from siprec_client import RtpSender, real_speech, rtp_packets, send_rtp
from structlog.testing import capture_logs

from nes2net_stream.audio.io import float_to_pcm16
from nes2net_stream.client import encode_samples, stream_samples
from nes2net_stream.errors import ConfigError

TOKEN = "t0ken-for-the-ari-app"


async def service(make_service, limits=None, **section):
    cfg = {"enabled": True, "port": 0, "rtp_port_min": 0, "api_token": TOKEN, **section}
    svc = await make_service(gateways={"asterisk_rtp": cfg}, limits=limits or {})
    (gw,) = svc.gateways
    svc.gw = gw
    svc.api = f"http://127.0.0.1:{gw.bound_port}"
    return svc


async def request(method: str, url: str, body=None, token: str | None = TOKEN,
                  data: bytes | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(
            method, url, json=body, data=data, headers=headers) as resp:
        return resp.status, await resp.json()


def l16_packets(samples: np.ndarray, rate: int, pt: int) -> list[bytes]:
    """20 ms RTP packets of big-endian 16-bit samples (Asterisk's slin on RTP)."""
    pcm = float_to_pcm16(samples).astype(">i2").tobytes()
    frame = rate // 50
    return [struct.pack("!BBHII", 0x80, pt, 7 + k, k * frame, 0x1234) + pcm[2 * i:2 * (i + frame)]
            for k, i in enumerate(range(0, len(pcm) // 2, frame))]


async def test_lost_and_reordered_packets_keep_the_call_whole(make_service, redis_client):
    """Losses are concealed, a swapped pair is put back in order, and packets still held
    back waiting for a lost one are fed when the call is deleted."""
    svc = await service(make_service, rtp_reorder_packets=3)
    packets = rtp_packets(encode_samples(real_speech(seconds=4.0), "mulaw"))
    sent = [p for k, p in enumerate(packets) if k not in (50, 120, 197)]  # 197: near the end
    sent[80], sent[81] = sent[81], sent[80]
    status, made = await request("POST", f"{svc.api}/calls", {"call_id": "loss.1"})
    assert status == 201, made
    await send_rtp(made["port"], sent)
    await asyncio.sleep(0.3)
    status, state = await request("GET", made["call_url"])
    assert (state["packets"], state["reordered"], state["late"]) == (197, 1, 0)
    assert state["lost"] == 2 and state["concealed_s"] == pytest.approx(0.04)
    # 198 and 199 are held back waiting for 197 (up to 3 packets): 3.94 s fed so far
    assert state["audio_s"] == pytest.approx(3.94, abs=0.001)
    status, _ = await request("DELETE", made["call_url"])
    (s,) = await summaries(redis_client, "loss.1")
    assert s["summary"]["duration_s"] == pytest.approx(4.0, abs=0.001)


@pytest.mark.both_loops
async def test_an_external_media_call_end_to_end(make_service, redis_client):
    svc = await service(make_service)
    caller = encode_samples(real_speech(), "mulaw")
    status, made = await request("POST", f"{svc.api}/calls", {
        "call_id": "1700000000.42", "format": "ulaw", "channel_id": "em-1700000000.42",
        "ani": "+15551230001", "dnis": "+18005550100", "custom": {"queue": "billing"}})
    assert status == 201, made
    assert made["external_host"] == f"127.0.0.1:{made['port']}" and made["format"] == "ulaw"
    assert made["call_url"] == f"{svc.api}/calls/1700000000.42"
    await send_rtp(made["port"], rtp_packets(caller))
    await asyncio.sleep(0.3)
    status, state = await request("GET", made["call_url"])
    assert status == 200 and state["packets"] == len(rtp_packets(caller)) and state["lost"] == 0
    status, ended = await request("DELETE", made["call_url"])
    assert status == 200 and ended["ended"] == "stop"
    (s,) = await summaries(redis_client, "1700000000.42")
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] == pytest.approx(len(caller) / 8000, abs=0.03)
    assert s["source"]["gateway"] == "asterisk_rtp"
    assert s["metadata"] == {
        "provider": "asterisk_rtp", "provider_call_id": "1700000000.42",
        "provider_stream_id": "em-1700000000.42", "ani": "+15551230001",
        "dnis": "+18005550100", "custom": {"codec": "pcmu", "queue": "billing", "format": "ulaw"}}
    # scored exactly as the same bytes over the generic protocol
    got = await window_scores(redis_client, "1700000000.42")
    ref = await stream_samples(svc.url, real_speech(), 8000, encoding="mulaw", realtime=False)
    want = [w["score"]["spoof_probability"] for w in ref.of_type("window")]
    assert len(got) >= 2 and got == pytest.approx(want, abs=1e-6)
    assert svc.gw.calls == {}
    status, err = await request("DELETE", made["call_url"])
    assert status == 404 and err["error"] == "not_found"


async def test_slin16_is_big_endian_and_scored_like_the_same_samples(make_service,
                                                                      redis_client):
    svc = await service(make_service)
    x = real_speech(seconds=9.0)
    x16 = np.repeat(x, 2)  # 16 kHz samples; the exact values do not matter, only equality
    status, made = await request("POST", f"{svc.api}/calls", {"call_id": "wb-1",
                                                              "format": "slin16"})
    assert status == 201
    await send_rtp(made["port"], l16_packets(x16, 16000, 118))
    await asyncio.sleep(0.3)
    await request("DELETE", made["call_url"])
    got = await window_scores(redis_client, "wb-1")
    ref = await stream_samples(svc.url, x16, 16000, realtime=False)
    want = [w["score"]["spoof_probability"] for w in ref.of_type("window")]
    assert len(got) >= 2 and got == pytest.approx(want, abs=1e-6)


async def test_format_slin_delivering_ulaw_is_decoded_as_ulaw(make_service, redis_client):
    """Some Asterisk versions send PCMU for ``format=slin``: decoded, with a warning."""
    svc = await service(make_service)
    caller = encode_samples(real_speech(seconds=8.0), "mulaw")
    _, made = await request("POST", f"{svc.api}/calls", {"call_id": "nb-1", "format": "slin"})
    with capture_logs() as logs:
        await send_rtp(made["port"], rtp_packets(caller))
        await asyncio.sleep(0.3)
    await request("DELETE", made["call_url"])
    assert any("delivers PCMU" in e["event"] for e in logs)
    got = await window_scores(redis_client, "nb-1")
    ref = await stream_samples(svc.url, real_speech(seconds=8.0), 8000, encoding="mulaw",
                               realtime=False)
    assert got == pytest.approx([w["score"]["spoof_probability"]
                                 for w in ref.of_type("window")], abs=1e-6) and len(got) >= 1


async def test_g729_frames_are_decoded(make_service, redis_client):
    """``format=g729`` (Asterisk with a G.729 codec module): PT 18, 10-byte frames."""
    pytest.importorskip("av")
    svc = await service(make_service)
    _, made = await request("POST", f"{svc.api}/calls", {"call_id": "g729-1",
                                                         "format": "g729"})
    rng = np.random.default_rng(11)
    packets = [struct.pack("!BBHII", 0x80, 18, 5 + k, 160 * k, 0x729) +
               rng.integers(0, 256, 20, dtype=np.uint8).tobytes() for k in range(100)]
    await send_rtp(made["port"], packets)
    await asyncio.sleep(0.3)
    await request("DELETE", made["call_url"])
    (s,) = await summaries(redis_client, "g729-1")
    assert s["summary"]["duration_s"] == pytest.approx(2.0, abs=0.005)
    assert s["metadata"]["custom"]["codec"] == "g729"


async def test_gsm_frames_are_decoded(make_service, redis_client):
    """``format=gsm`` (Asterisk's built-in GSM 06.10): PT 3, 33-byte frames of 20 ms."""
    pytest.importorskip("av")
    if shutil.which("sox") is None:
        pytest.skip("needs sox (GSM encoder)")
    svc = await service(make_service)
    _, made = await request("POST", f"{svc.api}/calls", {"call_id": "gsm-1", "format": "gsm"})
    frames = gsm_frames(real_speech(seconds=4.0))
    packets = [struct.pack("!BBHII", 0x80, 3, 9 + k, 160 * k, 0x6510) + f
               for k, f in enumerate(frames)]
    await send_rtp(made["port"], packets)
    await asyncio.sleep(0.3)
    await request("DELETE", made["call_url"])
    (s,) = await summaries(redis_client, "gsm-1")
    assert s["summary"]["duration_s"] == pytest.approx(len(frames) * 0.02, abs=0.005)
    assert s["summary"]["speech_s"] > 1.0 and s["metadata"]["custom"]["codec"] == "gsm"


async def test_another_codecs_payload_type_ends_the_call_with_an_error(make_service,
                                                                       redis_client):
    svc = await service(make_service)
    _, made = await request("POST", f"{svc.api}/calls", {"call_id": "pt-1", "format": "alaw"})
    packets = rtp_packets(encode_samples(real_speech(seconds=1.0), "mulaw"), pt=0)
    comfort = rtp_packets(b"\x40", pt=13, seq=900)  # comfort noise first: skipped, no error
    await send_rtp(made["port"], comfort + packets)
    (s,) = await summaries(redis_client, "pt-1")
    assert s["summary"]["end_reason"] == "error"
    assert s["summary"]["detail"] == "unsupported_format"


async def test_media_from_a_second_sender_is_ignored(make_service, redis_client):
    svc = await service(make_service)
    _, made = await request("POST", f"{svc.api}/calls", {"call_id": "latch-1"})
    audio = encode_samples(real_speech(seconds=3.0), "mulaw")
    async with RtpSender() as first, RtpSender() as second:
        await first.send(made["port"], rtp_packets(audio, ssrc=1))
        await second.send(made["port"], rtp_packets(audio, ssrc=2, seq=5000))
        await asyncio.sleep(0.3)
    _, state = await request("GET", made["call_url"])
    assert state["invalid"] == len(rtp_packets(audio)) and state["audio_s"] == pytest.approx(3.0)
    await request("DELETE", made["call_url"])
    (s,) = await summaries(redis_client, "latch-1")
    assert s["summary"]["duration_s"] == pytest.approx(3.0, abs=0.03)


async def test_silence_ends_the_call_and_so_does_no_media_at_all(make_service, redis_client):
    svc = await service(make_service, limits={"start_timeout_s": 0.5}, media_timeout_s=0.5)
    _, a = await request("POST", f"{svc.api}/calls", {"call_id": "quiet-1"})
    _, b = await request("POST", f"{svc.api}/calls", {"call_id": "never-1"})
    await send_rtp(a["port"], rtp_packets(encode_samples(real_speech(seconds=1.0), "mulaw")))
    (s,) = await summaries(redis_client, "quiet-1")
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("timeout",
                                                                        "idle_timeout")
    (s,) = await summaries(redis_client, "never-1")
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("timeout",
                                                                        "start_timeout")
    assert b["port"] != a["port"]


async def test_control_api_errors_are_clear(make_service):
    svc = await service(make_service, max_requests_per_s=200)
    calls = f"{svc.api}/calls"
    assert await request("POST", calls, {"call_id": "x"}, token=None) == (
        401, {"error": "unauthorized", "message": "missing or invalid bearer token"})
    assert (await request("POST", calls, {"call_id": "x"}, token="wrong"))[0] == 401
    status, err = await request("POST", calls, data=b"{not json")
    assert status == 400 and err["error"] == "bad_json"
    status, err = await request("POST", calls, {"call_id": "x", "colour": "red"})
    assert status == 400 and "colour" in err["message"]
    status, err = await request("POST", calls, {"format": "ulaw"})
    assert status == 400 and err["error"] == "bad_message"
    status, err = await request("POST", calls, {"call_id": "bad id with spaces"})
    assert status == 400 and "call id" in err["message"]
    status, err = await request("POST", calls, {"call_id": "x", "format": "ilbc"})
    assert status == 415 and "ilbc" in err["message"]
    status, err = await request("POST", calls, data=b" " * 20_000)
    assert status == 413
    assert (await request("POST", calls, {"call_id": "dup"}))[0] == 201
    status, err = await request("POST", calls, {"call_id": "dup"})
    assert status == 409 and err["error"] == "duplicate_call_id"
    assert (await request("GET", f"{svc.api}/nothing"))[0] == 404
    assert (await request("DELETE", f"{calls}/dup"))[0] == 200
    status, made = await request("POST", calls, {"call_id": "sip:a/b@pbx=1"})
    assert status == 201 and made["call_url"] == f"{calls}/sip%3Aa%2Fb%40pbx%3D1"
    status, ended = await request("DELETE", made["call_url"])
    assert status == 200 and ended["call_id"] == "sip:a/b@pbx=1"


async def test_control_requests_are_rate_limited(make_service):
    svc = await service(make_service, max_requests_per_s=2)
    statuses = [(await request("GET", f"{svc.api}/calls/none"))[0] for _ in range(8)]
    assert statuses[:4] == [404] * 4 and 429 in statuses


async def test_a_draining_service_refuses_new_calls_and_ends_active_ones(make_service,
                                                                         redis_client):
    svc = await service(make_service)
    _, made = await request("POST", f"{svc.api}/calls", {"call_id": "drain-1"})
    await send_rtp(made["port"], rtp_packets(encode_samples(real_speech(seconds=2.0), "mulaw")))
    await svc.gw.stop_serving()
    status, err = await request("POST", f"{svc.api}/calls", {"call_id": "drain-2"})
    assert status == 503 and err["error"] == "shutting_down"
    await svc.drain()
    (s,) = await summaries(redis_client, "drain-1")
    assert s["summary"]["end_reason"] == "shutdown"


async def test_no_free_rtp_port_is_an_overload_and_the_call_ends(make_service,
                                                                   redis_client):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:  # half of the one pair
        taken.bind(("127.0.0.1", 0))
        even = taken.getsockname()[1] & ~1
        svc = await service(make_service, rtp_port_min=even, rtp_port_max=even + 1)
        status, err = await request("POST", f"{svc.api}/calls", {"call_id": "full-1"})
    assert status == 429 and "no free RTP port" in err["message"]
    (s,) = await summaries(redis_client, "full-1")
    assert (s["summary"]["end_reason"], s["summary"]["detail"]) == ("error", "too_many_calls")


async def test_configuration_is_checked_naming_the_key(make_service):
    with pytest.raises(ConfigError, match=r"gateways\.asterisk_rtp\.api_token"):
        await make_service(gateways={"asterisk_rtp": {"enabled": True, "port": 0,
                                                      "host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match=r"gateways\.asterisk_rtp\.default_format"):
        await service(make_service, default_format="mp3")
    with pytest.raises(ConfigError, match=r"gateways\.asterisk_rtp\.rtp_port_max"):
        await service(make_service, rtp_port_min=31000, rtp_port_max=30000)
    with pytest.raises(ConfigError, match=r"gateways\.asterisk_rtp\.media_networks"):
        await service(make_service, media_networks=["10.0.0.0/33"])


async def test_media_networks_restrict_who_may_send(make_service, redis_client):
    svc = await service(make_service, media_networks=["192.0.2.0/24"])
    _, made = await request("POST", f"{svc.api}/calls", {"call_id": "net-1"})
    await send_rtp(made["port"], rtp_packets(encode_samples(real_speech(seconds=1.0), "mulaw")))
    await asyncio.sleep(0.2)
    _, state = await request("GET", made["call_url"])
    assert state["packets"] == 0 and state["invalid"] == 50 and state["media_from"] is None
    await request("DELETE", made["call_url"])


async def test_two_ingest_workers_each_own_their_calls(small_bundle, redis_server,
                                                       redis_client, tmp_path):
    """With ``server.workers = 2`` both processes share the control port; each call's URL
    names the port of the process that owns its RTP port, so DELETE always reaches it."""
    from nes2net_stream.localstack import ServiceProcess

    port = free_port_run(3)
    svc = ServiceProcess(redis_server.url, model=str(small_bundle), log_path=tmp_path / "log",
                         extra_env={"NES2NET_SERVER__WORKERS": "2", "NES2NET_HTTP__PORT": "0",
                                    "NES2NET_GATEWAYS__ASTERISK_RTP__ENABLED": "true",
                                    "NES2NET_GATEWAYS__ASTERISK_RTP__PORT": str(port),
                                    "NES2NET_GATEWAYS__ASTERISK_RTP__API_TOKEN": TOKEN,
                                    "NES2NET_GATEWAYS__ASTERISK_RTP__RTP_PORT_MIN": "0"})
    audio = encode_samples(real_speech(seconds=5.0), "mulaw")

    async def one(k: int) -> tuple[int, int]:
        _, made = await request("POST", f"http://127.0.0.1:{port}/calls",
                                {"call_id": f"mw-{k}"})
        await send_rtp(made["port"], rtp_packets(audio))
        await asyncio.sleep(0.3)
        status, _ = await request("DELETE", made["call_url"])
        return int(made["call_url"].split(":")[2].split("/")[0]), status

    try:
        await asyncio.to_thread(svc.wait_ready, 120)
        await asyncio.sleep(1.0)  # the second worker may bind a moment after the first
        results = await asyncio.gather(*(one(k) for k in range(8)))
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
    assert {s for _, s in results} == {200} and code == 0
    assert {p for p, _ in results} <= {port + 1, port + 2}
    for k in range(8):
        (s,) = await summaries(redis_client, f"mw-{k}")
        assert s["summary"]["end_reason"] == "stop"
        assert s["summary"]["duration_s"] == pytest.approx(5.0, abs=0.03)


async def test_the_control_api_over_tls(make_service, redis_client, tmp_path):
    import ssl

    from pki import make_pki

    pki = make_pki(tmp_path)
    svc = await service(make_service, tls_cert=str(pki["cert"]), tls_key=str(pki["key"]))
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    api = f"https://127.0.0.1:{svc.gw.bound_port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{api}/calls", json={"call_id": "tls-1"}, ssl=ctx) as r:
            assert r.status == 201
            made = await r.json()
        assert made["call_url"] == f"{api}/calls/tls-1"
        await send_rtp(made["port"], rtp_packets(encode_samples(real_speech(seconds=2.0),
                                                                "mulaw")))
        await asyncio.sleep(0.3)
        async with http.delete(made["call_url"], ssl=ctx) as r:
            assert r.status == 200
    (s,) = await summaries(redis_client, "tls-1")
    assert s["summary"]["duration_s"] == pytest.approx(2.0, abs=0.03)
    with pytest.raises(ConfigError, match=r"gateways\.asterisk_rtp\.tls_cert"):
        await service(make_service, tls_cert=str(tmp_path / "missing.pem"),
                      tls_key=str(pki["key"]))
    with pytest.raises(ConfigError, match=r"gateways\.asterisk_rtp\.tls_cert"):
        await service(make_service, tls_cert=str(pki["cert"]))


async def test_the_codec_picks_the_calibration_and_the_application_may_name_it(
        make_service, redis_client, tmp_path):
    """``custom.codec`` is the format's codec unless the registration names the trunk's."""
    from nes2net_stream.models.detector import Calibration

    cal = Calibration(scale=1.0, offset=-6.0, fitted=True).write(tmp_path / "g729.json")
    svc = await make_service(
        scoring={"calibrations": {"g729": str(cal)}, "calibration_key": "custom.codec"},
        gateways={"asterisk_rtp": {"enabled": True, "port": 0, "rtp_port_min": 0,
                                   "api_token": TOKEN}})
    api = f"http://127.0.0.1:{svc.gateways[0].bound_port}/calls"
    audio = rtp_packets(encode_samples(real_speech(seconds=6.0), "mulaw"))
    for call_id, custom in (("trunk-g729", {"codec": "g729"}), ("plain-ulaw", {})):
        _, made = await request("POST", api, {"call_id": call_id, "custom": custom})
        await send_rtp(made["port"], audio)
        await asyncio.sleep(0.3)
        await request("DELETE", made["call_url"])
    docs = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:scores")]
    g729 = [w for w in docs if w["call_id"] == "trunk-g729"]
    ulaw = [w for w in docs if w["call_id"] == "plain-ulaw"]
    assert g729 and all(w["score"]["calibration"] == "g729" for w in g729)
    assert ulaw and all(w["score"].get("calibration") is None for w in ulaw)
    (s,) = await summaries(redis_client, "plain-ulaw")
    assert s["metadata"]["custom"] == {"codec": "pcmu", "format": "ulaw"}


async def test_the_documented_metrics_count_packets_and_requests(make_service, redis_client):
    svc = await service(make_service)
    _, made = await request("POST", f"{svc.api}/calls", {"call_id": "metrics-1"})
    await send_rtp(made["port"], rtp_packets(encode_samples(real_speech(seconds=1.0), "mulaw")))
    await asyncio.sleep(0.3)
    await request("DELETE", made["call_url"])
    await request("GET", made["call_url"])
    reg = svc.ctx.metrics.registry
    assert reg.get_sample_value("nes2net_asterisk_rtp_packets_total",
                                {"result": "received"}) == 50
    assert reg.get_sample_value("nes2net_asterisk_rtp_requests_total", {"status": "201"}) == 1
    assert reg.get_sample_value("nes2net_asterisk_rtp_requests_total", {"status": "404"}) == 1
