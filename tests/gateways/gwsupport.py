"""Shared helpers of the gateway tests: play a provider conversation, read alerts from Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from typing import Any

import numpy as np
from helpers import tone_bursts
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nes2net_stream.audio import av_codecs
from nes2net_stream.audio.io import float_to_pcm16
from nes2net_stream.client import encode_samples, stream_samples

FUZZ_EXAMPLES = int(os.environ.get("NES2NET_FUZZ_EXAMPLES", 300))


def ws_url(svc: Any, path: str, query: str = "") -> str:
    """``ws://127.0.0.1:<port><path>[?query]`` of a running test service."""
    return f"ws://127.0.0.1:{svc.port}{path}" + (f"?{query}" if query else "")


def speech(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Speech-like float32 audio the VAD passes."""
    return tone_bursts(seconds, rate, seed=seed)


def chunks(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into ``size``-byte pieces (the last may be shorter)."""
    return [data[i:i + size] for i in range(0, len(data), size)]


def mulaw_b64_frames(seconds: float, seed: int = 0, frame_ms: int = 20) -> list[str]:
    """Base64 μ-law 8 kHz frames of ``frame_ms`` each (Twilio/Telnyx/Plivo payloads)."""
    raw = encode_samples(speech(seconds, 8000, seed), "mulaw")
    return [base64.b64encode(c).decode() for c in chunks(raw, 8 * frame_ms)]


def pcm16(samples: np.ndarray, byteorder: str = "<") -> bytes:
    """float32 samples (frames or frames x channels) to interleaved 16-bit PCM bytes."""
    return float_to_pcm16(samples).reshape(-1).astype(f"{byteorder}i2").tobytes()


async def reference_scores(svc: Any, samples: np.ndarray, rate: int) -> list[float]:
    """Window scores of the same audio sent over the generic protocol (pcm_s16le, mono)."""
    res = await stream_samples(svc.url, samples, rate, realtime=False)
    return [w["score"]["spoof_probability"] for w in res.of_type("window")]


async def window_scores(redis_client: Any, call_id: str, channel: str = "caller",
                        within: float = 15.0) -> list[float]:
    """Spoof probabilities of a call's windows in Redis, in window order.

    Waits for the call's summary, then until every window it counts is in the score stream
    (scores and alerts are published separately).
    """
    found = await summaries(redis_client, call_id, within=within)
    summary = next(d for d in found if d["channel"] == channel)
    expected = summary["summary"]["windows_scored"]
    deadline = time.monotonic() + within
    while True:
        docs = [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:scores")]
        mine = sorted((d for d in docs if d["call_id"] == call_id and d["channel"] == channel),
                      key=lambda d: d["window"]["index"])
        if len(mine) >= expected or time.monotonic() > deadline:
            return [d["score"]["spoof_probability"] for d in mine]
        await asyncio.sleep(0.05)


async def play(url: str, messages: list[str | bytes], *, headers: dict[str, str] | None = None,
               subprotocols: list[str] | None = None, close: bool = False, wait: float = 10.0
               ) -> tuple[list[Any], int | None, str]:
    """Send ``messages`` as a provider would; return (replies, close code, close reason).

    With ``close`` the client closes normally after the last message (providers whose
    stream ends with a close); otherwise it waits for the server to close.
    """
    got: list[Any] = []
    async with connect(url, additional_headers=headers, subprotocols=subprotocols,
                       max_size=None, open_timeout=5) as ws:
        try:
            for m in messages:
                await ws.send(m)
            if close:
                await ws.close()
        except ConnectionClosed:
            pass
        try:
            async with asyncio.timeout(wait):
                async for msg in ws:
                    got.append(msg)
        except (ConnectionClosed, TimeoutError):
            pass
        return got, ws.close_code, ws.close_reason or ""


async def handshake_status(url: str, headers: dict[str, str] | None = None,
                           subprotocols: list[str] | None = None) -> int:
    """HTTP status of a refused upgrade, or 101 when the upgrade succeeds."""
    try:
        async with connect(url, additional_headers=headers, subprotocols=subprotocols,
                           open_timeout=5):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def alerts(redis_client: Any) -> list[dict[str, Any]]:
    """Every document of the alert stream."""
    return [json.loads(f["event"]) for _, f in redis_client.xrange("nes2net:alerts")]


async def summaries(redis_client: Any, call_id: str | None, n: int = 1, within: float = 15.0
                    ) -> list[dict[str, Any]]:
    """Wait until ``n`` summary events of ``call_id`` (None: of any call) are in Redis."""
    deadline = time.monotonic() + within
    while True:
        found = [d for d in alerts(redis_client)
                 if d["type"] == "summary" and call_id in (None, d["call_id"])]
        if len(found) >= n or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def free_port_run(n: int) -> int:
    """A port P with P..P+n-1 all free for TCP on loopback."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


#: codec -> (FFmpeg encoder/decoder, encoder rate, decoded rate) of the wideband RTP codecs
AV_CODECS = {"G722": ("g722", 16000, 16000), "OPUS": ("libopus", 16000, 48000)}


def encode_packets(codec: str, samples: np.ndarray) -> list[bytes]:
    """20 ms packets of ``samples`` (16 kHz float) in ``codec`` (G722 or OPUS), via PyAV."""
    name, rate, _ = AV_CODECS[codec]
    return av_codecs.encode_packets(name, rate, samples,
                                       bit_rate=24000 if codec == "OPUS" else None)


def decode_packets(codec: str, packets: list[bytes]) -> tuple[np.ndarray, int]:
    """What a receiver decodes from ``packets``: float samples and their rate."""
    import av

    name, _, rate = AV_CODECS[codec]
    dec = av.CodecContext.create(name, "r")
    dec.sample_rate, dec.layout, dec.format = rate, "mono", "s16"
    dec.open()
    pcm = [f.to_ndarray().reshape(-1) for p in packets for f in dec.decode(av.Packet(p))]
    return np.concatenate(pcm).astype(np.float32) / 32768.0, rate


def amr_pack(frames: list[bytes], bits: tuple[int, ...], octet: bool, cmr: int = 15) -> bytes:
    """An RFC 4867 RTP payload of storage-format AMR / AMR-WB ``frames`` (header byte and
    padded speech bits each), octet-aligned or bandwidth-efficient; ``bits``: speech bits per
    frame type."""
    value, n = 0, 0

    def push(v: int, width: int) -> None:
        nonlocal value, n
        value, n = (value << width) | v, n + width

    push(cmr, 4)
    if octet:
        push(0, 4)
    types = [((f[0] >> 3) & 15, (f[0] >> 2) & 1) for f in frames]
    for i, (ft, q) in enumerate(types):
        push(int(i < len(frames) - 1), 1)
        push(ft, 4)
        push(q, 1)
        if octet:
            push(0, 2)
    for f, (ft, _) in zip(frames, types, strict=True):
        size = bits[ft] if ft < len(bits) else 0
        push(int.from_bytes(f[1:], "big") >> (len(f[1:]) * 8 - size) if size else 0, size)
        if octet:
            push(0, -size % 8)
    push(0, -n % 8)
    return value.to_bytes(n // 8, "big")


def amr_nb_frames(samples: np.ndarray) -> list[bytes]:
    """Storage-format AMR frames (12.2 kbit/s) of 8 kHz float ``samples``, via PyAV."""
    return av_codecs.encode_packets("libopencore_amrnb", 8000, samples, bit_rate=12200)


def gsm_frames(samples: np.ndarray) -> list[bytes]:
    """33-byte GSM 06.10 frames (20 ms each) of 8 kHz float ``samples``, encoded by SoX."""
    import subprocess

    pcm = float_to_pcm16(samples).astype("<i2").tobytes()
    out = subprocess.run(["sox", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c",
                          "1", "-", "-t", "gsm", "-"], input=pcm, capture_output=True,
                         check=True).stdout
    return [out[i:i + 33] for i in range(0, len(out) - 32, 33)]


async def loopback_http(routes: dict[str, Any]) -> tuple[Any, str]:
    """Serve ``{path: aiohttp handler}`` (GET) on a loopback port: (runner, base URL)."""
    from aiohttp import web

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


class StubHandle:
    """A call handle for a gateway's pure message rules: ``start`` only records the call."""

    def __init__(self) -> None:
        self.started = False
        self.call_id: str | None = None

    def start(self, start: Any) -> None:
        self.started, self.call_id = True, start.call_id


def stub_gateway(config: Any, name: str) -> Any:
    """What a gateway's pure message rules read of their gateway: config, name, limits, log."""
    quiet = staticmethod(lambda *a, **k: None)
    return type("StubGateway", (), {
        "cfg": config, "config": config, "name": name,
        "limits": type("Limits", (), {"max_metadata_bytes": 4096})(),
        "log": type("Log", (), {"info": quiet, "warning": quiet, "debug": quiet})()})()
