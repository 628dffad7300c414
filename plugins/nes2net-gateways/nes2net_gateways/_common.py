"""Helpers shared by the built-in gateway plugins: token auth, parsing, the call lifecycle.

Everything here is provider-neutral. Parsing helpers raise
:class:`~nes2net_stream.service.errors.ProtocolError` (the only error type a parser may raise);
:func:`run_call` turns the outcome of one call into a :class:`CallEnd` and always ends the call,
so the summary is published whatever happens.

Typical WebSocket plugin::

    async def serve_websocket(self, conn):
        async def body(handle: CallHandle) -> CallEnd:
            msg = await ws_receive(self, conn, started=handle.started)
            ...
        await serve_ws_call(self, conn, body)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from nes2net_gateways._auth import query_params, require_secret, secret_equal
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig, HandshakeRejected
from nes2net_stream.service.audio_decode import AudioFormatError
from nes2net_stream.service.errors import CLOSE_GOING_AWAY, CLOSE_NORMAL, ProtocolError
from nes2net_stream.service.events import AudioChunk, CallEnd, CallStart, OutputEvent, Source
from nes2net_stream.service.protocol import CALL_ID_RE, ROLE_RE
from nes2net_stream.service.ratelimit import check_audio_rate
from nes2net_stream.service.ws_poll import Receiver

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request

#: role of the other party (agent, callee) when the provider sends it separately
AGENT_ROLE = "agent"
#: how often a waiting receive checks whether the service is draining (seconds)
DRAIN_POLL_S = 0.5

__all__ = [
    "AGENT_ROLE", "QueryTokenGateway", "RateGuard", "SequenceTracker", "StopCall",
    "address_in", "b64decode", "parse_networks",
    "call_metadata", "call_start", "check_call_id", "check_metadata_size", "check_roles",
    "close_ws", "discard_events", "feed", "format_remote", "parse_json_object", "pump_audio",
    "remote_of", "run_call", "score_roles", "serve_ws_call", "ws_receive",
]


class StopCall(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a call body to end the call with ``end`` (e.g. draining, provider stop)."""

    def __init__(self, end: CallEnd):
        super().__init__(end.reason)
        self.end = end


# --------------------------------------------------------------------------- events, addresses

def discard_events(event: OutputEvent) -> None:
    """An event sink that sends nothing back (providers that only stream to us)."""


def format_remote(address: Any) -> str | None:
    """``ip:port`` of a socket address tuple (``[ip]:port`` for IPv6), or None."""
    if not address or not isinstance(address, tuple | list) or len(address) < 2:
        return None
    host, port = str(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def remote_of(conn: Any) -> str | None:
    """The peer address of a WebSocket connection or a TCP ``StreamWriter``."""
    try:
        addr = conn.remote_address if hasattr(conn, "remote_address") else \
            conn.get_extra_info("peername")
    except Exception:
        return None
    return format_remote(addr)


# --------------------------------------------------------------------------- token auth

class QueryTokenGateway(Gateway):
    """A gateway authenticated by one shared token (config ``token``, ``token_key``, ``auth``).

    The provider puts the token in the WebSocket URL's query (``?<token_key>=...``) or, when
    it cannot, in its first message: a wrong token in the URL is refused at the handshake
    (HTTP 401); a missing one is left to the gateway to check in the first message.
    """

    def check_config(self) -> None:
        """Require a token when authentication is enforced."""
        check_roles(self.config, self.name)
        require_secret(self, "token", self._token)

    @property
    def _token(self) -> str:
        cfg: Any = self.config
        return "" if cfg.auth == "off" else cfg.token.get_secret_value()

    def _query_token(self, path: str) -> str | None:
        return query_params(path).get(self.config.token_key)  # type: ignore[attr-defined]

    def check_handshake(self, request: Request, remote: str | None) -> None:
        """Refuse a wrong token in the URL (HTTP 401); a missing one is checked later."""
        given = self._query_token(request.path)
        if self._token and given is not None and not secret_equal(given, self._token):
            raise HandshakeRejected(401, "invalid token")

    def _query_authed(self, conn: ServerConnection) -> bool:
        """True when no token is needed or the URL carries the right one."""
        path = conn.request.path if conn.request else ""
        return not self._token or secret_equal(self._query_token(path), self._token)

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """Serve one stream with ``_stream(conn, handle, authed)``.

        ``authed``: the URL carried the right token (or none is needed); otherwise the first
        message must (:meth:`_take_token`).
        """
        authed = self._query_authed(conn)
        await serve_ws_call(self, conn, lambda handle: self._stream(conn, handle, authed))

    async def _stream(self, conn: ServerConnection, handle: CallHandle, authed: bool
                      ) -> CallEnd:
        raise NotImplementedError

    def _take_token(self, fields: dict[str, Any], authed: bool, where: str) -> None:
        """Remove the token from the first message's ``fields`` (it is never published).

        Unless the URL already carried the right one, it must be there and right: otherwise
        ProtocolError ``unauthorized`` (close 4401) before any audio. ``where`` names the
        message's field for the error.
        """
        key = self.config.token_key  # type: ignore[attr-defined]
        given = fields.pop(key, None)
        if not authed and not (isinstance(given, str) and secret_equal(given, self._token)):
            raise ProtocolError("unauthorized", f"missing or invalid token (URL query or "
                                f"{where} {key!r})")


# --------------------------------------------------------------------------- roles

def metrics_registry(ctx: Any) -> Any:
    """The registry of the service's metrics (None: the process's default one)."""
    return getattr(getattr(ctx, "metrics", None), "registry", None)


def check_roles(config: GatewayConfig, section: str) -> None:
    """Refuse a customer role that is malformed or collides with the other party's role."""
    role = config.customer_role
    if not ROLE_RE.match(role) or role == AGENT_ROLE:
        raise ConfigError(f"gateways.{section}.customer_role: must be a lower-case name such as "
                          f"'caller', other than {AGENT_ROLE!r} (got {role!r})")


def score_roles(config: GatewayConfig, channels: tuple[str, ...]) -> frozenset[str]:
    """Roles to score: the customer's, plus the others when ``score_agent`` is set."""
    if config.score_agent:
        return frozenset(channels)
    return frozenset(r for r in channels if r == config.customer_role)


# --------------------------------------------------------------------------- parsing

def parse_json_object(text: str | bytes, max_bytes: int, what: str = "message") -> dict[str, Any]:
    """Parse a JSON object of at most ``max_bytes`` (ProtocolError otherwise)."""
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > max_bytes:
        raise ProtocolError("frame_too_large",
                            f"{what} of {size} bytes exceeds the {max_bytes}-byte limit")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge numbers
        raise ProtocolError("bad_json", f"{what} is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_message", f"{what} must be a JSON object")
    return value


def b64decode(value: Any, what: str) -> bytes:
    """Strict base64 decoding; ProtocolError ``bad_message`` naming ``what`` otherwise."""
    if not isinstance(value, str):
        raise ProtocolError("bad_message", f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_message", f"{what} is not valid base64") from None


def check_metadata_size(metadata: Mapping[str, Any], max_bytes: int) -> None:
    """Refuse call metadata whose JSON form exceeds ``[limits] max_metadata_bytes``."""
    size = len(json.dumps(metadata, separators=(",", ":"), default=str))
    if size > max_bytes:
        raise ProtocolError("frame_too_large", f"call metadata of {size} bytes exceeds the "
                            f"{max_bytes}-byte limit (limits.max_metadata_bytes)")


def parse_networks(key: str, nets: list[str]) -> list[IPNetwork]:
    """``allowed_networks`` parsed; ConfigError naming ``key`` for an empty list or a typo."""
    if not nets:
        raise ConfigError(f"{key}: empty list (nobody could connect); leave it unset for "
                          "loopback only")
    try:
        return [ipaddress.ip_network(n, strict=False) for n in nets]
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def address_in(ip: str | None, networks: list[IPNetwork]) -> bool:
    """True when ``ip`` is in one of ``networks``.

    IPv4-mapped IPv6 addresses count as their IPv4 address; zone ids are dropped.
    """
    if ip is None:
        return False
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


def check_call_id(value: Any, what: str = "call id") -> str:
    """A provider call id usable as ours (1-128 of letters, digits and . _ : @ + / = -)."""
    if not isinstance(value, str) or not CALL_ID_RE.match(value):
        raise ProtocolError("bad_message", f"{what} must be 1-128 characters of letters, digits "
                            "and . _ : @ + / = -")
    return value


def call_metadata(provider: str, call_id: str | None, *, stream_id: str | None = None,
                  ani: Any = None, dnis: Any = None, custom: Mapping[str, Any] | None = None,
                  account_id: str | None = None) -> dict[str, Any]:
    """The documented ``metadata`` shape (docs/gateways/README.md), omitting absent keys."""
    meta: dict[str, Any] = {"provider": provider}
    if call_id is not None:
        meta["provider_call_id"] = call_id
    if stream_id is not None:
        meta["provider_stream_id"] = stream_id
    if ani not in (None, ""):
        meta["ani"] = ani
    if dnis not in (None, ""):
        meta["dnis"] = dnis
    if custom:
        meta["custom"] = dict(custom)
    if account_id:
        meta["account_id"] = account_id
    return meta


def call_start(gateway: Gateway, *, call_id: str, encoding: str, sample_rate: int,
               channels: tuple[str, ...], metadata: dict[str, Any], remote: str | None,
               open_on_audio: frozenset[str] = frozenset()) -> CallStart:
    """Build a :class:`CallStart` for a gateway call (roles scored per its config).

    ``open_on_audio``: roles whose channels open at their first audio (see CallStart).

    Raises ProtocolError for a bad call id, an unusable sample rate or oversized metadata.
    """
    check_call_id(call_id)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or \
            not 4000 <= sample_rate <= 192_000:
        raise ProtocolError("unsupported_format", f"sample rate {sample_rate!r} Hz is not "
                            "supported (4000-192000 Hz)")
    check_metadata_size(metadata, gateway.limits.max_metadata_bytes)
    return CallStart(call_id=call_id, encoding=encoding,  # type: ignore[arg-type]
                     sample_rate=sample_rate, channels=channels,
                     score_channels=score_roles(gateway.config, channels),
                     source=Source("gateway", gateway.name, remote), metadata=metadata,
                     open_on_audio=open_on_audio)


class SequenceTracker:
    """Detects gaps and out-of-order/duplicate sequence numbers (counts them, never raises).

    Attributes:
        gaps: messages missing between consecutive numbers seen.
        late: messages whose number is not above the highest seen (out of order/duplicates).
    """

    def __init__(self) -> None:
        self.last: int | None = None
        self.gaps = 0
        self.late = 0

    def see(self, number: int | None) -> bool:
        """Record ``number``; False when it is late or a duplicate (the caller may drop it)."""
        if number is None:
            return True
        if self.last is not None:
            if number <= self.last:
                self.late += 1
                return False
            self.gaps += number - self.last - 1
        self.last = number
        return True


# --------------------------------------------------------------------------- call lifecycle

def feed(handle: CallHandle, data: bytes, channel: str | None = None) -> None:
    """Feed audio to a started call; malformed bytes become ProtocolError ``bad_audio_frame``."""
    if not handle.started:
        raise ProtocolError("audio_before_start", "audio arrived before the call started")
    try:
        handle.audio(AudioChunk(data, channel))
    except AudioFormatError as exc:
        raise ProtocolError("bad_audio_frame", str(exc)) from None


class RateGuard:
    """Enforces ``max_call_s`` and ``max_realtime_factor`` of ``[limits]`` on one call."""

    def __init__(self, limits: Any):
        self.limits = limits
        self.t0 = time.monotonic()

    def check(self, handle: CallHandle) -> None:
        """Raise ProtocolError ``call_too_long`` / ``rate_limited`` when a limit is passed."""
        if handle.session is None:
            return
        check_audio_rate(handle.session.audio_seconds, time.monotonic() - self.t0, self.limits)


async def ws_receive(gateway: Gateway, conn: ServerConnection, *, started: bool) -> str | bytes:
    """Next WebSocket message within the start/idle timeout and size limits of ``[limits]``.

    Raises StopCall(shutdown) while the service drains, ProtocolError on timeouts and
    oversized messages, ``ConnectionClosed`` when the peer goes away.
    """
    lim = gateway.limits
    timeout = lim.idle_timeout_s if started else lim.start_timeout_s
    deadline = time.monotonic() + timeout
    while True:  # wake up regularly so that a drain ends idle calls promptly
        if gateway.ctx.draining:
            raise StopCall(CallEnd("shutdown"))
        left = deadline - time.monotonic()
        if left <= 0:
            code = "idle_timeout" if started else "start_timeout"
            what = "no message" if started else "no start message"
            raise ProtocolError(code, f"{what} within {timeout:g} s")
        try:  # one timer per connection rather than one per message
            msg = await Receiver.of(conn).recv(min(left, DRAIN_POLL_S))
            break
        except TimeoutError:  # cancelling recv() loses nothing (websockets guarantees it)
            continue
    if isinstance(msg, bytes):
        if len(msg) > lim.max_frame_bytes:
            raise ProtocolError("frame_too_large", f"binary message of {len(msg)} bytes exceeds "
                                f"the {lim.max_frame_bytes}-byte limit")
    elif len(msg) > lim.max_text_bytes:
        raise ProtocolError("frame_too_large", f"text message of {len(msg)} characters exceeds "
                            f"the {lim.max_text_bytes}-byte limit")
    return msg


async def pump_audio(gateway: Gateway, conn: ServerConnection, handle: CallHandle,
                     on_text: Callable[[str], CallEnd | None]) -> CallEnd:
    """Feed binary WebSocket messages as interleaved audio until the stream ends.

    Text messages go to ``on_text`` (return a CallEnd to stop). A close by the peer with code
    1000/1001 ends the call as ``stop``; limits are enforced by :func:`ws_receive` and
    :class:`RateGuard`.
    """
    guard = RateGuard(gateway.limits)
    while True:
        try:
            msg = await ws_receive(gateway, conn, started=True)
        except ConnectionClosedOK:
            return CallEnd("stop", "closed by the provider")
        if isinstance(msg, bytes):
            feed(handle, msg)
            guard.check(handle)
            continue
        end = on_text(msg)
        if end is not None:
            return end


async def run_call(gateway: Gateway, handle: CallHandle,
                   body: Callable[[], Awaitable[CallEnd]], *, remote: str | None = None,
                   on_error: Callable[[ProtocolError], Awaitable[None]] | None = None
                   ) -> CallEnd:
    """Run ``body`` and end the call in ``finally`` (summary published whatever the outcome).

    ProtocolError is logged (code and message, never credentials), counted, passed to
    ``on_error`` (to send the provider's error reply) and ends the call as ``error``; a
    dropped connection ends it as ``disconnect``; cancellation as ``shutdown`` (re-raised);
    any other exception as ``error``/``internal_error`` with its traceback logged.
    """
    end = CallEnd("disconnect")
    try:
        end = await body()
    except StopCall as stop:
        end = stop.end
    except ProtocolError as err:
        end = CallEnd("error", err.code)
        gateway.ctx.metrics.protocol_errors.labels(code=err.code).inc()
        gateway.log.warning("protocol error", code=err.code, detail=err.message,
                            call_id=handle.call_id, remote=remote)
        if on_error is not None:
            with contextlib.suppress(Exception):
                await on_error(err)
    except (ConnectionClosed, ConnectionError, asyncio.IncompleteReadError):
        end = CallEnd("disconnect")
    except asyncio.CancelledError:
        end = CallEnd("shutdown")
        raise
    except Exception as exc:
        end = CallEnd("error", "internal_error")
        gateway.log.exception("gateway failure", error=repr(exc), call_id=handle.call_id,
                              remote=remote)
        if on_error is not None:
            with contextlib.suppress(Exception):
                await on_error(ProtocolError("internal_error", "internal error"))
    finally:
        await handle.end(end)
    return end


async def close_ws(conn: ServerConnection, code: int, reason: str) -> None:
    """Close a WebSocket, ignoring a peer that is already gone.

    Messages still arriving are read and dropped meanwhile: a provider that keeps streaming
    would otherwise fill the receive queue, pause reading, and hide its close frame until
    the close timeout.
    """
    async def drain() -> None:
        with contextlib.suppress(Exception):
            while True:
                await conn.recv()

    drainer = asyncio.create_task(drain())
    try:
        with contextlib.suppress(Exception):
            await conn.close(code, reason[:120])
    finally:
        drainer.cancel()


async def serve_ws_call(gateway: Gateway, conn: ServerConnection,
                        body: Callable[[CallHandle], Awaitable[CallEnd]], *,
                        on_error: Callable[[ProtocolError], Awaitable[None]] | None = None
                        ) -> CallEnd:
    """One call on one WebSocket: run ``body`` via :func:`run_call`, then close the socket.

    The close code is 1000 after a normal end, 1001 on shutdown, and the ProtocolError's close
    code (4400, 4408, 4413, ...; reason = the error code) after an error.
    """
    handle = gateway.new_call(discard_events)
    close: list[Any] = [CLOSE_NORMAL, "call ended"]

    async def on_err(err: ProtocolError) -> None:
        close[:] = [err.close_code, err.code]
        if on_error is not None:
            await on_error(err)

    end = CallEnd("shutdown")
    try:
        end = await run_call(gateway, handle, lambda: body(handle), remote=remote_of(conn),
                             on_error=on_err)
    finally:
        if end.reason == "shutdown":
            close[:] = [CLOSE_GOING_AWAY, "shutting down"]
        await close_ws(conn, close[0], close[1])
    return end
