"""Asterisk External Media over RTP/UDP: ARI's ``/channels/externalMedia`` sends RTP here.

RTP says nothing about the call it belongs to, so the ARI application registers each call
with a small HTTP control API first and gets an RTP port of its own back::

    POST   /calls            {"call_id": "...", "format": "ulaw", "ani": ..., "custom": {...}}
       -> 201 {"external_host": "10.0.0.9:30010", "call_url": "http://.../calls/<id>", ...}
    GET    /calls/<id>       the call's state (packets, loss, audio seconds)
    DELETE /calls/<id>       the call is over: its summary is published, the port closed

The application then creates the External Media channel with that ``external_host`` and the
same ``format``, and deletes the call when the channel goes away (the call also ends when no
RTP arrives for ``media_timeout_s``). See docs/gateways/asterisk_rtp.md.

Security: the control API takes ``Authorization: Bearer <api_token>``, required whenever the
service listens beyond loopback; requests per client address are rate limited and bodies
bounded by ``[limits] max_text_bytes``. RTP is accepted from the first sender of a port only
(and from ``media_networks`` when set).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field

from nes2net_gateways._auth import bearer_token, require_secret, secret_equal
from nes2net_gateways._common import (
    address_in,
    call_metadata,
    call_start,
    check_call_id,
    check_roles,
    discard_events,
    parse_json_object,
    parse_networks,
)
from nes2net_gateways.asterisk_rtp_call import FORMATS, MediaCall, MediaFormat
from nes2net_gateways.rtp import bind_rtp_port
from nes2net_gateways.rtp_payload import CODECS
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import Gateway, GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd
from nes2net_stream.service.ratelimit import KeyedBuckets

FIELDS = frozenset({"call_id", "format", "channel_id", "ani", "dnis", "custom"})
DELETE_WAIT_S = 5.0


class AsteriskRtpConfig(GatewayConfig):
    """``[gateways.asterisk_rtp]`` settings (see docs/gateways/asterisk_rtp.md)."""

    port: int = Field(9093, ge=0, le=65535)
    api_token: str = ""
    media_host: str = ""
    media_address: str = ""
    rtp_port_min: int = Field(30000, ge=0, le=65535)
    rtp_port_max: int = Field(30999, ge=0, le=65535)
    media_networks: list[str] | None = None
    media_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)
    default_format: str = "ulaw"
    max_requests_per_s: float = Field(50.0, gt=0)


class AsteriskRtpGateway(Gateway):
    """Asterisk External Media over RTP with an HTTP control API (see the module docstring)."""

    name = "asterisk_rtp"
    transport = "custom"
    Config = AsteriskRtpConfig

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: AsteriskRtpConfig = config  # type: ignore[assignment]
        self.calls: dict[str, MediaCall] = {}
        self.accepting = True
        self.networks: list[Any] = []
        self.call_port: int | None = None  # the port of this process's call URLs
        self._runner: web.AppRunner | None = None
        self._limit = KeyedBuckets(self.cfg.max_requests_per_s,
                                   max(1.0, 2 * self.cfg.max_requests_per_s))
        registry: CollectorRegistry | None = getattr(getattr(ctx, "metrics", None),
                                                     "registry", None)
        self.rtp_packets = Counter(
            "nes2net_asterisk_rtp_packets_total", "RTP packets of External Media calls, by "
            "outcome (received, lost, late, other payload types, invalid or foreign)",
            ["result"], registry=registry)
        self.rtp_filled = Counter(
            "nes2net_asterisk_rtp_gap_fill_seconds_total",
            "Seconds of silence inserted for RTP gaps of External Media calls", registry=registry)
        self.requests = Counter("nes2net_asterisk_rtp_requests_total",
                                "Control API requests, by HTTP status", ["status"],
                                registry=registry)

    # ------------------------------------------------------------------ configuration
    def check_config(self) -> None:
        """Validate the token, the RTP range, the networks and the default format."""
        key = f"gateways.{self.name}"
        check_roles(self.cfg, self.name)
        if self.cfg.auth != "off":
            require_secret(self, "api_token", self.cfg.api_token)
        c = self.cfg
        if c.rtp_port_min and c.rtp_port_max - c.rtp_port_min < 1:
            raise ConfigError(f"{key}.rtp_port_max: must be above rtp_port_min "
                              f"({c.rtp_port_min}) by at least 1 (0 in rtp_port_min: "
                              "ephemeral ports)")
        if c.media_networks is not None:
            self.networks = parse_networks(f"{key}.media_networks", c.media_networks)
        if c.default_format not in FORMATS:
            raise ConfigError(f"{key}.default_format: {c.default_format!r} is not one of "
                              f"{', '.join(FORMATS)}")

    def media_allowed(self, ip: str) -> bool:
        """True when ``ip`` may send a call's RTP (always without ``media_networks``)."""
        return not self.networks or address_in(ip, self.networks)

    # ------------------------------------------------------------------ serving
    async def start_serving(self) -> None:
        """Serve the control API on ``host:port``.

        With several ingest processes (which share ``port``), each one also listens on
        ``port + 1 + its index``: its calls' URLs point there, so that the process owning a
        call's RTP port is the one that ends it.
        """
        if self.worker_index is not None and not self.cfg.port:
            raise ConfigError(f"gateways.{self.name}.port: must be set (not 0) with several "
                              "ingest workers, which also listen on port + 1 + their index")
        prefix = self.cfg.path.rstrip("/")
        app = web.Application(client_max_size=self.limits.max_text_bytes,
                              middlewares=[self._guard])
        app.router.add_post(f"{prefix}/calls", self._create)
        app.router.add_get(prefix + "/calls/{call_id:.+}", self._get)
        app.router.add_delete(prefix + "/calls/{call_id:.+}", self._delete)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.cfg.host, self.cfg.port,
                          reuse_port=self.reuse_port or None).start()
        self.bound_port = self.call_port = self._runner.addresses[-1][1]
        if self.worker_index is not None:
            own = self.cfg.port + 1 + self.worker_index
            await web.TCPSite(self._runner, self.cfg.host, own).start()
            self.call_port = own

    async def stop_serving(self) -> None:
        """Refuse new calls (503); the drain ends the active ones."""
        self.accepting = False

    async def close(self) -> None:
        """Wait for the calls' summaries, then stop the control API."""
        calls = list(self.calls.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                for call in calls:
                    call.finish(CallEnd("shutdown"))
                    await call.wait()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()

    def forget(self, call: MediaCall) -> None:
        """Drop a finished call."""
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]

    # ------------------------------------------------------------------ control API
    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Rate limit, authenticate and turn errors into JSON responses."""
        try:
            if not self._limit.take(request.remote or ""):
                raise ProtocolError("rate_limited", "too many control requests from this "
                                    "address")
            token = self.cfg.api_token
            if token and self.cfg.auth != "off" and \
                    not secret_equal(bearer_token(request.headers), token):
                raise ProtocolError("unauthorized", "missing or invalid bearer token")
            response = await handler(request)
        except ProtocolError as err:
            self.ctx.metrics.protocol_errors.labels(code=err.code).inc()
            response = _error(err.code, err.message, _status(err))
        except web.HTTPException as exc:  # unknown path or method, body over the limit
            code = {404: "not_found", 405: "method_not_allowed", 413: "frame_too_large"}
            response = _error(code.get(exc.status, "bad_message"), exc.reason, exc.status)
        except Exception as exc:  # never let one request break the service
            self.log.exception("gateway failure", error=repr(exc))
            response = _error("internal_error", "internal error", 500)
        self.requests.labels(status=str(response.status)).inc()
        return response

    async def _create(self, request: web.Request) -> web.Response:
        if not self.accepting or self.ctx.draining:
            raise ProtocolError("shutting_down", "the service is draining; retry elsewhere")
        reg = parse_registration(await request.read(), self.limits.max_text_bytes,
                                 self.cfg.default_format)
        fmt = reg.format
        if not CODECS[fmt.codec].available:
            raise ProtocolError("unsupported_format", f"format {fmt.name} needs PyAV (install "
                                "nes2net-stream[webrtc])")
        meta = call_metadata(self.name, reg.call_id, stream_id=reg.channel_id, ani=reg.ani,
                             dnis=reg.dnis, custom={**reg.custom, "format": fmt.name})
        start = call_start(self, call_id=reg.call_id, encoding=fmt.encoding,
                           sample_rate=fmt.sample_rate, channels=(self.cfg.customer_role,),
                           metadata=meta, remote=request.remote)
        handle = self.new_call(discard_events)
        handle.start(start)  # ProtocolError: duplicate id, capacity, draining
        url = request.url.with_port(self.call_port).with_path(
            f"{self.cfg.path.rstrip('/')}/calls/{quote(start.call_id, safe='')}", encoded=True)
        call = MediaCall(self, handle, fmt, str(url.with_query(None)))
        self.calls[start.call_id] = call
        call.start()  # from here the call's task ends it whatever happens to this request
        try:
            call.port = await bind_rtp_port(self.cfg.media_host or self.cfg.host,
                                            self.cfg.rtp_port_min, self.cfg.rtp_port_max,
                                            call.on_datagram)
        except OSError as exc:
            call.finish(CallEnd("error", "too_many_calls"))
            raise ProtocolError("too_many_calls", f"no free RTP port: {exc}") from None
        host = self.cfg.media_address or _local_address(request)
        external = f"[{host}]:{call.port.port}" if ":" in host else f"{host}:{call.port.port}"
        return web.json_response({"call_id": start.call_id, "format": fmt.name,
                                  "external_host": external, "host": host,
                                  "port": call.port.port, "call_url": call.call_url},
                                 status=201)

    def _call(self, request: web.Request) -> MediaCall:
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            raise web.HTTPNotFound(reason="no such call in this process")
        return call

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self._call(request).state())

    async def _delete(self, request: web.Request) -> web.Response:
        call = self._call(request)
        call.finish(CallEnd("stop", "deleted"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DELETE_WAIT_S):
                await call.wait()
        return web.json_response(call.state())


@dataclass(frozen=True)
class Registration:
    """A ``POST /calls`` body, checked."""

    call_id: str
    format: MediaFormat
    channel_id: str | None = None
    ani: Any = None
    dnis: Any = None
    custom: dict[str, Any] = field(default_factory=dict)


def parse_registration(body: bytes, max_bytes: int, default_format: str) -> Registration:
    """Parse a registration; ProtocolError (and nothing else) for anything malformed."""
    doc = parse_json_object(body, max_bytes, "request")
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        raise ProtocolError("bad_message", f"unknown field(s): {', '.join(unknown)}"[:200])
    name = doc.get("format", default_format)
    fmt = FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise ProtocolError("unsupported_format", f"format {str(name)[:40]!r} is not one of "
                            f"{', '.join(FORMATS)}")
    custom = doc.get("custom", {})
    if not isinstance(custom, dict):
        raise ProtocolError("bad_message", "custom must be a JSON object")
    channel_id = doc.get("channel_id")
    if channel_id is not None and not isinstance(channel_id, str):
        raise ProtocolError("bad_message", "channel_id must be a string")
    for key in ("ani", "dnis"):
        if not isinstance(doc.get(key), str | int | None) or isinstance(doc.get(key), bool):
            raise ProtocolError("bad_message", f"{key} must be a string or a number")
    return Registration(check_call_id(doc.get("call_id")), fmt, channel_id, doc.get("ani"),
                        doc.get("dnis"), custom)


def _status(err: ProtocolError) -> int:
    """HTTP status of a protocol error: its 44xx close code less 4000, else 503 or 500."""
    code = err.close_code
    if 4400 <= code < 4500:
        return code - 4000
    return 503 if err.code == "shutting_down" else 500


def _error(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _local_address(request: web.Request) -> str:
    """The address of this host that the control request reached (for ``external_host``)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return str(sockname[0]) if sockname else "127.0.0.1"
