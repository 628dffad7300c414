"""SIPREC streams in wideband codecs: G.722 and Opus decoded by FFmpeg (PyAV) in the gateway."""

import asyncio
import json
import shutil
import struct
import uuid

import numpy as np
import pytest
from gwsupport import amr_nb_frames, amr_pack, gsm_frames, summaries, window_scores
from gwsupport import decode_packets as decode
from gwsupport import encode_packets as encode
from nes2net_gateways.rtp_amr import AMR
from nes2net_gateways.rtp_payload import CODECS
from siprec_client import Dialog, RtpSender, SiprecClient, real_speech, sdp_offer

from nes2net_stream.audio.io import resample
from nes2net_stream.client import stream_samples

av = pytest.importorskip("av")

#: codec -> (payload type, rtpmap, RTP units per 20 ms packet)
FORMATS = {"G722": (9, "9 G722/8000", 160), "OPUS": (111, "111 opus/48000/2", 960)}


def rtp(codec: str, packets: list[bytes], skip: tuple[int, ...] = ()) -> list[bytes]:
    pt, _, units = FORMATS[codec]
    return [struct.pack("!BBHII", 0x80, pt, k, k * units, 77) + p
            for k, p in enumerate(packets) if k not in skip]


@pytest.mark.parametrize("codec", ["G722", "OPUS"])
async def test_wideband_stream_scored_like_its_decoded_audio(make_service, redis_client, codec):
    svc = await make_service(gateways={"siprec": {"enabled": True, "port": 0,
                                                  "rtp_port_min": 0}})
    (gw,) = svc.gateways
    speech = resample(real_speech(seconds=8.0), 8000, 16000)
    packets = encode(codec, speech)
    pt, rtpmap, _ = FORMATS[codec]
    d = Dialog(call_id=f"{uuid.uuid4().hex}@sbc", from_tag="t1")
    async with SiprecClient(gw.bound_port) as src, RtpSender() as sbc:
        resp = await src.invite(d, sdp=sdp_offer(formats=f"{pt} 101", rtpmaps=(rtpmap,)))
        assert resp.status == 200, resp.get("Warning")
        assert [m.payload_types[0] for m in d.answer.media] == [pt, pt]
        await sbc.send(d.ports[0], rtp(codec, packets))
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    audio, rate = decode(codec, packets)
    assert s["summary"]["duration_s"] == pytest.approx(len(audio) / rate, abs=0.005)
    got = await window_scores(redis_client, d.call_id)
    ref = await stream_samples(svc.url, audio, rate, realtime=False)
    want = [w["score"]["spoof_probability"] for w in ref.of_type("window")]
    assert len(got) >= 2 and got == pytest.approx(want, abs=1e-4)


async def test_lost_g722_packets_are_filled_at_the_decoded_rate(make_service, redis_client):
    svc = await make_service(gateways={"siprec": {"enabled": True, "port": 0,
                                                  "rtp_port_min": 0, "codecs": ["G722"]}})
    (gw,) = svc.gateways
    packets = encode("G722", resample(real_speech(seconds=4.0), 8000, 16000))
    d = Dialog(call_id=f"{uuid.uuid4().hex}@sbc", from_tag="t1")
    async with SiprecClient(gw.bound_port) as src, RtpSender() as sbc:
        offer = sdp_offer(formats="0 9", rtpmaps=("9 G722/8000",))
        assert (await src.invite(d, sdp=offer)).status == 200
        await sbc.send(d.ports[0], rtp("G722", packets, skip=(10, 11, 50)))
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["summary"]["duration_s"] == pytest.approx(len(packets) * 0.02, abs=0.005)


async def test_the_codec_picks_the_calibration(make_service, redis_client, tmp_path):
    """``custom.codec`` of a SIPREC call (set by the gateway) selects a per-codec calibration."""
    from nes2net_stream.models.detector import Calibration

    cal = Calibration(scale=1.0, offset=-6.0, fitted=True).write(tmp_path / "g722.json")
    svc = await make_service(
        scoring={"calibrations": {"g722": str(cal)}, "calibration_key": "custom.codec"},
        gateways={"siprec": {"enabled": True, "port": 0, "rtp_port_min": 0}})
    (gw,) = svc.gateways
    packets = encode("G722", resample(real_speech(seconds=6.0), 8000, 16000))
    d = Dialog(call_id=f"{uuid.uuid4().hex}@sbc", from_tag="t1")
    async with SiprecClient(gw.bound_port) as src, RtpSender() as sbc:
        assert (await src.invite(d, sdp=sdp_offer(formats="9", rtpmaps=("9 G722/8000",)))
                ).status == 200
        await sbc.send(d.ports[0], rtp("G722", packets))
        await asyncio.sleep(0.3)
        await src.bye(d)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["metadata"]["custom"]["codec"] == "g722"
    docs = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:scores")]
    windows = [w for w in docs if w["call_id"] == d.call_id]
    assert windows and all(w["score"]["calibration"] == "g722" for w in windows)
    assert all(w["score"]["llr"] == pytest.approx(w["score"]["raw"] - 6.0, abs=2e-5)
               for w in windows)


async def record(gw, offer: str, packets: list[bytes]) -> Dialog:
    """One recording session: INVITE with ``offer`` (answered 200), ``packets`` to the first
    stream, BYE. Returns the dialog (its ``answer`` and ``call_id``)."""
    d = Dialog(call_id=f"{uuid.uuid4().hex}@sbc", from_tag="t1")
    async with SiprecClient(gw.bound_port) as src, RtpSender() as sbc:
        resp = await src.invite(d, sdp=offer)
        assert resp.status == 200, resp.get("Warning")
        await sbc.send(d.ports[0], packets)
        await asyncio.sleep(0.3)
        await src.bye(d)
    return d


def rtp_of(pt: int, payloads: list[bytes], units: int) -> list[bytes]:
    """RTP packets of ``payloads`` (payload type ``pt``, ``units`` clock units apart)."""
    return [struct.pack("!BBHII", 0x80, pt, k, k * units, 77) + p
            for k, p in enumerate(payloads)]


@pytest.mark.parametrize("octet", [True, False], ids=["octet-aligned", "bandwidth-efficient"])
async def test_amr_stream_decoded_in_the_negotiated_packing(make_service, redis_client, octet):
    """AMR (mobile calls): the answer echoes ``octet-align``; payloads re-packed and decoded."""
    svc = await make_service(gateways={"siprec": {"enabled": True, "port": 0,
                                                  "rtp_port_min": 0, "codecs": ["AMR"]}})
    (gw,) = svc.gateways
    frames = amr_nb_frames(real_speech(seconds=8.0))
    fmtp = "96 mode-change-capability=2" + ("; octet-align=1" if octet else "")
    payloads = [amr_pack([f], AMR.bits, octet) for f in frames]
    offer = sdp_offer(formats="96 0", rtpmaps=("96 AMR/8000",), fmtps=(fmtp,))
    d = await record(gw, offer, rtp_of(96, payloads, 160))
    assert all(m.payload_types[0] == 96 and m.fmtp[96] == fmtp.split(" ", 1)[1]
               for m in d.answer.media)
    (s,) = await summaries(redis_client, d.call_id)
    assert s["metadata"]["custom"]["codec"] == "amr"
    dec = CODECS["AMR"].decoder(8000, "octet-align=1")
    audio = np.frombuffer(b"".join(dec.decode(amr_pack([f], AMR.bits, True))[0]
                                   for f in frames), "<i2").astype(np.float32) / 32768.0
    assert s["summary"]["duration_s"] == pytest.approx(len(audio) / 8000, abs=0.005)
    got = await window_scores(redis_client, d.call_id)
    ref = await stream_samples(svc.url, audio, 8000, realtime=False)
    assert len(got) >= 2
    assert got == pytest.approx([w["score"]["spoof_probability"]
                                 for w in ref.of_type("window")], abs=1e-4)


async def test_g729_static_payload_type_with_annex_b_silence(make_service, redis_client):
    """G.729 (PT 18, no rtpmap line): 20 ms payloads and a SID-only payload keep the clock."""
    svc = await make_service(gateways={"siprec": {"enabled": True, "port": 0,
                                                  "rtp_port_min": 0}})
    (gw,) = svc.gateways
    rng = np.random.default_rng(8)
    payloads = [rng.integers(0, 256, 20, dtype=np.uint8).tobytes() for _ in range(150)]
    payloads[100] = b"\x12\x34"  # Annex B SID: comfort noise, here silence
    d = await record(gw, sdp_offer(formats="18"), rtp_of(18, payloads, 160))
    assert [m.payload_types[0] for m in d.answer.media] == [18, 18]
    (s,) = await summaries(redis_client, d.call_id)
    assert s["metadata"]["custom"]["codec"] == "g729"
    # the SID decodes to 10 ms; the receiver fills the rest up to the next RTP timestamp
    assert s["summary"]["duration_s"] == pytest.approx(150 * 0.02, abs=0.005)


async def test_gsm_static_payload_type_two_frames_a_packet(make_service, redis_client):
    """GSM 06.10 (PT 3, no rtpmap line), 40 ms packets: scored as the decoded audio."""
    if shutil.which("sox") is None:
        pytest.skip("needs sox (GSM encoder)")
    svc = await make_service(gateways={"siprec": {"enabled": True, "port": 0,
                                                  "rtp_port_min": 0, "codecs": ["GSM"]}})
    (gw,) = svc.gateways
    frames = gsm_frames(real_speech(seconds=8.0))
    payloads = [b"".join(frames[i:i + 2]) for i in range(0, len(frames) - 1, 2)]
    d = await record(gw, sdp_offer(formats="3 0"), rtp_of(3, payloads, 320))
    assert [m.payload_types[0] for m in d.answer.media] == [3, 3]
    (s,) = await summaries(redis_client, d.call_id)
    assert s["metadata"]["custom"]["codec"] == "gsm"
    dec = CODECS["GSM"].decoder(8000)
    pcm = b"".join(dec.decode(p)[0] for p in payloads)
    audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    assert s["summary"]["duration_s"] == pytest.approx(len(audio) / 8000, abs=0.005)
    got = await window_scores(redis_client, d.call_id)
    ref = await stream_samples(svc.url, audio, 8000, realtime=False)
    assert len(got) >= 2
    assert got == pytest.approx([w["score"]["spoof_probability"]
                                 for w in ref.of_type("window")], abs=1e-4)
