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

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import Field

from nes2net_gateways._common import (
    address_in,
    call_metadata,
    call_start,
    check_call_id,
    check_roles,
    discard_events,
    metrics_registry,
    parse_json_object,
    parse_networks,
)
from nes2net_gateways._control_api import (
    ControlApiConfig,
    RegisteredCallsGateway,
    local_address,
)
from nes2net_gateways.asterisk_rtp_call import FORMATS, MediaCall, MediaFormat
from nes2net_gateways.rtp import bind_rtp_port, rtp_counters
from nes2net_gateways.rtp_payload import CODECS
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

FIELDS = frozenset({"call_id", "format", "channel_id", "ani", "dnis", "custom"})


class AsteriskRtpConfig(ControlApiConfig):
    """``[gateways.asterisk_rtp]`` settings (see docs/gateways/asterisk_rtp.md)."""

    port: int = Field(9093, ge=0, le=65535)
    media_host: str = ""
    media_address: str = ""
    rtp_port_min: int = Field(30000, ge=0, le=65535)
    rtp_port_max: int = Field(30999, ge=0, le=65535)
    rtp_reorder_packets: int = Field(4, ge=0, le=50)
    rtp_conceal_ms: float = Field(60.0, ge=0.0, le=500.0)
    media_networks: list[str] | None = None
    media_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)
    default_format: str = "ulaw"


class AsteriskRtpGateway(RegisteredCallsGateway):
    """Asterisk External Media over RTP with an HTTP control API (see the module docstring)."""

    name = "asterisk_rtp"
    transport = "custom"
    Config = AsteriskRtpConfig

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: AsteriskRtpConfig = config  # type: ignore[assignment]
        self.networks: list[Any] = []
        self.rtp = rtp_counters("nes2net_asterisk_rtp", "External Media calls",
                                metrics_registry(ctx))
        self.setup_api()
        self.api.route("POST", "/calls", self._create)

    # ------------------------------------------------------------------ configuration
    def check_config(self) -> None:
        """Validate the token, the RTP range, the networks and the default format."""
        key = f"gateways.{self.name}"
        check_roles(self.cfg, self.name)
        self.api.check()
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

    # ------------------------------------------------------------------ control API
    async def _create(self, request: web.Request) -> web.Response:
        self.check_accepting()
        reg = parse_registration(await request.read(), self.limits.max_text_bytes,
                                 self.cfg.default_format)
        fmt = reg.format
        if not CODECS[fmt.codec].available:
            raise ProtocolError("unsupported_format", f"format {fmt.name} needs PyAV (install "
                                "nes2net-stream[webrtc])")
        meta = call_metadata(self.name, reg.call_id, stream_id=reg.channel_id, ani=reg.ani,
                             dnis=reg.dnis, custom={"codec": fmt.codec.lower(), **reg.custom,
                                                    "format": fmt.name})
        start = call_start(self, call_id=reg.call_id, encoding=fmt.encoding,
                           sample_rate=fmt.sample_rate, channels=(self.cfg.customer_role,),
                           metadata=meta, remote=request.remote)
        handle = self.new_call(discard_events)
        handle.start(start)  # ProtocolError: duplicate id, capacity, draining
        call = MediaCall(self, handle, fmt, self.call_url(request, start.call_id))
        self.calls[start.call_id] = call
        call.start()  # from here the call's task ends it whatever happens to this request
        try:
            call.port = await bind_rtp_port(self.cfg.media_host or self.cfg.host,
                                            self.cfg.rtp_port_min, self.cfg.rtp_port_max,
                                            call.on_datagram)
        except OSError as exc:
            call.finish(CallEnd("error", "too_many_calls"))
            raise ProtocolError("too_many_calls", f"no free RTP port: {exc}") from None
        host = self.cfg.media_address or local_address(request)
        external = f"[{host}]:{call.port.port}" if ":" in host else f"{host}:{call.port.port}"
        return web.json_response({"call_id": start.call_id, "format": fmt.name,
                                  "external_host": external, "host": host,
                                  "port": call.port.port, "call_url": call.call_url},
                                 status=201)

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
