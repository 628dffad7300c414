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
import struct
import time
import uuid
from typing import Any

import aiohttp
from gateway_bench import cli, human_call, run

from nes2net_stream.client import encode_samples
from nes2net_stream.localstack import free_port

PACKET = 160  # bytes of 20 ms PCMU
TOKEN = "bench-token"


async def external_media_level(api: str, mulaw: bytes, calls: int, duration_s: float,
                               cpu: Any, prefix: str) -> dict[str, Any]:
    """Run ``calls`` real-time External Media calls; service CPU measured over their RTP."""
    loop = asyncio.get_running_loop()
    auth = {"Authorization": f"Bearer {TOKEN}"}
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
            "rtp_packets_sent": calls * n,
            "deletes_ok": sum(s == 200 for s in statuses)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    prefix = f"ast-bench-{uuid.uuid4().hex[:8]}-"
    mulaw = encode_samples(human_call(), "mulaw")

    async def level(svc: Any, redis_url: str) -> dict[str, Any]:
        return await external_media_level(f"http://127.0.0.1:{port}", mulaw, args.calls,
                                          args.duration_s, svc.cpu_seconds, prefix)

    return await run(args, "asterisk_rtp", {
        "NES2NET_GATEWAYS__ASTERISK_RTP__ENABLED": "true",
        "NES2NET_GATEWAYS__ASTERISK_RTP__PORT": str(port),
        "NES2NET_GATEWAYS__ASTERISK_RTP__API_TOKEN": TOKEN,
        "NES2NET_GATEWAYS__ASTERISK_RTP__RTP_PORT_MIN": "0",
        "NES2NET_GATEWAYS__ASTERISK_RTP__MAX_REQUESTS_PER_S": "1000"}, level,
        calls=args.calls, call_prefix=prefix, rtp_metric="nes2net_asterisk_rtp_packets_total")


if __name__ == "__main__":
    cli(__doc__, main)
