"""SIPREC recording server (RFC 7866): SBCs and PBXs fork call audio to it over SIP and RTP.

The recording client (an SBC such as Cisco CUBE, Oracle, AudioCodes or Ribbon, or a PBX)
sends an INVITE whose multipart body holds an SDP offer with one send-only audio stream per
participant (``a=label``) and RFC 7865 metadata saying whose stream is which. This gateway
answers with receive-only RTP ports, feeds each stream into one channel of an internal call,
and ends the call on BYE (or sends BYE itself on timeouts, limits and shutdown). SIP runs over
UDP and TCP on ``port``; see docs/gateways/siprec.md.

Security: requests are accepted only from ``allowed_networks`` and, when a password is set,
with digest authentication (SHA-256 or MD5) on every new INVITE; one of the two is required
when the gateway listens beyond loopback. RTP is accepted only from the addresses in the
offer (or the client's), latched to the first sender; requests per client address are rate
limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from nes2net_gateways._common import address_in, check_roles, discard_events, metrics_registry
from nes2net_gateways.rtp import rtp_counters
from nes2net_gateways.sip_digest import DigestAuthenticator
from nes2net_gateways.sip_message import (
    SipError,
    SipMessage,
    StreamFramer,
    make_response,
    new_tag,
    parse_message,
)
from nes2net_gateways.siprec_call import Peer, RecordingCall
from nes2net_gateways.siprec_config import (
    SiprecConfig,
    allowed_networks,
    customer_aor,
    srtp_mode,
    tls_context,
)
from nes2net_gateways.siprec_invite import InviteHandler
from nes2net_stream.gateways.api import Gateway, GatewayConfig
from nes2net_stream.service.auth import is_loopback
from nes2net_stream.service.ratelimit import KeyedBuckets

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
MAX_SIP_BYTES = 65535
PORT_TRIES = 20
MAX_CONNECTIONS = 1024  # concurrent SIP connections over TCP and TLS
TCP_IDLE_S = 600.0  # a connection without traffic or sessions for this long is closed


class SiprecGateway(Gateway):
    """SIPREC session recording server (see the module docstring)."""

    name = "siprec"
    transport = "custom"
    Config = SiprecConfig

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: SiprecConfig = config  # type: ignore[assignment]
        self.calls: dict[str, RecordingCall] = {}
        self.accepting = True
        self.closing = False
        self.digest: DigestAuthenticator | None = None
        self.networks: list[Any] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tls: asyncio.Server | None = None
        self.tls_context: ssl.SSLContext | None = None
        self.tls_bound_port: int | None = None
        self.srtp_mode = "off"
        self.customer_aor: re.Pattern[str] | None = None
        self._pending: dict[str, asyncio.Event] = {}
        self._limit = KeyedBuckets(self.cfg.max_requests_per_s,
                                   max(1.0, 2 * self.cfg.max_requests_per_s))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._routes: dict[str, str] = {}  # client address -> our address towards it
        self._connections = 0  # SIP over TCP/TLS
        self.invites = InviteHandler(self)
        metrics = SiprecMetrics(metrics_registry(ctx))
        self.rtp = metrics.rtp
        self.responses = metrics.responses

    # ------------------------------------------------------------------ configuration
    def check_config(self) -> None:
        """Validate networks, credentials, TLS and the RTP range (ConfigError names the key)."""
        check_roles(self.cfg, self.name)
        self.tls_context = tls_context(self.cfg)
        self.srtp_mode = srtp_mode(self.cfg, self.log)
        self.networks = allowed_networks(self.cfg, self.auth_required)
        self.customer_aor = customer_aor(self.cfg)
        if self.cfg.password:
            self.digest = DigestAuthenticator(self.cfg.username, self.cfg.password,
                                              self.cfg.realm)
        if self.cfg.auth == "off" and not is_loopback(self.cfg.host):
            self.log.warning("auth = \"off\": SIPREC accepts requests from any address")

    def allowed(self, ip: str) -> bool:
        """True when ``ip`` may send requests (always with ``auth = "off"``)."""
        return self.cfg.auth == "off" or address_in(ip, self.networks)

    # ------------------------------------------------------------------ sockets
    async def start_serving(self) -> None:
        """Listen for SIP on UDP and/or TCP ``host:port``.

        With ``port = 0`` the UDP port is chosen first and TCP takes the same number; when
        that number is taken for TCP, both are chosen again.
        """
        for attempt in range(PORT_TRIES):
            try:
                await self._listen()
                return
            except OSError:
                if self.cfg.port or attempt == PORT_TRIES - 1:
                    raise
                if self._udp is not None:
                    self._udp.close()
                    self._udp = None

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.cfg.host, self.cfg.port
        self.bound_port = None
        if "udp" in self.cfg.transports:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _SipDatagrams(self), local_addr=(host, port),
                reuse_port=self.reuse_port or None)
            port = self._udp.get_extra_info("sockname")[1]
        if "tcp" in self.cfg.transports:
            self._tcp = await asyncio.start_server(self._serve_tcp, host, port,
                                                   reuse_port=self.reuse_port or None)
            port = self._tcp.sockets[0].getsockname()[1]
        if {"udp", "tcp"} & set(self.cfg.transports):
            self.bound_port = port
        if self.tls_context is not None and self._tls is None:
            self._tls = await asyncio.start_server(
                lambda r, w: self._serve_tcp(r, w, "TLS"), host, self.cfg.tls_port,
                ssl=self.tls_context, ssl_handshake_timeout=10,
                reuse_port=self.reuse_port or None)
            self.tls_bound_port = self._tls.sockets[0].getsockname()[1]
            if self.bound_port is None:
                self.bound_port = self.tls_bound_port

    async def stop_serving(self) -> None:
        """Refuse new INVITEs (503): the drain ends active calls, which then send BYE."""
        self.accepting = False
        for server in (self._tcp, self._tls):
            if server is not None:
                server.close()

    async def close(self) -> None:
        """Wait for the calls to send their BYEs, then close the sockets."""
        calls = list(self.calls.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                for call in calls:
                    await call.wait()
        self.closing = True
        for pending in self._pending.values():
            pending.set()
        if self._udp is not None:
            self._udp.close()
        for task in list(self._tasks):
            task.cancel()

    def local_ip(self, remote_ip: str) -> str:
        """The address this host uses towards ``remote_ip`` (for Via, Contact and SDP)."""
        if self.cfg.media_address:
            return self.cfg.media_address
        host = self.cfg.host
        if host not in ("", "0.0.0.0", "::"):
            return host
        found = self._routes.get(remote_ip)
        if found is None:
            found = "127.0.0.1"
            family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
            with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((remote_ip, 9))  # no packet is sent: this only picks the route
                found = s.getsockname()[0]
            if len(self._routes) >= 1024:
                self._routes.clear()
            self._routes[remote_ip] = found
        return found

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         kind: str = "TCP") -> None:
        addr = writer.get_extra_info("peername")
        remote = (addr[0], addr[1]) if addr else ("", 0)
        if not self.allowed(remote[0]) or self._connections >= MAX_CONNECTIONS:
            self.log.warning("connection refused: " + (
                "too many SIP connections" if self.allowed(remote[0])
                else "address not in allowed_networks"), remote=f"{remote[0]}:{remote[1]}")
            writer.close()
            return
        self._connections += 1

        def send(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        local_port = self.tls_bound_port if kind == "TLS" else self.bound_port
        peer = Peer(kind, remote, send, self.local_ip(remote[0]), local_port or 0)
        framer = StreamFramer(max_bytes=MAX_SIP_BYTES)
        try:
            while not writer.is_closing():
                try:
                    async with asyncio.timeout(TCP_IDLE_S):
                        data = await reader.read(1 << 16)
                except TimeoutError:
                    if any(c.peer is peer for c in self.calls.values()):
                        continue  # quiet, but a session may still need it (for its BYE)
                    break  # idle and unused: the client reconnects when it needs to
                if not data:
                    break
                for msg in framer.feed(data):
                    self.dispatch(msg, peer)
        except SipError as err:
            self.log.warning("bad SIP stream", status=err.status, detail=err.message,
                             remote=f"{remote[0]}:{remote[1]}")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections -= 1
            writer.close()

    def on_datagram(self, data: bytes, addr: Any) -> None:
        """One UDP datagram: a SIP message, or a keep-alive (ignored)."""
        if not data.strip(b"\r\n\0 "):
            return  # CRLF / NUL keep-alives
        remote = (addr[0], addr[1])
        if not self.allowed(remote[0]):
            return  # not even an answer to addresses we do not serve
        udp = self._udp
        if udp is None:
            return
        peer = Peer("UDP", remote, lambda b: udp.sendto(b, remote), self.local_ip(remote[0]),
                    self.bound_port or 0)
        try:
            msg = parse_message(data, max_bytes=MAX_SIP_BYTES)
        except SipError as err:
            self.log.warning("bad SIP message", status=err.status, detail=err.message,
                             remote=f"{remote[0]}:{remote[1]}")
            return
        self.dispatch(msg, peer)

    # ------------------------------------------------------------------ requests
    def dispatch(self, msg: SipMessage, peer: Peer) -> None:
        """Route one parsed message (never raises: failures become 500 answers)."""
        try:
            if not msg.is_request:
                pending = self._pending.get(msg.call_id)
                if pending is not None and msg.status is not None and msg.status >= 200:
                    pending.set()
                return
            call = self.calls.get(msg.call_id)
            if call is not None and call.peer.addr[0] == peer.addr[0]:
                if not call.requests.take():
                    return  # a flood inside one dialog
            elif not self._limit.take(peer.addr[0]):
                return  # new dialogs, OPTIONS and strays: limited per client address
            self._request(msg, peer)
        except SipError as err:
            if msg.is_request:
                self.reply(msg, peer, err.status, err.reason, warning=err.message)
        except Exception as exc:
            self.log.exception("SIP request failed", error=repr(exc))
            if msg.is_request:
                with contextlib.suppress(Exception):
                    self.reply(msg, peer, 500)

    def _request(self, msg: SipMessage, peer: Peer) -> None:
        method = msg.method or ""
        call = self.calls.get(msg.call_id)
        if call is not None and call.peer.addr[0] != peer.addr[0]:
            call = None  # in-dialog requests only from the client that opened the dialog
        if method == "INVITE":
            self.invites.invite(msg, peer, call)
        elif method == "ACK":
            if call is not None:
                call.on_ack()
        elif method == "OPTIONS" and not (self.accepting and not self.ctx.draining):
            # SBCs probe recorders with OPTIONS: a draining one is taken out of rotation
            self.reply(msg, peer, 503, headers=[("Retry-After", "5")])
        elif method == "OPTIONS":
            self.reply(msg, peer, 200, headers=[
                ("Allow", ALLOW), ("Accept", "application/sdp, multipart/mixed, "
                                   "application/rs-metadata+xml"), ("Supported", "siprec")])
        elif method == "CANCEL":
            self.reply(msg, peer, 200 if call is not None else 481)
        elif call is None:
            self.reply(msg, peer, 481 if method in ("BYE", "UPDATE", "INFO") else 405,
                       headers=[("Allow", ALLOW)])
        elif method == "BYE":
            self.reply(msg, peer, 200, to_tag=call.local_tag)
            call.on_bye()
        elif method == "UPDATE":
            self.invites.update(msg, peer, call)
        else:  # INFO and the like inside the dialog: acknowledged, not acted on
            self.reply(msg, peer, 200, to_tag=call.local_tag)

    def reply(self, request: SipMessage, peer: Peer, status: int, reason: str | None = None,
              *, to_tag: str | None = None, headers: list[tuple[str, str]] | None = None,
              body: bytes = b"", warning: str | None = None) -> bytes:
        """Send a response to ``request`` (never to an ACK); returns its bytes."""
        if request.method == "ACK":
            return b""
        extra = list(headers or [])
        if warning:
            text = warning.replace('"', "'")[:200]
            extra.append(("Warning", f'399 nes2net-stream "{text}"'))
        extra.append(("Server", "nes2net-stream"))
        if status >= 200 and to_tag is None:
            to_tag = new_tag()
        resp = make_response(request, status, reason, to_tag=to_tag or None, headers=extra,
                             body=body)
        _stamp_via(resp, peer)
        self.responses.labels(status=str(status)).inc()
        data = resp.to_bytes()
        peer.send(data)
        return data

    # ------------------------------------------------------------------ bookkeeping
    def register(self, call: RecordingCall) -> None:
        """Track a started recording session by its SIP Call-ID."""
        self.calls[call.sip_call_id] = call

    def forget(self, call: RecordingCall) -> None:
        """Stop tracking a finished recording session."""
        if self.calls.get(call.sip_call_id) is call:
            del self.calls[call.sip_call_id]

    def expect_response(self, sip_call_id: str, event: asyncio.Event | None) -> None:
        """Set ``event`` when a final response to our request in ``sip_call_id`` arrives."""
        if event is None:
            self._pending.pop(sip_call_id, None)
        else:
            self._pending[sip_call_id] = event

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, kept until done."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def new_handle(self) -> Any:
        """A call handle whose events are not sent back (SIPREC has no event channel)."""
        return self.new_call(discard_events)


class SiprecMetrics:
    """The gateway's Prometheus counters (base units, no per-call labels)."""

    def __init__(self, registry: CollectorRegistry | None):
        self.rtp = rtp_counters("nes2net_siprec_rtp", "recorded streams", registry)
        self.responses = Counter("nes2net_siprec_responses_total",
                                 "SIP responses sent, by status code", ["status"],
                                 registry=registry)


class _SipDatagrams(asyncio.DatagramProtocol):
    def __init__(self, gateway: SiprecGateway):
        self.gateway = gateway

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.gateway.on_datagram(data, addr)


def _stamp_via(resp: SipMessage, peer: Peer) -> None:
    """Add ``received``/``rport`` to the top Via of a UDP response (RFC 3261 §18.2.1, 3581)."""
    if peer.reliable:
        return
    for i, (name, value) in enumerate(resp.headers):
        if name != "Via":
            continue
        first, sep, rest = value.partition(",")
        parts = first.split(";")
        params = [p.strip() for p in parts[1:]]
        host = parts[0].split()[-1] if parts[0].split() else ""
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host.strip("[]")
        out = [parts[0].strip()]
        for p in params:
            if p.lower() == "rport":
                p = f"rport={peer.addr[1]}"
            out.append(p)
        if host != peer.addr[0] and not any(p.lower().startswith("received=") for p in params):
            out.append(f"received={peer.addr[0]}")
        resp.headers[i] = (name, ";".join(out) + (sep + rest if sep else ""))
        return
