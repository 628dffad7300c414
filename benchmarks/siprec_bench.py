"""Ingest cost of SIPREC calls against the generic protocol, on the same service.

Starts Redis (or uses ``$REDIS_URL``) and ``nes2net-stream serve`` with the SIPREC gateway,
then runs N concurrent real-time recording sessions from this process: SIPREC INVITE (SDP of
two send-only PCMU streams + RFC 7865 metadata) over UDP, ACK, 20 ms RTP packets of real
speech on both streams for ``--duration-s``, BYE. The same number of generic-protocol calls
(``bench e2e``'s load generator, caller audio only) runs next on the same service. Prints JSON:
service CPU per call-second for each, RTP packets received and lost, windows, summaries, and
the service's window latency (p99 from its histogram).

    python benchmarks/siprec_bench.py                   # 100 calls, 30 s, 1 process
    python benchmarks/siprec_bench.py --calls 200 --workers 2
    python benchmarks/siprec_bench.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import struct
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from nes2net_gateways.sip_message import SipMessage, parse_message
from nes2net_gateways.sip_sdp import parse_sdp
from prometheus_client.parser import text_string_to_metric_families

from nes2net_stream.audio.io import load_audio
from nes2net_stream.bench.e2e import run_level
from nes2net_stream.bench.engine import emit, environment
from nes2net_stream.client import encode_samples
from nes2net_stream.demo import sample_path
from nes2net_stream.localstack import LocalRedis, ServiceProcess, free_port
from nes2net_stream.service import event_loop

PACKET = 160  # bytes of 20 ms PCMU


def _offer(ip: str, call: int) -> tuple[str, bytes]:
    sdp = "\r\n".join(["v=0", f"o=bench {call} 1 IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}",
                       "t=0 0"] + [line for label in ("1", "2") for line in (
                           f"m=audio {40000 + 2 * int(label)} RTP/AVP 0", "a=rtpmap:0 PCMU/8000",
                           f"a=label:{label}", "a=sendonly")]) + "\r\n"
    meta = ("<?xml version='1.0'?><recording xmlns='urn:ietf:params:xml:ns:recording:1'>"
            "<datamode>complete</datamode>"
            + "".join(f"<participant participant_id='p{k}'><nameID aor='sip:+1555000{k}@x'/>"
                      f"</participant><stream stream_id='s{k}' session_id='S'><label>{k}"
                      f"</label></stream><participantstreamassoc participant_id='p{k}'><send>"
                      f"s{k}</send></participantstreamassoc>" for k in (1, 2))
            + "</recording>")
    body = (f"--b\r\nContent-Type: application/sdp\r\n\r\n{sdp}--b\r\nContent-Type: "
            f"application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n"
            f"{meta}\r\n--b--\r\n").encode()
    return "multipart/mixed;boundary=b", body


class _Sip(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[SipMessage]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = parse_message(data)
        fut = self.waiting.get(msg.call_id)
        if fut is not None and not fut.done() and (msg.status or 0) >= 200:
            fut.set_result(msg)


async def _request(transport: Any, proto: _Sip, msg: SipMessage) -> SipMessage:
    fut = asyncio.get_running_loop().create_future()
    proto.waiting[msg.call_id] = fut
    for _ in range(6):  # UDP: retransmit as a SIP client would
        transport.sendto(msg.to_bytes())
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(fut), 2.0)
    raise TimeoutError(f"no answer to {msg.method}")


def _msg(method: str, call_id: str, port: int, local: int, to: str, cseq: int,
         headers: list[tuple[str, str]] = (), body: bytes = b"") -> SipMessage:  # type: ignore[assignment]
    return SipMessage(method, f"sip:srs@127.0.0.1:{port}", None, None, [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex[:16]}"),
        ("Max-Forwards", "70"), ("From", "<sip:bench@127.0.0.1>;tag=b1"), ("To", to),
        ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:bench@127.0.0.1:{local}>;+sip.src"), *headers], body)


async def siprec_level(sip_port: int, mulaw: bytes, calls: int, duration_s: float,
                       cpu: Any) -> dict[str, Any]:
    """Run ``calls`` real-time recording sessions; service CPU measured over their RTP."""
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(min(8, calls)):  # several client ports: SO_REUSEPORT spreads by address
        t, p = await loop.create_datagram_endpoint(_Sip, local_addr=("127.0.0.1", 0),
                                                   remote_addr=("127.0.0.1", sip_port))
        socks.append((t, p, t.get_extra_info("sockname")[1]))
    rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                 local_addr=("127.0.0.1", 0))
    ctype, body = _offer("127.0.0.1", 0)
    ids = [f"siprec-bench-{uuid.uuid4().hex[:12]}@127.0.0.1" for _ in range(calls)]

    async def invite(k: int) -> tuple[str, list[int]]:
        t, p, local = socks[k % len(socks)]
        await asyncio.sleep(k * 0.01)  # a ramp of 100 calls per second
        resp = await _request(t, p, _msg("INVITE", ids[k], sip_port, local, "<sip:srs@x>", 1,
                                         [("Require", "siprec"), ("Content-Type", ctype)],
                                         body))
        if resp.status != 200:
            raise RuntimeError(f"INVITE answered {resp.status}")
        to = resp.get("To") or ""
        t.sendto(_msg("ACK", ids[k], sip_port, local, to, 1).to_bytes())
        return to, [m.port for m in parse_sdp(resp.body.decode()).media]

    dialogs = await asyncio.gather(*(invite(k) for k in range(calls)))
    packets = len(mulaw) // PACKET
    n = int(duration_s * 50)
    ssrc = [struct.pack("!I", 1000 + k) for k in range(2 * calls)]
    # calls start one tick apart over the first second, as calls of a live system do (all
    # starting together would finish every window at the same moment)
    offsets = [k % 50 for k in range(calls)]
    cpu0, t0 = cpu(), time.monotonic()
    for tick in range(n + 50):  # every 20 ms one packet per stream, paced by the clock
        for k, (_, ports) in enumerate(dialogs):
            i = tick - offsets[k]
            if not 0 <= i < n:
                continue
            chunk = mulaw[(i % packets) * PACKET:(i % packets + 1) * PACKET]
            head = struct.pack("!BBHI", 0x80, 0, i & 0xFFFF, (i * PACKET) & 0xFFFFFFFF)
            for s, port in enumerate(ports):
                rtp.sendto(head + ssrc[2 * k + s] + chunk, ("127.0.0.1", port))
        await asyncio.sleep(max(0.0, t0 + (tick + 1) * 0.02 - time.monotonic()))
    cpu_used, elapsed = cpu() - cpu0, time.monotonic() - t0
    await asyncio.sleep(0.5)  # the media stops before the BYE, as on a real hang-up
    await asyncio.gather(*(_request(socks[k % len(socks)][0], socks[k % len(socks)][1],
                                    _msg("BYE", ids[k], sip_port, socks[k % len(socks)][2],
                                         dialogs[k][0], 2)) for k in range(calls)))
    rtp.close()
    for t, _, _ in socks:
        t.close()
    return {"calls": calls, "duration_s": duration_s, "elapsed_s": round(elapsed, 2),
            "service_cpu_s": round(cpu_used, 2),
            "cpu_ms_per_call_second": round(1000 * cpu_used / (calls * duration_s), 3),
            "rtp_packets_sent": 2 * calls * n}


def _metrics(url: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a ``/metrics`` page: (name, labels, value)."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text)
            for s in fam.samples]


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == x for k, x in labels.items()))


def _p99_bucket(samples: list[tuple[str, dict[str, str], float]], name: str) -> float | None:
    """The upper bound of the histogram bucket holding the 99th percentile."""
    buckets: dict[float, float] = {}
    for n, lab, v in samples:
        if n == name + "_bucket":
            le = float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    total = buckets.get(float("inf"), 0.0)
    return next((le for le, v in sorted(buckets.items()) if v >= 0.99 * total),
                None) if total else None


def _summary_windows(redis_url: str, prefix: str) -> int:
    """Windows scored in the calls whose summaries (in Redis) have ids starting ``prefix``."""
    import json

    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    docs = [json.loads(f["event"]) for _, f in client.xrange("nes2net:alerts")
            if f.get("type") == "summary"]
    return sum(d["summary"]["windows_scored"] or 0 for d in docs
               if d["call_id"].startswith(prefix))


async def main(args: argparse.Namespace) -> dict[str, Any]:
    redis = None if os.environ.get("REDIS_URL") else LocalRedis()
    redis_url = os.environ.get("REDIS_URL") or redis.url  # type: ignore[union-attr]
    sip = free_port()
    svc = ServiceProcess(redis_url, model=args.model, log_path=args.log, extra_env={
        "NES2NET_SERVER__WORKERS": str(args.workers), "NES2NET_HTTP__PORT": "0",
        "NES2NET_GATEWAYS__SIPREC__ENABLED": "true", "NES2NET_GATEWAYS__SIPREC__PORT": str(sip),
        "NES2NET_GATEWAYS__SIPREC__RTP_PORT_MIN": "0", "NES2NET_LIMITS__MAX_CALLS": "5000"})
    audio = load_audio(sample_path("human_call.wav"), sample_rate=8000).samples
    try:
        await asyncio.to_thread(svc.wait_ready, 180)
        await asyncio.sleep(1.0)
        siprec = await siprec_level(sip, encode_samples(audio, "mulaw"), args.calls,
                                    args.duration_s, svc.cpu_seconds)
        for _ in range(60):  # until every call has ended (its last windows scored)
            m = _metrics(svc.http + "/metrics")
            if _value(m, "nes2net_calls_ended_total") >= args.calls:
                break
            await asyncio.sleep(0.5)
        rtp = "nes2net_siprec_rtp_packets_total"
        siprec.update({
            "rtp_received": _value(m, rtp, result="received"),
            "rtp_lost": _value(m, rtp, result="lost"),
            "windows_scored": _summary_windows(redis_url, "siprec-bench-"),
            "window_latency_p99_s_bucket": _p99_bucket(m, "nes2net_window_latency_seconds"),
            "calls_ended": {lab["reason"]: v for n, lab, v in m
                            if n == "nes2net_calls_ended_total" and v}})
        generic = await run_level(svc.url, redis_url, audio, 8000, args.calls, args.duration_s,
                                  cpu=svc.cpu_seconds)
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
        if redis is not None:
            redis.stop()
    return {"benchmark": "siprec_ingest", "workers": args.workers, "model": args.model,
            "siprec": siprec,
            "generic": {"calls": generic.calls,
                        "cpu_ms_per_call_second": generic.cpu_ms_per_call_second,
                        "windows": generic.windows, "latency_p99_ms": generic.latency_p99_ms,
                        "sustained": generic.sustained},
            "service_exit_code": code, "environment": environment(torch.device("cpu")),
            "date": datetime.now(UTC).date().isoformat()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--model", default="builtin:demo")
    ap.add_argument("--smoke", action="store_true", help="5 calls of 5 s")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--log", type=Path, help="write the service's log here")
    a = ap.parse_args()
    if a.smoke:
        a.calls, a.duration_s = 5, 5.0
    emit(event_loop.run(main(a), "auto"), a.out)
