"""RingCentral RingCX streaming over gRPC, see docs/gateways/ringcx.md.

A RingCX workflow's *Start Streaming* action (Workflow Studio, usually on *Agent Connected*)
makes one client-streaming gRPC call per dialog to the configured server and sends
``StreamEvent`` messages (:mod:`ringcx_proto`): ``dialog_init`` (account, dialog id, ANI,
DNIS, language, attributes), then per participant a *segment*: ``segment_start`` (the
participant, contact, agent or bot, and the audio format), ``segment_media`` chunks of G.711
at 8 kHz (100 ms by default) and ``segment_stop``. The server answers ``Empty`` when RingCX
ends the call's stream.

The documented set-up names no credentials for this connection, so streams are accepted
from ``allowed_networks`` only (required when the gateway listens beyond loopback), over TLS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, Literal

import grpc
from pydantic import Field

from nes2net_gateways._common import (
    AGENT_ROLE,
    RateGuard,
    address_in,
    call_start,
    check_roles,
    feed,
    parse_networks,
)
from nes2net_gateways._grpc_gateway import GrpcGateway, GrpcGatewayConfig, parse_message
from nes2net_gateways.ringcx_proto import (
    AGENT,
    CONTACT,
    METHOD,
    PCMA,
    PCMU,
    Empty,
    StreamEvent,
)
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

LOOPBACK = ["127.0.0.0/8", "::1/128"]
ENCODINGS = {PCMU: "mulaw", PCMA: "alaw"}
DIALOG_TYPES = {1: "inbound", 2: "outbound"}
PRODUCT_TYPES = {1: "queue", 2: "campaign", 3: "ivr"}
MAX_ATTRIBUTES = 32


class RingCxConfig(GrpcGatewayConfig):
    """``[gateways.ringcx]`` settings (see docs/gateways/ringcx.md)."""

    port: int = Field(9211, ge=0, le=65535)
    allowed_networks: list[str] | None = None
    default_codec: Literal["PCMU", "PCMA"] = "PCMU"


class RingCxGateway(GrpcGateway):
    """gRPC server of RingCX's Start Streaming action (see the module docstring)."""

    name = "ringcx"
    Config = RingCxConfig
    method = METHOD
    stream_responses = False
    response_serializer = staticmethod(Empty.SerializeToString)

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: RingCxConfig = config  # type: ignore[assignment]
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []

    def check_config(self) -> None:
        """Parse ``allowed_networks`` (required beyond loopback); check TLS."""
        cfg = self.cfg
        check_roles(cfg, self.name)
        self.check_tls()
        nets = cfg.allowed_networks
        if nets is None:
            if self.auth_required and cfg.auth != "off":
                raise ConfigError(
                    "gateways.ringcx.allowed_networks: the gateway listens beyond loopback "
                    "(or auth = \"required\") and RingCX sends no credentials: list the "
                    "networks RingCX streams from, e.g. [\"192.0.2.0/24\"]")
            nets = LOOPBACK
        self.networks = parse_networks("gateways.ringcx.allowed_networks", nets)

    async def authenticate(self, context: grpc.aio.ServicerContext, remote: str | None
                           ) -> None:
        """Refuse streams from outside ``allowed_networks`` (PERMISSION_DENIED)."""
        ip = (remote or "").rpartition(":")[0].strip("[]") or None
        if self.cfg.auth != "off" and not address_in(ip, self.networks):
            self.log.warning("stream refused: address not in allowed_networks", remote=remote)
            await self.refuse(context, grpc.StatusCode.PERMISSION_DENIED, "unauthorized",
                              "address not in allowed_networks")

    async def answer_ok(self, context: grpc.aio.ServicerContext) -> Any:
        """``Empty``: the method's only response."""
        return Empty()

    async def run(self, next_message: Callable[[], Any], handle: CallHandle,
                  remote: str | None) -> CallEnd:
        """Follow the dialog's events; feed each segment's audio to its party's channel."""
        guard = RateGuard(self.limits)
        dialog = _Dialog(self, handle, remote)
        while (raw := await next_message()) is not None:
            role, data = dialog.on_event(parse_event(raw))
            if role and data:
                feed(handle, data, role)
                guard.check(handle)
        return CallEnd("stop", "stream completed")


def parse_event(raw: bytes) -> Any:
    """A ``StreamEvent`` from its bytes (ProtocolError ``bad_message`` when it is not one)."""
    return parse_message(StreamEvent, raw)


class _Dialog:
    """The event rules of one stream: dialog_init first, media only for started segments."""

    def __init__(self, gateway: RingCxGateway, handle: CallHandle, remote: str | None):
        self.gw, self.handle, self.remote = gateway, handle, remote
        self.init: Any = None
        self.session = ""
        self.encoding: str | None = None
        self.rate = 0
        self.segments: dict[str, str] = {}  # segment id -> role ("" for a bot: not scored)

    def on_event(self, ev: Any) -> tuple[str, bytes]:
        """The role and audio of a media event; ("", b"") for other events (ProtocolError)."""
        kind = ev.WhichOneof("event")
        if kind is None:
            raise ProtocolError("bad_message", "a StreamEvent without an event")
        if kind == "dialog_init":
            if self.init is not None:
                raise ProtocolError("bad_message", "a second dialog_init")
            self.init, self.session = ev.dialog_init, ev.session_id
            return "", b""
        if self.init is None:
            code = "audio_before_start" if kind == "segment_media" else "bad_message"
            raise ProtocolError(code, f"{kind} before dialog_init")
        if kind == "segment_start":
            self._segment(ev.segment_start)
        elif kind == "segment_media":
            media = ev.segment_media
            role = self.segments.get(media.segment_id)
            if role is None:
                raise ProtocolError("bad_message", f"media of segment "
                                    f"{media.segment_id[:64]!r}, which is not started")
            return role, media.audio_content.payload  # role "" (a bot): not fed
        elif kind == "segment_stop":
            self.segments.pop(ev.segment_stop.segment_id, None)
        return "", b""

    def _segment(self, seg: Any) -> None:
        if not seg.segment_id:
            raise ProtocolError("bad_message", "segment_start without a segment_id")
        cfg = self.gw.cfg
        fmt = seg.audio_format if seg.HasField("audio_format") else None
        codec = fmt.codec if fmt is not None and fmt.codec else \
            (PCMU if cfg.default_codec == "PCMU" else PCMA)
        if codec not in ENCODINGS:
            raise ProtocolError("unsupported_format", f"codec {codec} is not PCMU or PCMA")
        rate = fmt.rate if fmt is not None and fmt.rate else 8000
        if self.encoding is None:
            self._start(seg, ENCODINGS[codec], rate)
        elif (ENCODINGS[codec], rate) != (self.encoding, self.rate):
            raise ProtocolError("unsupported_format", "a segment's audio format differs from "
                                "the call's")
        kind = seg.participant.type
        self.segments[seg.segment_id] = cfg.customer_role if kind == CONTACT else \
            AGENT_ROLE if kind == AGENT else ""

    def _start(self, seg: Any, encoding: str, rate: int) -> None:
        init, cfg = self.init, self.gw.cfg
        dialog = init.dialog
        call_id = dialog.id or self.session
        custom: dict[str, Any] = {
            "account_id": init.account.id[:64], "sub_account_id": init.account.sub_account_id[:64],
            "dialog_type": DIALOG_TYPES.get(dialog.type, "unspecified"),
            "codec": "pcmu" if encoding == "mulaw" else "pcma"}
        if dialog.HasField("language"):
            custom["language"] = dialog.language[:35]
        if seg.HasField("product"):
            custom["product"] = {"id": seg.product.id[:64],
                                 "type": PRODUCT_TYPES.get(seg.product.type, "unspecified")}
        attrs = sorted(dialog.attributes.items())[:MAX_ATTRIBUTES]
        if attrs:
            custom["attributes"] = {k[:64]: v[:256] for k, v in attrs}
        metadata: dict[str, Any] = {"provider": "ringcx", "provider_call_id": call_id,
                                    "provider_stream_id": self.session, "custom": custom}
        for key in ("ani", "dnis"):
            if dialog.HasField(key):
                metadata[key] = getattr(dialog, key)[:64]
        self.handle.start(call_start(self.gw, call_id=call_id, encoding=encoding,
                                     sample_rate=rate, channels=(cfg.customer_role, AGENT_ROLE),
                                     metadata=metadata, remote=self.remote))
        self.encoding, self.rate = encoding, rate
