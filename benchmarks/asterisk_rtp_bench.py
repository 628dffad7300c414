"""Ingest cost of Asterisk External Media calls against the generic protocol, same service.

Starts Redis (or uses ``$REDIS_URL``) and ``nes2net-stream serve`` with the ``asterisk_rtp``
gateway, then runs N concurrent real-time calls from this process as an ARI application and
Asterisk would: ``POST /calls`` (μ-law), 20 ms RTP packets of real speech to the port it
answers for ``--duration-s``, then ``DELETE`` of the call URL. The same number of
generic-protocol calls (``bench e2e``'s load generator) runs next on the same service. Prints
JSON: service CPU per call-second for each, RTP packets received and lost, windows, summaries
and the service's window latency (p99 from its histogram).

    python benchmarks/asterisk_rtp_bench.py                  # 100 calls, 30 s, 1 process
    python benchmarks/asterisk_rtp_bench.py --calls 200 --workers 2
    python benchmarks/asterisk_rtp_bench.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import torch
from siprec_bench import _metrics, _p99_bucket, _summary_windows, _value

from nes2net_stream.audio.io import load_audio
from nes2net_stream.bench.e2e import run_level
from nes2net_stream.bench.engine import emit, environment
from nes2net_stream.client import encode_samples
from nes2net_stream.demo import sample_path
from nes2net_stream.localstack import LocalRedis, ServiceProcess, free_port
from nes2net_stream.service import event_loop

PACKET = 160  # bytes of 20 ms PCMU
TOKEN = "bench-token"


async def external_media_level(api: str, mulaw: bytes, calls: int, duration_s: float,
                               cpu: Any) -> dict[str, Any]:
    """Run ``calls`` real-time External Media calls; service CPU measured over their RTP."""
    loop = asyncio.get_running_loop()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    prefix = f"ast-bench-{uuid.uuid4().hex[:8]}-"
    async with aiohttp.ClientSession(headers=auth) as http:
        async def register(k: int) -> dict[str, Any]:
            await asyncio.sleep(k * 0.01)  # a ramp of 100 calls per second
            async with http.post(f"{api}/calls", json={"call_id": f"{prefix}{k}"}) as r:
                if r.status != 201:
                    raise RuntimeError(f"registration answered {r.status}: {await r.text()}")
                return await r.json()

        made = await asyncio.gather(*(register(k) for k in range(calls)))
        rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                     local_addr=("127.0.0.1", 0))
        packets = len(mulaw) // PACKET
        n = int(duration_s * 50)
        offsets = [k % 50 for k in range(calls)]  # calls start one tick apart
        cpu0, t0 = cpu(), time.monotonic()
        for tick in range(n + 50):  # every 20 ms one packet per call, paced by the clock
            for k, m in enumerate(made):
                i = tick - offsets[k]
                if not 0 <= i < n:
                    continue
                chunk = mulaw[(i % packets) * PACKET:(i % packets + 1) * PACKET]
                head = struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, (i * PACKET) & 0xFFFFFFFF,
                                   1000 + k)
                rtp.sendto(head + chunk, ("127.0.0.1", m["port"]))
            await asyncio.sleep(max(0.0, t0 + (tick + 1) * 0.02 - time.monotonic()))
        cpu_used, elapsed = cpu() - cpu0, time.monotonic() - t0
        rtp.close()
        await asyncio.sleep(0.5)  # the media stops before the hang-up, as on a real call

        async def delete(m: dict[str, Any]) -> int:
            async with http.delete(m["call_url"]) as r:
                return r.status

        statuses = await asyncio.gather(*(delete(m) for m in made))
    return {"calls": calls, "duration_s": duration_s, "elapsed_s": round(elapsed, 2),
            "service_cpu_s": round(cpu_used, 2),
            "cpu_ms_per_call_second": round(1000 * cpu_used / (calls * duration_s), 3),
            "rtp_packets_sent": calls * n, "prefix": prefix,
            "deletes_ok": sum(s == 200 for s in statuses)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    redis = None if os.environ.get("REDIS_URL") else LocalRedis()
    redis_url = os.environ.get("REDIS_URL") or redis.url  # type: ignore[union-attr]
    port = free_port()
    svc = ServiceProcess(redis_url, model=args.model, log_path=args.log, extra_env={
        "NES2NET_SERVER__WORKERS": str(args.workers), "NES2NET_HTTP__PORT": "0",
        "NES2NET_GATEWAYS__ASTERISK_RTP__ENABLED": "true",
        "NES2NET_GATEWAYS__ASTERISK_RTP__PORT": str(port),
        "NES2NET_GATEWAYS__ASTERISK_RTP__API_TOKEN": TOKEN,
        "NES2NET_GATEWAYS__ASTERISK_RTP__RTP_PORT_MIN": "0",
        "NES2NET_GATEWAYS__ASTERISK_RTP__MAX_REQUESTS_PER_S": "1000",
        "NES2NET_LIMITS__MAX_CALLS": "5000"})
    audio = load_audio(sample_path("human_call.wav"), sample_rate=8000).samples
    try:
        await asyncio.to_thread(svc.wait_ready, 180)
        await asyncio.sleep(1.0)
        ext = await external_media_level(f"http://127.0.0.1:{port}",
                                         encode_samples(audio, "mulaw"), args.calls,
                                         args.duration_s, svc.cpu_seconds)
        for _ in range(60):  # until every call has ended (its last windows scored)
            m = _metrics(svc.http + "/metrics")
            if _value(m, "nes2net_calls_ended_total") >= args.calls:
                break
            await asyncio.sleep(0.5)
        rtp = "nes2net_asterisk_rtp_packets_total"
        ext.update({
            "rtp_received": _value(m, rtp, result="received"),
            "rtp_lost": _value(m, rtp, result="lost"),
            "windows_scored": _summary_windows(redis_url, ext.pop("prefix")),
            "window_latency_p99_s_bucket": _p99_bucket(m, "nes2net_window_latency_seconds"),
            "calls_ended": {lab["reason"]: v for n, lab, v in m
                            if n == "nes2net_calls_ended_total" and v}})
        generic = await run_level(svc.url, redis_url, audio, 8000, args.calls, args.duration_s,
                                  cpu=svc.cpu_seconds)
    finally:
        code = await asyncio.to_thread(svc.stop, 60)
        if redis is not None:
            redis.stop()
    return {"benchmark": "asterisk_rtp_ingest", "workers": args.workers, "model": args.model,
            "asterisk_rtp": ext,
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
