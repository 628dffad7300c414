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
import struct
import time
import uuid
from typing import Any

from gateway_bench import cli, human_call, run
from nes2net_gateways.sip_message import SipMessage, parse_message
from nes2net_gateways.sip_sdp import parse_sdp

from nes2net_stream.client import encode_samples
from nes2net_stream.localstack import free_port

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


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sip = free_port()
    mulaw = encode_samples(human_call(), "mulaw")

    async def level(svc: Any, redis_url: str) -> dict[str, Any]:
        return await siprec_level(sip, mulaw, args.calls, args.duration_s, svc.cpu_seconds)

    return await run(args, "siprec", {
        "NES2NET_GATEWAYS__SIPREC__ENABLED": "true", "NES2NET_GATEWAYS__SIPREC__PORT": str(sip),
        "NES2NET_GATEWAYS__SIPREC__RTP_PORT_MIN": "0"}, level, calls=args.calls,
        call_prefix="siprec-bench-", rtp_metric="nes2net_siprec_rtp_packets_total")


if __name__ == "__main__":
    cli(__doc__, main)
