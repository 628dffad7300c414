"""Ingest cost of Azure Communication Services streams against the generic protocol.

Starts Redis (or uses ``$REDIS_URL``), a loopback JWKS endpoint and ``nes2net-stream serve``
with the ``acs`` gateway (token validation on), then runs N concurrent real-time streams from
this process as Call Automation would: a WebSocket upgrade with a freshly signed RS256 token
and the call headers, ``AudioMetadata`` (PCM 16 kHz), then every 20 ms one ``AudioData`` per
participant (the customer's phone number and an agent: an *unmixed* stream) for
``--duration-s``, then a close. The same number of generic-protocol calls (``bench e2e``'s load
generator, 8 kHz mono) runs next on the same service. Prints JSON: service CPU per
call-second for each, handshakes refused, windows, summaries and the service's window latency
(p99 from its histogram).

    python benchmarks/acs_bench.py                  # 100 streams, 30 s, 1 process
    python benchmarks/acs_bench.py --calls 200 --workers 2
    python benchmarks/acs_bench.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid
from typing import Any

import jwt
import numpy as np
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from gateway_bench import cli, human_call, run, stream_figures
from websockets.asyncio.client import connect

from nes2net_stream.audio.io import resample
from nes2net_stream.client import encode_samples

RATE = 16000
AUDIENCE = "bench-acs-resource-id"
ISSUER = "https://acscallautomation.communication.azure.com"
CUSTOMER, AGENT = "4:+14255550123", "8:acs:bench-agent"


def audio_messages(samples: np.ndarray, participant: str, n: int) -> list[str]:
    """``n`` AudioData messages of 20 ms (looping over ``samples``), JSON-encoded once."""
    pcm = encode_samples(samples, "pcm_s16le")
    size = RATE // 50 * 2  # bytes of 20 ms of 16-bit PCM
    packets = len(pcm) // size
    return [json.dumps({"kind": "AudioData", "audioData": {
        "timestamp": f"2026-01-01T00:00:{i // 50 % 60:02d}.{i % 50 * 20:03d}Z",
        "participantRawID": participant,
        "data": base64.b64encode(pcm[(i % packets) * size:(i % packets + 1) * size]).decode(),
        "silent": False}}) for i in range(n)]


async def jwks_endpoint(public_jwk: dict[str, Any]) -> tuple[web.AppRunner, str]:
    """Serve the key set on a loopback port; returns the runner and the URL."""
    app = web.Application()
    app.router.add_get("/calling/keys", lambda _r: web.json_response({"keys": [public_jwk]}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/calling/keys"


async def acs_level(url: str, key: Any, customer: list[str], agent: list[str], calls: int,
                    cpu: Any, prefix: str) -> dict[str, Any]:
    """Run ``calls`` real-time unmixed streams; service CPU measured over their audio."""
    errors: list[str] = []

    async def stream(k: int, t0: float) -> None:
        now = int(time.time())
        tok = jwt.encode({"aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 3600},
                         key, algorithm="RS256", headers={"kid": "bench"})
        headers = {"Authorization": f"Bearer {tok}",
                   "x-ms-call-connection-id": f"{prefix}{k}",
                   "x-ms-call-correlation-id": str(uuid.uuid4())}
        start = t0 + (k % 50) * 0.02  # streams start one tick apart
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        try:
            async with connect(url, additional_headers=headers, open_timeout=30,
                               max_size=None, compression=None) as ws:
                await ws.send(json.dumps({"kind": "AudioMetadata", "audioMetadata": {
                    "subscriptionId": str(uuid.uuid4()), "encoding": "PCM",
                    "sampleRate": RATE, "channels": 1, "length": 640}}))
                for i in range(len(customer)):
                    await ws.send(customer[i])
                    await ws.send(agent[i])
                    await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - a refused or broken stream is counted
            errors.append(f"stream {k}: {exc!r}"[:200])

    cpu0, t0, own0 = cpu(), time.monotonic(), time.process_time()
    await asyncio.gather(*(stream(k, t0 + 1.0) for k in range(calls)))
    cpu_used, elapsed = cpu() - cpu0, time.monotonic() - t0
    own = time.process_time() - own0  # this load generator shares the machine
    duration_s = len(customer) * 0.02
    return stream_figures(calls, duration_s, elapsed, cpu_used, own, calls * 2 * len(customer),
                          errors, participants_per_stream=2)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
           "kid": "bench", "use": "sig"}
    runner, jwks_url = await jwks_endpoint(jwk)
    prefix = f"acs-bench-{uuid.uuid4().hex[:8]}-"
    x = resample(human_call(), 8000, RATE)
    n = int(args.duration_s * 50)
    customer, agent = audio_messages(x, CUSTOMER, n), audio_messages(x[::-1].copy(), AGENT, n)

    async def level(svc: Any, redis_url: str) -> dict[str, Any]:
        url = svc.url.replace("/v1/stream", "/v1/gateways/acs")
        return await acs_level(url, key, customer, agent, args.calls, svc.cpu_seconds, prefix)

    try:
        return await run(args, "acs", {
            "NES2NET_GATEWAYS__ACS__ENABLED": "true",
            "NES2NET_GATEWAYS__ACS__AUDIENCE": AUDIENCE,
            "NES2NET_GATEWAYS__ACS__JWKS_URL": jwks_url}, level,
            calls=args.calls, call_prefix=prefix)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    cli(__doc__, main)
