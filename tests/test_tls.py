"""TLS wherever it is offered: wss:// and https:// ingress, Redis over TLS with an ACL user."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from pki import make_pki
from servers import free_port
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from nes2net_stream.audio.g711 import mulaw_encode
from nes2net_stream.audio.io import float_to_pcm16, load_audio
from nes2net_stream.demo import sample_path
from nes2net_stream.service.events import OutputEvent, Source
from nes2net_stream.service.publisher import RedisConfig, RedisPublisher


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki: dict[str, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki["ca"]))


@pytest.mark.both_loops
async def test_wss_and_https_with_the_configured_certificate(make_service, pki, redis_client):
    svc = await make_service(server={"tls_cert": str(pki["cert"]), "tls_key": str(pki["key"])})
    ctx = client_context(pki)
    # health and metrics on the WebSocket port, the dashboard on the HTTP listener: https only
    for url in (f"https://127.0.0.1:{svc.port}/readyz", f"https://127.0.0.1:{svc.http.port}/"):
        with await asyncio.to_thread(urllib.request.urlopen, url, context=ctx, timeout=10) as r:
            assert r.status == 200
    with pytest.raises(OSError):  # plain HTTP on the TLS port is refused
        await asyncio.to_thread(urllib.request.urlopen,
                                f"http://127.0.0.1:{svc.port}/readyz", timeout=5)
    x = load_audio(sample_path("human_call.wav"), sample_rate=8000).samples[:8000 * 8]
    events = []
    async with connect(f"wss://127.0.0.1:{svc.port}/v1/stream", ssl=ctx) as ws:
        await ws.send(json.dumps({"type": "start", "call_id": "tls-call", "encoding": "mulaw",
                                  "sample_rate": 8000, "channels": 1}))
        for i in range(0, x.size, 1600):
            await ws.send(mulaw_encode(float_to_pcm16(x[i:i + 1600])).tobytes())
        await ws.send(json.dumps({"type": "stop"}))
        async for msg in ws:
            events.append(json.loads(msg))
    summary = [e for e in events if e.get("type") == "summary"]
    assert summary and summary[0]["summary"]["windows_scored"] >= 1, json.dumps(summary)
    assert any(json.loads(f["event"])["call_id"] == "tls-call"
               for _, f in redis_client.xrange("nes2net:alerts"))
    with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the CA
        async with connect(f"wss://127.0.0.1:{svc.port}/v1/stream",
                           ssl=ssl.create_default_context()):
            pass


@pytest.fixture()
def tls_redis(tmp_path, pki):
    """redis-server with TLS only (no plain port) and an ACL user; the default user is off."""
    exe = shutil.which("redis-server")
    assert exe is not None, "redis-server is not installed"
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(pki["cert"]), "--tls-key-file", str(pki["key"]),
         "--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
         "--user", "default", "off",
         "--user", "nes2net", "on", ">s3cret-pass", "~nes2net:*", "&nes2net:*",
         "+@all", "-@dangerous", "+info"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(password: str = "s3cret-pass") -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(pki["ca"]),
                           username="nes2net", password=password, decode_responses=True,
                           socket_timeout=5)

    deadline = time.monotonic() + 10
    while True:
        try:
            client().ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield port, client
    proc.kill()
    proc.wait()


def _alert(i: int) -> OutputEvent:
    return OutputEvent(type="state", call_id=f"tls-{i}", channel="caller",
                       source=Source("websocket", "generic"), model_id="m", state="spoof",
                       body={"running": {"spoof_probability": 0.9}})


async def test_publisher_over_rediss_with_an_acl_user(tls_redis, pki):
    port, client = tls_redis
    url = f"rediss://nes2net:s3cret-pass@127.0.0.1:{port}/0?ssl_ca_certs={pki['ca']}"
    pub = RedisPublisher(RedisConfig(url=url))
    await pub.start()
    try:
        assert await pub.ping()
        sent = [_alert(i) for i in range(3)]
        for ev in sent:
            pub.publish(ev)
        for _ in range(100):
            if pub.published == 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await pub.stop()
    got = [f["event_id"] for _, f in client().xrange("nes2net:alerts")]
    assert got == [e.event_id for e in sent]
    with pytest.raises(redis.ConnectionError):  # the server speaks TLS only
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
    with pytest.raises(redis.exceptions.NoPermissionError):  # the ACL user cannot do this
        client().flushall()


async def test_wrong_acl_password_is_an_auth_failure_and_events_wait(tls_redis, pki):
    port, client = tls_redis
    url = f"rediss://nes2net:wrong@127.0.0.1:{port}/0?ssl_ca_certs={pki['ca']}"
    pub = RedisPublisher(RedisConfig(url=url))
    with capture_logs() as logs:
        await pub.start()
        pub.publish(_alert(0))
        await asyncio.sleep(0.5)
        assert pub.buffered == 1 and pub.published == 0
        await pub.stop(grace_s=0.5)
    failures = [e for e in logs if e["event"] == "redis write failed; buffering and retrying"]
    assert failures and failures[0]["cause"] == "auth"
    assert all("wrong" not in json.dumps(e, default=str) for e in logs)
    assert client().xlen("nes2net:alerts") == 0
