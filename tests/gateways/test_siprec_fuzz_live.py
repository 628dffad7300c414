"""Mutated SIPREC requests and RTP sent to a live gateway while a real session runs.

The parsers are fuzzed on their own in test_sip_parsing.py; here the mutations go through the
whole gateway (dispatch, dialogs, offers, port binding, answers) over real UDP: whatever comes
in, no handler fails internally, every session that was set up ends with a summary, and the
good session goes on undisturbed.
"""

import asyncio
import os
import random
import uuid

from gwsupport import FUZZ_EXAMPLES, summaries
from siprec_client import Dialog, RtpSender, SiprecClient, real_speech, rtp_packets, sdp_offer
from structlog.testing import capture_logs

from nes2net_stream.client import encode_samples

INTERNAL = ("SIP request failed", "SIPREC setup failed", "gateway failure")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random edit: byte flips, a cut, a duplicated or dropped line, inserted bytes."""
    b = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:
        del b[rng.randrange(len(b)):]
    elif kind in (2, 3):
        lines = bytes(b).split(b"\r\n")
        k = rng.randrange(len(lines))
        lines[k:k + 1] = [] if kind == 2 else [lines[k], lines[k]]
        b = bytearray(b"\r\n".join(lines))
    else:
        at = rng.randrange(len(b))
        b[at:at] = os.urandom(rng.randint(1, 40))
    return bytes(b)


async def test_mutated_requests_and_packets_never_break_the_gateway(make_service, redis_client):
    svc = await make_service(gateways={"siprec": {"enabled": True, "port": 0,
                                                  "rtp_port_min": 0}})
    (gw,) = svc.gateways
    rng = random.Random(7)
    good = Dialog(call_id=f"good-{uuid.uuid4().hex}", from_tag="g1")
    audio = rtp_packets(encode_samples(real_speech(seconds=6.0), "mulaw"))
    started: list[str] = []
    with capture_logs() as logs:
        async with SiprecClient(gw.bound_port) as src, SiprecClient(gw.bound_port) as fuzz, \
                RtpSender() as sbc:
            assert (await src.invite(good)).status == 200
            await sbc.send(good.ports[0], audio[:100])
            for k in range(max(20, FUZZ_EXAMPLES // 3)):
                d = Dialog(call_id=f"fz{k}-{uuid.uuid4().hex[:8]}", from_tag=f"f{k}")
                base = fuzz.invite_text(d, sdp=sdp_offer(ports=(40000 + 2 * k, 40001 + 2 * k)))
                fuzz.send(mutate(base.encode(), rng))
                if k % 10 == 0:  # and garbage into the good session's RTP port
                    await sbc.send(good.ports[0], [mutate(audio[0], rng) for _ in range(5)])
                    await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)
            started = [c for c in list(gw.calls) if c.startswith("fz")]
            await sbc.send(good.ports[0], audio[100:])
            await asyncio.sleep(0.3)
            assert (await src.bye(good)).status == 200
        await svc.drain()  # ends what the mutated INVITEs started, with BYEs
    assert not [e for e in logs if e["event"] in INTERNAL], [
        e for e in logs if e["event"] in INTERNAL][:3]
    (s,) = await summaries(redis_client, good.call_id)
    assert s["summary"]["end_reason"] == "stop"
    assert s["summary"]["duration_s"] >= 5.9  # mutated packets may add, never take away
    for call_id in started:  # sessions the mutants opened still got their summaries
        assert await summaries(redis_client, call_id, within=5)
