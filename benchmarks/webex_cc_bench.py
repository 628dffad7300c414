"""Ingest cost of Webex Contact Center media forking streams against the generic protocol.

Starts Redis (or uses ``$REDIS_URL``) and ``nes2net-stream serve`` with the ``webex_cc``
gateway (token validation on, keys from a local JWKS file), then runs N concurrent real-time
gRPC streams from this process as Webex would: one ``StreamConversationAudio`` call per
conversation with a freshly signed RS256 token, then every ``--chunk-ms`` one
``ConversationAudioForkingRequest`` per party (caller and agent, μ-law 8 kHz) for
``--duration-s``, then a half-close. The same number of generic-protocol calls (``bench e2e``'s
load generator, 8 kHz mono) runs next on the same service. Prints JSON: service CPU per
call-second for each, streams failed, windows, summaries and the service's window latency
(p99 from its histogram).

    python benchmarks/webex_cc_bench.py                  # 100 streams, 30 s, 20 ms chunks
    python benchmarks/webex_cc_bench.py --calls 200 --workers 2
    python benchmarks/webex_cc_bench.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from gateway_bench import cli, human_call, run, stream_figures
from nes2net_gateways.webex_cc_proto import (
    AGENT,
    CALLER,
    METHOD,
    MULAW,
    AudioStream,
    ForkingRequest,
    ForkingResponse,
)

from nes2net_stream.client import encode_samples
from nes2net_stream.localstack import free_port

ISSUER = "https://idbroker.webex.com/idb"
URL = "https://nes2net-bench.example:443"
SCHEMA = "523e1b7f-4693-47bc-b84e-a7b7a505fb0b"
CHUNK_MS = int(os.environ.get("WEBEX_BENCH_CHUNK_MS", "20"))


def token(key: Any) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": "wxcc", "sub": "bench-org", "jti": uuid.uuid4().hex,
                       "iat": now, "exp": now + 3600, "com.cisco.datasource.url": URL,
                       "com.cisco.datasource.schema.uuid": SCHEMA},
                      key, algorithm="RS256", headers={"kid": "bench"})


def chunks(mulaw: bytes, n: int) -> list[bytes]:
    """``n`` chunks of ``CHUNK_MS`` (looping over the audio)."""
    size = 8 * CHUNK_MS
    count = len(mulaw) // size
    return [mulaw[(i % count) * size:(i % count + 1) * size] for i in range(n)]


async def webex_level(target: str, key: Any, caller: list[bytes], agent: list[bytes],
                      calls: int, cpu: Any, prefix: str) -> dict[str, Any]:
    """Run ``calls`` real-time streams; service CPU measured over their audio."""
    errors: list[str] = []
    step = CHUNK_MS / 1000.0

    async def stream(channel: grpc.aio.Channel, k: int, t0: float) -> None:
        conv = f"{prefix}{k}"
        start = t0 + (k % 50) * 0.02  # streams start one tick apart

        async def requests():
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            for i in range(len(caller)):
                for role, data in ((CALLER, caller[i]), (AGENT, agent[i])):
                    yield ForkingRequest(conversation_id=conv, customer_org_id="bench-org",
                                         audio=AudioStream(audio_data=data, encoding=MULAW,
                                                           sample_rate_hertz=8000, role=role,
                                                           role_id=f"{conv}-{role}"))
                await asyncio.sleep(max(0.0, start + (i + 1) * step - time.monotonic()))

        call = channel.stream_stream(METHOD, request_serializer=ForkingRequest.SerializeToString,
                                     response_deserializer=ForkingResponse.FromString)
        try:
            replies = [r async for r in call(requests(),
                                             metadata=[("authorization", f"Bearer {token(key)}")])]
            if [r.status_message for r in replies] != ["ok"]:
                errors.append(f"stream {k}: {replies!r}"[:200])
        except Exception as exc:  # noqa: BLE001 - a refused or broken stream is counted
            errors.append(f"stream {k}: {exc!r}"[:200])

    cpu0, t0, own0 = cpu(), time.monotonic(), time.process_time()
    async with grpc.aio.insecure_channel(target) as channel:  # one HTTP/2 connection, as Webex
        await asyncio.gather(*(stream(channel, k, t0 + 1.0) for k in range(calls)))
    cpu_used, elapsed = cpu() - cpu0, time.monotonic() - t0
    own = time.process_time() - own0  # this load generator shares the machine
    duration_s = len(caller) * step
    return stream_figures(calls, duration_s, elapsed, cpu_used, own, calls * 2 * len(caller),
                          errors, parties_per_stream=2, chunk_ms=CHUNK_MS)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
           "kid": "bench", "use": "sig"}
    prefix = f"webex-bench-{uuid.uuid4().hex[:8]}-"
    x = human_call()
    n = int(args.duration_s * 1000 / CHUNK_MS)
    caller = chunks(encode_samples(x, "mulaw"), n)
    agent = chunks(encode_samples(x[::-1].copy(), "mulaw"), n)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        keys = os.path.join(tmp, "keys.json")
        await asyncio.to_thread(Path(keys).write_text, json.dumps({"keys": [jwk]}))

        async def level(svc: Any, redis_url: str) -> dict[str, Any]:
            return await webex_level(f"127.0.0.1:{port}", key, caller, agent, args.calls,
                                     svc.cpu_seconds, prefix)

        return await run(args, "webex_cc", {
            "NES2NET_GATEWAYS__WEBEX_CC__ENABLED": "true",
            "NES2NET_GATEWAYS__WEBEX_CC__PORT": str(port),
            "NES2NET_GATEWAYS__WEBEX_CC__DATASOURCE_URL": URL,
            "NES2NET_GATEWAYS__WEBEX_CC__JWKS_FILE": keys,
            "NES2NET_GATEWAYS__WEBEX_CC__MAX_STREAMS_PER_S": "1000"}, level,
            calls=args.calls, call_prefix=prefix)


if __name__ == "__main__":
    cli(__doc__, main)
