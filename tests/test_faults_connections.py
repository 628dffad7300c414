"""Misbehaving connections: a client that stops reading, a half-open peer, message floods and
too many open sockets. Each is refused or disconnected on its own; the service goes on."""

import asyncio
import base64
import json
import os
import socket
import struct
import time

import pytest
from helpers import tone_bursts
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nes2net_stream.client import encode_samples, stream_samples

START = {"type": "start", "call_id": "c", "encoding": "pcm_s16le", "sample_rate": 8000,
         "channels": 1}


class RawClient:
    """A WebSocket client on a bare TCP socket that never reads unless told to (and so never
    answers pings): a stuck or vanished peer, as the server sees it."""

    def __init__(self, port: int, path: str = "/v1/stream"):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)  # byte by byte: read the handshake response only
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, payload: bytes | str) -> None:
        opcode = 0x1 if isinstance(payload, str) else 0x2
        data = payload.encode() if isinstance(payload, str) else payload
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def closed_by_server(self, timeout: float) -> bool:
        """Drain what the server sent; True once it closed the TCP connection."""
        self.sock.settimeout(0.1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.sock.recv(65536) == b"":
                    return True
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def summaries(redis_client) -> dict[str, dict]:
    docs = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")]
    return {d["call_id"]: d["summary"] for d in docs if d["type"] == "summary"}


async def wait_summary(redis_client, call_id: str, within_s: float = 10.0) -> dict:
    for _ in range(int(within_s / 0.1)):
        found = summaries(redis_client).get(call_id)
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no summary for {call_id}")


def metric(svc, name: str, **labels: str) -> float:
    text = svc.ctx.metrics.render().decode()
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())),
                0.0)


async def test_client_that_stops_reading_is_disconnected_and_call_times_out(make_service,
                                                                           redis_client):
    svc = await make_service(limits={"idle_timeout_s": 0.8})
    raw = await asyncio.to_thread(RawClient, svc.port)
    raw.send(json.dumps({**START, "call_id": "deaf"}))
    audio = encode_samples(tone_bursts(6.0, 8000), "pcm_s16le")
    t0 = time.monotonic()
    sent = 0
    try:  # it keeps sending audio in real time but never reads (nor answers pings)
        while sent < len(audio) and time.monotonic() - t0 < 5.0:
            raw.send(audio[sent:sent + 1600])
            sent += 1600
            await asyncio.sleep(0.1)
    except OSError:
        pass  # the server already cut it off
    summary = await wait_summary(redis_client, "deaf")
    assert summary["end_reason"] == "timeout"
    assert summary["detail"] in ("keepalive_timeout", "client_not_reading")
    # cut off at the keepalive timeout (ping after 0.8 s, no pong 0.8 s later) while sending
    assert summary["duration_s"] <= 2.5 and summary["duration_s"] < sent / 16000
    assert await asyncio.to_thread(raw.closed_by_server, 3.0)
    raw.close()
    assert svc.ctx.calls == {} and len(svc.server.connections) == 0
    assert metric(svc, "nes2net_calls_ended_total", reason="timeout") == 1.0
    res = await stream_samples(svc.url, tone_bursts(3.0, 8000), 8000, realtime=False)
    assert res.summary["summary"]["end_reason"] == "stop"  # the service is unaffected


async def test_half_open_connections_are_closed_after_the_idle_timeout(make_service,
                                                                       redis_client):
    svc = await make_service(limits={"idle_timeout_s": 0.8, "start_timeout_s": 30.0})
    silent = await asyncio.to_thread(RawClient, svc.port)       # handshake, then nothing
    caller = await asyncio.to_thread(RawClient, svc.port)       # a call, then nothing
    caller.send(json.dumps({**START, "call_id": "vanished"}))
    caller.send(encode_samples(tone_bursts(2.0, 8000), "pcm_s16le"))
    t0 = time.monotonic()
    summary = await wait_summary(redis_client, "vanished")
    assert summary["end_reason"] in ("error", "timeout")   # idle_timeout or keepalive_timeout
    assert summary["detail"] in ("idle_timeout", "keepalive_timeout")
    for _ in range(50):
        if not svc.server.connections:
            break
        await asyncio.sleep(0.1)
    assert len(svc.server.connections) == 0 and svc.ctx.calls == {}  # both being closed ...
    assert time.monotonic() - t0 < 5.0                                  # ... long before 30 s
    closed = await asyncio.gather(asyncio.to_thread(silent.closed_by_server, 8.0),
                                  asyncio.to_thread(caller.closed_by_server, 8.0))
    assert closed == [True, True]  # TCP closed too (at the latest after the close timeout)
    for c in (silent, caller):
        c.close()


async def collect(ws) -> tuple[list[dict], int]:
    """Events up to the call's summary, then the server's close code.

    The server stops reading a refused client, so its close handshake would only end at the
    server's close timeout; the client drops the TCP connection once the close frame came.
    """
    got: list[dict] = []
    async with asyncio.timeout(10):
        while not got or got[-1]["type"] != "summary":
            got.append(json.loads(await ws.recv()))
        for _ in range(1000):
            if ws.protocol.close_rcvd is not None:
                break
            await asyncio.sleep(0.01)
    ws.transport.abort()
    return got, ws.protocol.close_rcvd.code


async def test_audio_message_flood_is_rate_limited(make_service, redis_client):
    svc = await make_service()
    async with connect(svc.url, max_size=None) as ws:
        await ws.send(json.dumps({**START, "call_id": "flood"}))
        try:  # 1-sample frames: a message flood, not an audio-rate excess
            for _ in range(8000):
                await ws.send(b"\x00\x01")
        except ConnectionClosed:
            pass
        got, code = await collect(ws)
    errors = [e for e in got if e["type"] == "error"]
    assert errors[0]["code"] == "rate_limited" and "messages per second" in errors[0]["message"]
    assert code == 4429 and got[-1]["type"] == "summary"
    assert (await wait_summary(redis_client, "flood"))["end_reason"] == "error"
    assert metric(svc, "nes2net_protocol_errors_total", code="rate_limited") == 1.0


async def test_control_message_flood_is_rate_limited(make_service):
    svc = await make_service()
    async with connect(svc.url) as ws:
        await ws.send(json.dumps({**START, "call_id": "chatty"}))
        try:
            for _ in range(200):
                await ws.send(json.dumps({"type": "ping"}))
        except ConnectionClosed:
            pass
        got, code = await collect(ws)
    pongs = [e for e in got if e["type"] == "pong"]
    errors = [e for e in got if e["type"] == "error"]
    assert 50 <= len(pongs) < 200                    # the burst was answered, the rest refused
    assert errors[0]["code"] == "rate_limited" and "control" in errors[0]["message"]
    assert code == 4429


async def test_open_connections_are_capped_with_http_503(make_service):
    svc = await make_service(limits={"max_calls": 2})
    svc.pending_connections = 0
    held = [await connect(svc.url) for _ in range(2)]  # max_calls + pending_connections
    try:
        with pytest.raises(InvalidStatus) as err:
            await connect(svc.url)
        assert err.value.response.status_code == 503
        assert b"too many connections" in err.value.response.body
        assert metric(svc, "nes2net_calls_rejected_total", reason="connections") == 1.0
        await held.pop().close()
        for _ in range(20):
            if len(svc.server.connections) < 2:
                break
            await asyncio.sleep(0.05)
        res = await stream_samples(svc.url, tone_bursts(2.0, 8000), 8000, realtime=False)
        assert res.summary is not None  # a freed slot is usable again
    finally:
        for ws in held:
            await ws.close()
