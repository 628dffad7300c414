"""SIPREC interop: SIPp (a third-party SIP stack) is the recording client of our gateway.

SIPp runs ``sipp/siprec_uac.xml`` as a UAC over UDP on 127.0.0.1: a SIPREC INVITE (multipart
SDP offer of two send-only PCMU streams, labels 1 and 2, plus RFC 7865 metadata), checks of
the 200 OK with regexp actions (``+sip.srs`` Contact, ``a=recvonly``, two RTP ports), ACK,
real speech as RTP, BYE. The service runs in the test's event loop meanwhile.

RTP comes from SIPp's ``rtp_stream`` action (SIPp 3.6.1 as in Debian 12's sip-tester), not
from ``play_pcap_audio``: both send to the first ``m=audio`` port of the answer (SIPp reads
the first match of ``m=audio`` only), but pcap playback writes UDP through a raw socket
(``Can't create raw IPv4 socket (need to run as root?)`` without CAP_NET_RAW), while
``rtp_stream`` sends ordinary UDP from SIPp's media socket (``-mi``/``-mp``, the address of
the offer, which the gateway latches to). It streams a raw file of codec bytes (no header is
skipped, so the file is headerless μ-law) in 160-byte, 20 ms packets paced by the wall clock,
with RTP timestamps advancing 160 per packet; its length is a multiple of 160 because SIPp
fills a short last packet from the start of the file. The pause before BYE is ``-d``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest
from gwsupport import summaries

from nes2net_stream.audio.io import load_audio
from nes2net_stream.client import encode_samples
from nes2net_stream.demo import sample_path

SIPP = shutil.which("sipp")
if SIPP is None:
    pytest.skip("SIPp is not installed (Debian package sip-tester, binary sipp): the SIPREC "
                "interop test needs it", allow_module_level=True)

SCENARIO = Path(__file__).parent / "sipp" / "siprec_uac.xml"
SECONDS = 7.0  # of speech streamed in real time by SIPp
FRAME = 160  # bytes of one 20 ms PCMU packet


def free_udp_port(span: int = 0) -> int:
    """An even UDP port of 127.0.0.1 that is free, as are the ``span`` ports above it."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1] & ~1
        if port < 1024 or port + span > 65535:
            continue
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(span + 1)]
        try:
            for k, sock in enumerate(socks):
                sock.bind(("127.0.0.1", port + k))
            return port
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free UDP port")


def caller_ulaw() -> bytes:
    """A real recording at 8 kHz, μ-law, cut to ``SECONDS`` (whole packets)."""
    x = load_audio(sample_path("human_call.wav"), sample_rate=8000).samples
    data = encode_samples(x[:int(SECONDS * 8000)], "mulaw")
    return data[:len(data) // FRAME * FRAME]


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path.name}: none)"


async def run_sipp(tmp: Path, sip_port: int, pause_ms: int, call_id: str
                   ) -> tuple[int, str]:
    """Run the scenario once (``-m 1``) against ``127.0.0.1:sip_port``; (exit code, report)."""
    media = free_udp_port(span=3)  # SIPp binds -mp (audio) and -mp + 2 (video)
    args = [f"127.0.0.1:{sip_port}", "-sf", str(SCENARIO), "-m", "1", "-t", "u1",
            "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mi", "127.0.0.1",
            "-mp", str(media), "-d", str(pause_ms), "-cid_str", call_id,
            "-timeout", "30s", "-timeout_error", "-nostdin",
            "-trace_err", "-error_file", str(tmp / "errors.log"),
            "-trace_msg", "-message_file", str(tmp / "messages.log"),
            "-trace_logs", "-log_file", str(tmp / "actions.log")]
    proc = await asyncio.create_subprocess_exec(
        SIPP, *args, cwd=tmp, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(45):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    report = (f"sipp {' '.join(args)}\n--- output\n{out.decode(errors='replace')[-3000:]}\n"
              f"--- errors.log\n{tail(tmp / 'errors.log')}\n"
              f"--- messages.log\n{tail(tmp / 'messages.log', 6000)}")
    return proc.returncode, report


async def test_sipp_recording_client_end_to_end(make_service, redis_client, tmp_path):
    svc = await make_service(gateways={"siprec": {"enabled": True, "port": 0,
                                                  "rtp_port_min": 0}}, limits={})
    (gw,) = svc.gateways
    audio = caller_ulaw()
    (tmp_path / "caller.ulaw").write_bytes(audio)
    played = len(audio) / 8000
    call_id = f"sipp-{uuid.uuid4().hex[:12]}-%u@127.0.0.1"  # SIPp's -cid_str: %u = call 1
    began = time.monotonic()
    rc, report = await run_sipp(tmp_path, gw.bound_port, int(played * 1000) + 600, call_id)
    assert rc == 0, f"SIPp failed (exit code {rc})\n{report}"
    assert time.monotonic() - began >= played, report

    # what SIPp's regexp actions found in the 200 OK (the checks themselves fail the call)
    log = tail(tmp_path / "actions.log")
    found = re.search(r"answer \+sip\.srs a=recvonly ports (\d+) (\d+) call (\S+)", log)
    assert found, f"no answer logged by the scenario\n{log}\n{report}"
    ports = [int(found[1]), int(found[2])]
    assert all(p > 0 for p in ports) and ports[0] != ports[1], report
    sip_call_id = found[3]
    assert sip_call_id == call_id.replace("%u", "1")

    (s,) = await summaries(redis_client, sip_call_id)
    assert s["source"]["gateway"] == "siprec", s
    assert s["channel"] == "caller" and s["summary"]["end_reason"] == "stop", s
    assert s["summary"]["duration_s"] == pytest.approx(played, abs=0.3), s
    assert s["summary"]["windows_scored"] >= 2, s
    meta = s["metadata"]
    assert (meta["ani"], meta["dnis"]) == ("+15551230001", "+18005550100"), meta
    assert meta["provider_call_id"] == "5f2b1c9e0a7d4e3f8b6a1c2d3e4f5a6b", meta
    assert meta["custom"]["labels"] == {"caller": "1", "agent": "2"}, meta
    # one recording session, one summary (the agent's stream is not scored by default)
    assert [d["call_id"] for d in await summaries(redis_client, None, within=0)
            if d["source"]["gateway"] == "siprec"] == [sip_call_id]
