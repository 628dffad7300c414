"""The gateway plugin API: how a provider's connection becomes internal call events.

A gateway plugin turns one provider protocol (Twilio Media Streams, Genesys AudioHook, ...) into
the internal event model of :mod:`nes2net_stream.service.events` and nothing else: it parses
the provider's messages, authenticates the provider, answers what the provider expects
(``opened``, ``pong`` ...) and drives a :class:`CallHandle`. Everything downstream (VAD, windows,
scoring, alerts, Redis) is shared and knows nothing about providers.

Plugins are classes registered in the ``nes2net_stream.gateways`` entry-point group::

    [project.entry-points."nes2net_stream.gateways"]
    acme = "acme_gateway:AcmeGateway"

and enabled in ``config.toml``::

    [gateways.acme]
    enabled = true
    path = "/v1/gateways/acme"
    api_key = "..."

See docs/gateways/plugin-api.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from nes2net_stream.logs import get_logger
from nes2net_stream.service.events import AudioChunk, CallEnd, CallStart, OutputEvent
from nes2net_stream.service.session import CallSession, EventSink

Transport = Literal["websocket", "tcp", "custom"]


class GatewayConfig(BaseModel):
    """Settings every gateway has; plugins subclass it with their own fields.

    Attributes:
        enabled: serve this gateway.
        path: WebSocket path (websocket gateways).
        host / port: listen address (TCP gateways; the port of websocket gateways is the
            service's).
        auth: ``auto`` (required when the service binds beyond loopback), ``required`` or
            ``off`` (only on a trusted network).
        customer_role: role name given to the provider's customer channel.
        score_agent: also score the agent/other channel when the provider sends it.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    path: str = ""
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    auth: Literal["auto", "required", "off"] = "auto"
    customer_role: str = "caller"
    score_agent: bool = False


class HandshakeRejected(Exception):
    """Refuse a connection before the WebSocket upgrade (HTTP status and short reason)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class CallHandle:
    """One call as seen by a plugin: start it, feed audio, end it.

    Wraps the shared call registry: duplicate ids, capacity and draining are enforced here
    (``start`` raises :class:`~nes2net_stream.service.errors.ProtocolError`); malformed audio
    raises :class:`~nes2net_stream.service.audio_decode.AudioFormatError` from ``audio``.
    """

    def __init__(self, ctx: Any, sink: EventSink | None = None):
        self._ctx = ctx
        self._sink = sink
        self.session: CallSession | None = None

    @property
    def started(self) -> bool:
        """True once ``start`` succeeded."""
        return self.session is not None

    @property
    def call_id(self) -> str | None:
        """The call's id once started."""
        return self.session.call_id if self.session else None

    def start(self, start: CallStart) -> CallSession:
        """Register the call (raises ProtocolError: duplicate id, capacity, draining)."""
        if self.session is not None:
            raise RuntimeError("call already started on this handle")
        self.session = self._ctx.open_call(start, sink=self._sink)
        return self.session

    def audio(self, chunk: AudioChunk) -> None:
        """Feed audio bytes (all channels interleaved, or one channel with ``chunk.channel``)."""
        if self.session is None:
            raise RuntimeError("audio before start")
        self.session.feed(chunk)

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the call's metadata for the events still to come (e.g. after a transfer).

        The events already published keep what they had; the calibration picked from the
        start's metadata stays. A no-op before ``start`` or after the end.
        """
        if self.session is not None:
            self.session.update_metadata(metadata)

    def discontinuity(self, gap_s: float) -> None:
        """Tell the pipeline that ``gap_s`` seconds of the provider's audio are missing.

        Used for paused or discarded audio; window times stay aligned with the provider's clock.
        """
        if self.session is not None:
            self.session.discontinuity(gap_s)

    def end_channel(self, role: str, detail: str | None = None) -> None:
        """End one channel before the call ends (a conference party left, its stream removed).

        Its summary (``end_reason`` "stop", ``detail`` as given) is published once its last
        windows are scored; later audio for it is ignored. A no-op before ``start``, after the
        end, for a role not scored or never heard (no summary then).
        """
        if self.session is not None:
            self.session.end_channel(role, detail)

    async def end(self, end: CallEnd) -> list[OutputEvent]:
        """End the call; summaries are published. A no-op if it never started."""
        if self.session is None:
            return []
        return await self._ctx.end_call(self.session, end)


class Gateway:
    """Base class of gateway plugins (every hook has a default; override what you need).

    Subclasses set :attr:`name`, :attr:`transport`, :attr:`Config` and implement
    :meth:`serve_websocket` (websocket gateways), :meth:`serve_tcp` (TCP gateways) or
    :meth:`start_serving`/:meth:`stop_serving` (``custom`` gateways, which open their own
    sockets: SIP and RTP over UDP, for instance), plus :meth:`check_handshake` for
    authentication before a WebSocket upgrade.
    """

    name: ClassVar[str] = ""
    transport: ClassVar[Transport] = "websocket"
    Config: ClassVar[type[GatewayConfig]] = GatewayConfig
    #: WebSocket subprotocols this gateway accepts (e.g. "audio.drachtio.org")
    subprotocols: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        self.config = config
        self.ctx = ctx
        self.auth_required = auth_required
        self.bound_port: int | None = None  # set by the service for TCP gateways
        #: listen with SO_REUSEPORT: set by the service when ingest processes share ports
        self.reuse_port = False
        #: this ingest process's index when several share the ports (set with ``reuse_port``)
        self.worker_index: int | None = None
        #: how many ingest processes share the ports (1 without ``reuse_port``)
        self.worker_count = 1
        self.log = get_logger(f"nes2net.gateway.{self.name}")

    @property
    def limits(self) -> Any:
        """The service's ``[limits]`` section."""
        return self.ctx.limits

    def new_call(self, sink: EventSink | None = None) -> CallHandle:
        """A handle for one call of this connection."""
        return CallHandle(self.ctx, sink)

    def check_config(self) -> None:
        """Validate settings that depend on each other (raise ConfigError naming the key)."""

    def check_handshake(self, request: Request, remote: str | None
                        ) -> None | Awaitable[None]:
        """Authenticate the HTTP upgrade request; raise HandshakeRejected to refuse it.

        May be a coroutine function (``async def``) when checking needs I/O, such as fetching
        the keys that verify a signed token; the service awaits it before the upgrade.
        """

    async def prepare(self) -> None:
        """Get ready for the first call once the service listens (every transport).

        Optional; must not raise (log what failed). The ``acs`` gateway fetches its key set
        here so that the first call does not wait for it.
        """

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """Serve one provider WebSocket connection (websocket gateways)."""
        raise NotImplementedError

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                        ) -> None:
        """Serve one provider TCP connection (TCP gateways)."""
        raise NotImplementedError

    async def start_serving(self) -> None:
        """Open this gateway's own listeners and set :attr:`bound_port` (custom gateways)."""
        raise NotImplementedError

    async def stop_serving(self) -> None:
        """Stop accepting new calls (custom gateways); must not raise.

        The service's drain then ends the active calls with ``shutdown`` summaries.
        """

    async def close(self) -> None:
        """Close this gateway's own sockets and clients once the drain has ended every call.

        For custom gateways, e.g. after telling each provider that its call is over. Must not
        raise.
        """
