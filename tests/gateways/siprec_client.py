"""A SIPREC recording client (SRC) for the tests: what an SBC sends, over real UDP/TCP sockets.

Messages are written out as text here (not with the gateway's serialiser), so the tests check
the gateway against the wire format; responses are read with the gateway's parser.
"""

from __future__ import annotations

import asyncio
import random
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nes2net_gateways.sip_message import SipMessage, StreamFramer, parse_message
from nes2net_gateways.sip_sdp import parse_sdp

from nes2net_stream.audio.io import load_audio
from nes2net_stream.demo import sample_path

BOUNDARY = "foobar"


def real_speech(name: str = "human_call.wav", seconds: float | None = None) -> np.ndarray:
    """A bundled real recording at 8 kHz (the rate of a G.711 call)."""
    x = load_audio(sample_path(name), sample_rate=8000).samples
    return x[:int(seconds * 8000)] if seconds else x


def sdp_offer(ip: str = "127.0.0.1", labels: tuple[str, ...] = ("1", "2"),
              formats: str = "0 8 101", ports: tuple[int, ...] | None = None,
              direction: str = "sendonly", proto: str = "RTP/AVP",
              crypto: list[str] | None = None, rtpmaps: tuple[str, ...] = (),
              fmtps: tuple[str, ...] = ()) -> str:
    """An SRC's offer: one send-only audio stream per label (PCMU, PCMA, telephone-event),
    each with the ``a=crypto`` lines given (SRTP offers) and extra rtpmap/fmtp values."""
    lines = ["v=0", f"o=SBC 2890844526 2890844526 IN IP4 {ip}", "s=SIPREC",
             f"c=IN IP4 {ip}", "t=0 0"]
    for i, label in enumerate(labels):
        port = ports[i] if ports else 49170 + 2 * i
        lines += [f"m=audio {port} {proto} {formats}", "a=rtpmap:0 PCMU/8000",
                  "a=rtpmap:8 PCMA/8000", *(f"a=rtpmap:{m}" for m in rtpmaps),
                  *(f"a=fmtp:{f}" for f in fmtps),
                  "a=rtpmap:101 telephone-event/8000",
                  "a=fmtp:101 0-15", f"a=label:{label}", f"a={direction}"]
        lines += [f"a=crypto:{c}" for c in crypto or []]
    return "\r\n".join(lines) + "\r\n"


def rs_metadata(labels: tuple[str, ...] = ("1", "2"),
                aors: tuple[str, ...] = ("sip:+15551230001@carrier.example",
                                         "sip:+18005550100@pbx.example"),
                sip_session_id: str = "ab30317f1a784dc48ff824d0d3715d86") -> str:
    """RFC 7865 metadata: one participant per label, each sending its own stream."""
    parts = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
             "<recording xmlns='urn:ietf:params:xml:ns:recording:1'>",
             "<datamode>complete</datamode>",
             f"<session session_id=\"S1\"><sipSessionID>{sip_session_id}</sipSessionID>"
             "</session>"]
    for i, (label, aor) in enumerate(zip(labels, aors, strict=False)):
        parts += [f"<participant participant_id=\"P{i}\"><nameID aor=\"{aor}\"/></participant>",
                  f"<stream stream_id=\"ST{i}\" session_id=\"S1\"><label>{label}</label>"
                  "</stream>",
                  f"<participantstreamassoc participant_id=\"P{i}\"><send>ST{i}</send>"
                  "</participantstreamassoc>"]
    parts.append("</recording>")
    return "\r\n".join(parts)


def draft_metadata(labels: tuple[str, ...] = ("1", "2"),
                   aors: tuple[str, ...] = ("sip:+15551230001@carrier.example",
                                            "sip:+18005550100@pbx.example")) -> str:
    """The same metadata in the layout of the SIPREC drafts that some SBCs still send:
    ``id`` attributes, ``<send>`` in ``<participant>``, ``<dataMode>``."""
    parts = ["<?xml version='1.0' encoding='UTF-8'?>",
             "<recording xmlns='urn:ietf:params:xml:ns:recording'>",
             "<dataMode>complete</dataMode>", "<session id=\"urn:uuid:s-1\"/>"]
    for i, (label, aor) in enumerate(zip(labels, aors, strict=False)):
        parts += [f"<participant id=\"urn:uuid:p-{i}\" session=\"urn:uuid:s-1\">"
                  f"<aor>{aor}</aor><send>urn:uuid:st-{i}</send></participant>",
                  f"<stream id=\"urn:uuid:st-{i}\" session=\"urn:uuid:s-1\">"
                  f"<label>{label}</label></stream>"]
    parts.append("</recording>")
    return "\r\n".join(parts)


@dataclass
class Dialog:
    """What the client knows of one recording session."""

    call_id: str
    from_tag: str
    to: str = ""
    cseq: int = 1
    answer: Any = None
    final: SipMessage | None = None
    responses: list[SipMessage] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        """RTP ports of the answer, one per offered stream (0 = rejected)."""
        return [m.port for m in self.answer.media] if self.answer else []


class SiprecClient:
    """Sends SIPREC requests to a gateway on 127.0.0.1 and collects what comes back."""

    def __init__(self, port: int, transport: str = "udp", ssl_context: Any = None):
        self.port = port
        self.transport = transport
        self.ssl_context = ssl_context
        self.inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.raw: list[bytes] = []
        self.local_port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SiprecClient:
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            client = self

            class _Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: Any) -> None:
                    client.raw.append(data)
                    client.inbox.put_nowait(parse_message(data))

            self._udp, _ = await loop.create_datagram_endpoint(
                _Proto, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", self.port))
            self.local_port = self._udp.get_extra_info("sockname")[1]
        else:
            reader, self._writer = await asyncio.open_connection(
                "127.0.0.1", self.port, ssl=self.ssl_context)
            self.local_port = self._writer.get_extra_info("sockname")[1]
            framer = StreamFramer()

            async def read() -> None:
                while data := await reader.read(65536):
                    self.raw.append(data)
                    for msg in framer.feed(data):
                        self.inbox.put_nowait(msg)

            self._reader_task = asyncio.create_task(read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()

    def send(self, data: bytes | str) -> None:
        """Send raw bytes (a SIP message, garbage, a keep-alive)."""
        raw = data.encode() if isinstance(data, str) else data
        if self._udp is not None:
            self._udp.sendto(raw)
        else:
            assert self._writer is not None
            self._writer.write(raw)

    def request(self, method: str, dialog: Dialog, *, body: str = "",
                content_type: str | None = None, extra: list[str] | None = None,
                branch: str | None = None, cseq: int | None = None) -> str:
        """A request of ``dialog`` as text (with Content-Length)."""
        tp = self.transport.upper()
        to = dialog.to or "<sip:srs@127.0.0.1>"
        lines = [f"{method} sip:srs@127.0.0.1:{self.port} SIP/2.0",
                 f"Via: SIP/2.0/{tp} 127.0.0.1:{self.local_port};branch="
                 f"{branch or 'z9hG4bK' + uuid.uuid4().hex[:12]};rport",
                 "Max-Forwards: 70",
                 f"From: <sip:src@127.0.0.1>;tag={dialog.from_tag}", f"To: {to}",
                 f"Call-ID: {dialog.call_id}", f"CSeq: {cseq or dialog.cseq} {method}",
                 f"Contact: <sip:src@127.0.0.1:{self.local_port};transport={self.transport}>"
                 ";+sip.src"]
        lines += extra or []
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def invite_text(self, dialog: Dialog, *, sdp: str | None = None,
                    metadata: str | None = "default", extra: list[str] | None = None,
                    branch: str | None = None) -> str:
        """A SIPREC INVITE: multipart SDP + metadata (or SDP alone with ``metadata=None``)."""
        sdp = sdp if sdp is not None else sdp_offer()
        if metadata == "default":
            metadata = rs_metadata()
        headers = ["Require: siprec", "Supported: timer"] + (extra or [])
        if metadata is None:
            return self.request("INVITE", dialog, body=sdp, content_type="application/sdp",
                                extra=headers, branch=branch)
        body = (f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n{sdp}"
                f"--{BOUNDARY}\r\nContent-Type: application/rs-metadata+xml\r\n"
                f"Content-Disposition: recording-session\r\n\r\n{metadata}\r\n"
                f"--{BOUNDARY}--\r\n")
        return self.request("INVITE", dialog, body=body, extra=headers, branch=branch,
                            content_type=f"multipart/mixed;boundary={BOUNDARY}")

    async def final(self, dialog: Dialog, timeout: float = 5.0) -> SipMessage:  # noqa: ASYNC109
        """Wait for a final response of ``dialog`` (provisional ones are kept too)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if msg.call_id != dialog.call_id:
                    continue
                dialog.responses.append(msg)
                if msg.is_request or (msg.status or 0) < 200:
                    continue
                return msg

    async def invite(self, dialog: Dialog, **kw: Any) -> SipMessage:
        """INVITE, wait for the final answer, ACK a 2xx; the dialog learns tag and ports."""
        self.send(self.invite_text(dialog, **kw))
        resp = await self.final(dialog)
        dialog.final = resp
        if resp.status == 200:
            dialog.to = resp.get("To") or ""
            dialog.answer = parse_sdp(resp.body.decode())
            self.send(self.request("ACK", dialog))
        return resp

    async def bye(self, dialog: Dialog) -> SipMessage:
        """End the recording session."""
        dialog.cseq += 1
        self.send(self.request("BYE", dialog))
        return await self.final(dialog)

    async def expect_request(self, method: str, timeout: float = 10.0  # noqa: ASYNC109
                             ) -> SipMessage:
        """Wait for a request from the gateway (e.g. its BYE) and answer it 200 OK."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if msg.is_request and msg.method == method:
                    via = msg.get("Via")
                    reply = ["SIP/2.0 200 OK", f"Via: {via}", f"From: {msg.get('From')}",
                             f"To: {msg.get('To')}", f"Call-ID: {msg.call_id}",
                             f"CSeq: {msg.get('CSeq')}", "Content-Length: 0"]
                    self.send("\r\n".join(reply) + "\r\n\r\n")
                    return msg


def rtp_packets(payload: bytes, *, pt: int = 0, ssrc: int | None = None, seq: int = 1000,
                ts: int = 0, frame: int = 160) -> list[bytes]:
    """``payload`` (8-bit G.711 samples) cut into 20 ms RTP packets."""
    ssrc = random.getrandbits(32) if ssrc is None else ssrc
    out = []
    for k, i in enumerate(range(0, len(payload), frame)):
        header = struct.pack("!BBHII", 0x80, pt, (seq + k) & 0xFFFF, (ts + i) & 0xFFFFFFFF,
                             ssrc)
        out.append(header + payload[i:i + frame])
    return out


class RtpSender:
    """One UDP socket sending RTP to the gateway, as an SBC's media port does."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> RtpSender:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(self.host, 0))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.transport is not None:
            self.transport.close()

    async def send(self, port: int, packets: list[bytes], *, pace_s: float = 0.0) -> None:
        """Send ``packets`` to ``127.0.0.1:port``, faster than real time unless paced."""
        assert self.transport is not None
        for k, p in enumerate(packets):
            self.transport.sendto(p, ("127.0.0.1", port))
            if pace_s:
                await asyncio.sleep(pace_s)
            elif k % 8 == 7:
                await asyncio.sleep(0.002)  # a burst, but not one the socket buffer drops


async def send_rtp(port: int, packets: list[bytes], *, pace_s: float = 0.0) -> None:
    """Send RTP packets to ``127.0.0.1:port`` from a new UDP socket."""
    async with RtpSender() as sender:
        await sender.send(port, packets, pace_s=pace_s)


async def siprec_service(make_service, limits=None, redis=None, **section):
    """A service (the ``make_service`` fixture) with the SIPREC gateway on free ports."""
    cfg = {"enabled": True, "port": 0, "rtp_port_min": 0, **section}
    svc = await make_service(gateways={"siprec": cfg}, limits=limits or {}, redis=redis or {})
    (gw,) = svc.gateways
    svc.sip_port = gw.bound_port
    svc.gw = gw
    return svc


def new_dialog() -> Dialog:
    """A dialog with a fresh Call-ID and From tag."""
    return Dialog(call_id=f"{uuid.uuid4().hex}@sbc.example", from_tag=uuid.uuid4().hex[:8])
