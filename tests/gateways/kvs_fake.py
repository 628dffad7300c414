"""A stand-in for Kinesis Video Streams (which cannot run here) and the MKV it serves.

``mkv_fragment`` writes one GetMedia fragment as Amazon Connect's streams hold it: an EBML
header, a Segment of unknown size with two PCM tracks (``AUDIO_FROM_CUSTOMER``,
``AUDIO_TO_CUSTOMER``, 8 kHz), a Cluster of unknown size with interleaved SimpleBlocks and the
fragment's Tags (fragment number, timestamps, ``ContactId``). The writer is separate from the
gateway's reader so that the tests check one against the other.

``FakeKvs`` serves ``getDataEndpoint`` and ``getMedia`` over HTTP on loopback, checks each
request's AWS Signature Version 4 against the test credentials, honours the start selectors
(``NOW``, ``FRAGMENT_NUMBER``, ``CONTINUATION_TOKEN``), paces fragments, and can end or break
an answer after some fragments (with a continuation token, as the service does) or keep it
open without data.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ACCESS_KEY, SECRET_KEY, REGION = "AKIDNES2NETTEST", "c2VjcmV0LWZvci10ZXN0cw-not-a-real-key", \
    "us-east-1"
ARN = f"arn:aws:kinesisvideo:{REGION}:123456789012:stream/connect-contact-stream/1700000000000"
UNKNOWN = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def _size(n: int) -> bytes:
    return bytes([0x01]) + n.to_bytes(7, "big")  # 8-byte size: any length, easy to read


def el(eid: int, payload: bytes) -> bytes:
    """One EBML element (id with its marker bits, 8-byte size)."""
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big") + _size(len(payload)) + payload


def uint(eid: int, v: int) -> bytes:
    return el(eid, v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big"))


def text(eid: int, s: str) -> bytes:
    return el(eid, s.encode())


def simple_tag(name: str, value: str) -> bytes:
    return el(0x67C8, text(0x45A3, name) + text(0x447A, "und") + text(0x4487, value))


def mkv_fragment(number: int, contact_id: str, customer: bytes, agent: bytes, *,
                 block_bytes: int = 320, rate: float = 8000.0, codec: str = "A_PCM/INT/LIT",
                 extra_tags: tuple[tuple[str, str], ...] = ()) -> bytes:
    """One GetMedia fragment (see the module docstring); PCM is 16-bit little-endian."""
    return mkv_tracks_fragment(number, ("ContactId", contact_id),
                               [("AUDIO_FROM_CUSTOMER", customer), ("AUDIO_TO_CUSTOMER", agent)],
                               block_bytes=block_bytes, rate=rate, codec=codec,
                               extra_tags=extra_tags)


def mkv_tracks_fragment(number: int, id_tag: tuple[str, str],
                        audio: list[tuple[str, bytes]], *, block_bytes: int = 320,
                        rate: float = 8000.0, codec: str = "A_PCM/INT/LIT",
                        extra_tags: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A fragment of the named tracks' PCM, tagged ``id_tag`` (a Voice Connector leg's stream
    has one track and a ``TransactionId`` tag)."""
    header = el(0x1A45DFA3, uint(0x4286, 1) + uint(0x42F7, 1) + uint(0x42F2, 4)
                + uint(0x42F3, 8) + text(0x4282, "matroska") + uint(0x4287, 2)
                + uint(0x4285, 2))
    info = el(0x1549A966, uint(0x2AD7B1, 1_000_000) + text(0x4D80, "nes2net-test"))

    def track(n: int, name: str) -> bytes:
        audio = el(0xE1, el(0xB5, struct.pack(">d", rate)) + uint(0x9F, 1) + uint(0x6264, 16))
        return el(0xAE, uint(0xD7, n) + uint(0x73C5, n) + uint(0x83, 2) + text(0x536E, name)
                  + text(0x86, codec) + audio)

    tracks = el(0x1654AE6B, b"".join(track(n, name) for n, (name, _) in enumerate(audio, 1)))
    blocks = []
    numbered = [(n, pcm) for n, (_, pcm) in enumerate(audio, 1)]
    for i in range(0, max(len(pcm) for _, pcm in numbered), block_bytes):
        for n, pcm in numbered:
            if i < len(pcm):
                rel = struct.pack(">h", (i // block_bytes) * 40 % 32000)
                blocks.append(el(0xA3, bytes([0x80 | n]) + rel + b"\x80" + pcm[i:i + block_bytes]))
    cluster = b"\x1f\x43\xb6\x75" + UNKNOWN + uint(0xE7, number * 1000) + b"".join(blocks)
    tags = [("AWS_KINESISVIDEO_FRAGMENT_NUMBER", str(91343852333181432392682062600000 + number)),
            ("AWS_KINESISVIDEO_SERVER_TIMESTAMP", f"{1700000000 + number}.000"),
            id_tag, *extra_tags]
    tag_el = el(0x1254C367, el(0x7373, el(0x63C0, uint(0x68CA, 50))
                                + b"".join(simple_tag(k, v) for k, v in tags)))
    return header + b"\x18\x53\x80\x67" + UNKNOWN + info + tracks + cluster + tag_el


def fragment_number(k: int) -> str:
    return str(91343852333181432392682062600000 + k)


@dataclass
class Stream:
    """One Kinesis Video stream's fragments and how GetMedia answers for it."""

    fragments: list[bytes]
    pace_s: float = 0.0
    break_after: int | None = None  # break the first answer after this many fragments
    hang: bool = False  # keep the answer open (no data) after the last fragment
    requests: list[dict[str, Any]] = field(default_factory=list)


class FakeKvs:
    """The service stand-in (see the module docstring); ``url`` once started."""

    def __init__(self) -> None:
        self.streams: dict[str, Stream] = {}
        self.rejected = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> FakeKvs:
        app = web.Application()
        app.router.add_post("/getDataEndpoint", self._endpoint)
        app.router.add_post("/getMedia", self._media)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _signed(self, request: web.Request) -> dict[str, Any]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        body = await request.read()
        auth = request.headers.get("Authorization", "")
        signed = auth.partition("SignedHeaders=")[2].partition(",")[0].split(";")
        req = AWSRequest(method="POST", url=str(request.url), data=body,
                         headers={h: request.headers[h] for h in signed if h in request.headers})
        req.context["timestamp"] = request.headers.get("X-Amz-Date", "")
        signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "kinesisvideo", REGION)
        want = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
        if not auth.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/") or \
                not auth.endswith(f"Signature={want}"):
            self.rejected += 1
            raise web.HTTPForbidden(text='{"message": "signature does not match"}')
        return json.loads(body)

    async def _endpoint(self, request: web.Request) -> web.Response:
        doc = await self._signed(request)
        if doc.get("APIName") != "GET_MEDIA" or doc.get("StreamARN") not in self.streams:
            raise web.HTTPNotFound(text='{"message": "stream not found"}')
        return web.json_response({"DataEndpoint": self.url})

    async def _media(self, request: web.Request) -> web.StreamResponse:
        doc = await self._signed(request)
        stream = self.streams.get(doc.get("StreamARN", ""))
        if stream is None:
            raise web.HTTPNotFound(text='{"message": "stream not found"}')
        stream.requests.append(doc["StartSelector"])
        sel = doc["StartSelector"]
        kind = sel["StartSelectorType"]
        if kind == "FRAGMENT_NUMBER":
            start = next(k for k in range(len(stream.fragments))
                         if fragment_number(k) == sel["AfterFragmentNumber"])
        elif kind == "CONTINUATION_TOKEN":
            start = int(sel["ContinuationToken"].rpartition("-")[2])
        else:
            start = 0
        resp = web.StreamResponse(headers={"Content-Type": "video/webm"})
        await resp.prepare(request)
        broke = stream.break_after is not None and len(stream.requests) == 1
        end = min(len(stream.fragments), start + stream.break_after) if broke else \
            len(stream.fragments)
        try:
            for k in range(start, end):
                await resp.write(stream.fragments[k])
                await asyncio.sleep(stream.pace_s)
        except ConnectionResetError:  # the reader stopped (the contact is over)
            return resp
        if broke:  # the continuation token ends the answer, then the connection breaks
            await resp.write(el(0x1254C367, el(0x7373, simple_tag(
                "AWS_KINESISVIDEO_CONTINUATION_TOKEN", f"token-{end}"))))
            await asyncio.sleep(0.05)
            request.transport.close()
            return resp
        if stream.hang:
            await self._stopping.wait()
        await resp.write_eof()
        return resp
