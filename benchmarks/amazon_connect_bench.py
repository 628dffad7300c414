"""Ingest cost of calls read from Kinesis Video Streams (Amazon Connect, Chime) on one service.

Starts Redis (or uses ``$REDIS_URL``), the tests' Kinesis Video Streams stand-in
(``tests/gateways/kvs_fake.py``: signed ``getDataEndpoint``/``getMedia`` on loopback) in this
process, and ``nes2net-stream serve`` with the ``amazon_connect`` gateway pointed at it. Each
of N contacts has a stream of 1 s MKV fragments (customer track: the bundled human sample
call, agent track: the synthetic one), served in real time; the contacts are registered
through the control API like Connect's Lambda would, read for ``--duration-s`` and then end
when their streams move on to another contact. Prints JSON: the service's CPU per
contact-second (both tracks read, the customer's scored), windows, summaries, the p99 window
latency (histogram bucket) and the stand-in's signature rejections (must be 0).

With ``--voice-connector`` the calls are a Chime SDK Voice Connector's instead
(``chime_voice_connector`` gateway): two streams per call, one single-track stream per leg
with ``TransactionId`` tags (the caller's leg: the human sample call, the callee's: the
synthetic one), announced by two ``STARTED`` EventBridge events each.

    python benchmarks/amazon_connect_bench.py                 # 100 contacts, 30 s
    python benchmarks/amazon_connect_bench.py --voice-connector
    python benchmarks/amazon_connect_bench.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

try:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "gateways"))
    import nes2net_stream  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import numpy as np
from gateway_bench import cli, human_call, metrics, run, value
from kvs_fake import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    FakeKvs,
    Stream,
    fragment_number,
    mkv_fragment,
    mkv_tracks_fragment,
)

from nes2net_stream.audio.io import float_to_pcm16, load_audio
from nes2net_stream.demo import sample_path
from nes2net_stream.localstack import free_port

TOKEN = "bench-token"


def _pcm(x: np.ndarray) -> bytes:
    return float_to_pcm16(x).astype("<i2").tobytes()


def _fragments(contact: str, customer: np.ndarray, agent: np.ndarray,
               seconds: int) -> list[bytes]:
    out = []
    for k in range(seconds):
        i = (k * 8000) % (len(customer) - 8000)
        out.append(mkv_fragment(k, contact, _pcm(customer[i:i + 8000]),
                                _pcm(agent[i:i + 8000])))
    out.append(mkv_fragment(seconds, "next-contact", _pcm(customer[:800]), _pcm(agent[:800])))
    return out


def _leg(transaction: str, audio: np.ndarray, seconds: int) -> list[bytes]:
    """A Voice Connector leg's stream: one track, fragments tagged with the TransactionId."""
    out = []
    for k in range(seconds + 1):
        i = (k * 8000) % (len(audio) - 8000)
        tag = ("TransactionId", transaction if k < seconds else "next-call")
        out.append(mkv_tracks_fragment(k, tag, [("AUDIO", _pcm(audio[i:i + 8000]))]))
    return out


def _started(transaction: str, arn: str, is_caller: bool) -> dict[str, Any]:
    """A Voice Connector's STARTED event for one leg, as EventBridge delivers it."""
    return {"detail-type": "Chime VoiceConnector Streaming Status", "source": "aws.chime",
            "detail": {"streamingStatus": "STARTED", "transactionId": transaction,
                       "isCaller": is_caller, "direction": "Inbound", "streamArn": arn,
                       "startFragmentNumber": fragment_number(0), "mediaType": "audio/L16"}}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    kvs = await FakeKvs().start()
    customer = human_call()
    agent = load_audio(sample_path("synthetic_call.wav"), sample_rate=8000).samples
    n = min(len(customer), len(agent))
    prefix = f"connect-bench-{uuid.uuid4().hex[:8]}-"
    seconds = int(args.duration_s)
    arns = [f"arn:aws:kinesisvideo:{REGION}:123456789012:stream/bench-{k}/1"
            for k in range(args.calls)]
    vc = args.voice_connector
    gateway = "chime_voice_connector" if vc else "amazon_connect"
    for k, arn in enumerate(arns):
        if vc:
            kvs.streams[arn] = Stream(_leg(f"{prefix}{k}", customer[:n], seconds), pace_s=1.0)
            kvs.streams[arn + "-callee"] = Stream(_leg(f"{prefix}{k}", agent[:n], seconds),
                                                  pace_s=1.0)
        else:
            kvs.streams[arn] = Stream(_fragments(f"{prefix}{k}", customer[:n], agent[:n],
                                                 seconds), pace_s=1.0)
    port = free_port()

    async def level(svc: Any, redis_url: str) -> dict[str, Any]:
        cpu0, t0 = svc.cpu_seconds(), time.monotonic()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            async def register(k: int) -> int:
                await asyncio.sleep(k * 0.01)  # a ramp of 100 contacts per second
                if vc:  # the call's first leg registers it (201), the second joins it (200)
                    got = []
                    for arn, caller in ((arns[k], True), (arns[k] + "-callee", False)):
                        async with http.post(f"http://127.0.0.1:{port}/events",
                                             json=_started(f"{prefix}{k}", arn, caller)) as r:
                            got.append(r.status)
                    return 201 if got == [201, 200] else max(got)
                async with http.post(f"http://127.0.0.1:{port}/contacts", json={
                        "contact_id": f"{prefix}{k}", "stream_arn": arns[k]}) as r:
                    return r.status

            statuses = await asyncio.gather(*(register(k) for k in range(args.calls)))
        for _ in range(4 * seconds + 240):  # until every contact has ended
            if value(metrics(svc.http + "/metrics"), "nes2net_calls_ended_total") >= args.calls:
                break
            await asyncio.sleep(0.5)
        cpu_used, elapsed = svc.cpu_seconds() - cpu0, time.monotonic() - t0
        return {"contacts": args.calls, "duration_s": seconds,
                "registered": sum(s == 201 for s in statuses), "elapsed_s": round(elapsed, 2),
                "service_cpu_s": round(cpu_used, 2),
                "cpu_ms_per_contact_second": round(1000 * cpu_used / (args.calls * seconds), 3),
                "signature_rejections": kvs.rejected}

    try:
        env = f"NES2NET_GATEWAYS__{gateway.upper()}__"
        return await run(args, gateway, {
            f"{env}ENABLED": "true", f"{env}PORT": str(port), f"{env}API_TOKEN": TOKEN,
            f"{env}ENDPOINT_URL": kvs.url, f"{env}MAX_REQUESTS_PER_S": "1000",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull}, level, calls=args.calls,
            call_prefix=prefix, generic=False)
    finally:
        await kvs.stop()


if __name__ == "__main__":
    cli(__doc__, main, unit="contacts", workers=False,
        flags={"--voice-connector": "Chime SDK Voice Connector calls (two legs each)"})
