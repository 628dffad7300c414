"""Loop pieces shared by the JSON-over-WebSocket media providers (Twilio, Plivo, Telnyx).

These providers send only JSON text messages: a ``start``, base64 ``media`` per track
(``inbound``/``outbound``), ``stop``, and a few events the service ignores. Twilio, Plivo
and Exotel share the whole loop (:func:`serve_tracks`); Telnyx re-orders its frames first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosedOK

from nes2net_gateways._common import AGENT_ROLE, RateGuard, SequenceTracker, feed, ws_receive
from nes2net_stream.gateways.api import CallHandle, Gateway
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection


async def json_messages(gateway: Gateway, conn: ServerConnection, handle: CallHandle,
                        provider: str) -> AsyncIterator[str]:
    """The provider's text messages, within the limits of ``[limits]``, until a clean close.

    A binary message is a ProtocolError ``bad_message``; a close with 1000/1001 ends the
    iteration (the caller decides what that means for the call).
    """
    while True:
        try:
            raw = await ws_receive(gateway, conn, started=handle.started)
        except ConnectionClosedOK:
            return
        if isinstance(raw, bytes):
            raise ProtocolError("bad_message", f"{provider} sends JSON text messages only")
        yield raw


def check_first_start(handle: CallHandle) -> None:
    """Refuse a second ``start`` on one stream."""
    if handle.started:
        raise ProtocolError("bad_message", "start sent twice")


def check_media(handle: CallHandle, stream_id: str | None, expected: str | None,
                id_name: str) -> None:
    """Refuse media before ``start`` or for another stream than the one started."""
    if not handle.started:
        raise ProtocolError("audio_before_start", "media before start")
    if stream_id and stream_id != expected:
        raise ProtocolError("bad_message", f"media of another {id_name}")


def feed_track(handle: CallHandle, config: Any, track: str, payload: bytes,
               guard: RateGuard) -> None:
    """Feed one track's audio: the customer's track to the customer role, the other to agent."""
    role = config.customer_role if track == config.customer_track else AGENT_ROLE
    feed(handle, payload, role)
    guard.check(handle)


def stream_call_id(config: Any, call_id: str, stream_id: str) -> str:
    """``<call id>:<stream id>`` with ``stream_in_call_id``, else the provider's call id."""
    return f"{call_id}:{stream_id}" if config.stream_in_call_id else call_id


def warn_untracked_customer(gateway: Gateway, tracks: tuple[str, ...], call_id: str) -> None:
    """Log when a stream's ``start`` does not list the configured customer track."""
    wanted = gateway.config.customer_track  # type: ignore[attr-defined]
    if wanted not in tracks:
        gateway.log.warning("the customer's track is not streamed", tracks=list(tracks),
                            customer_track=wanted, call_id=call_id)


def log_sequence(gateway: Gateway, handle: CallHandle, seq: SequenceTracker) -> None:
    """Log sequence-number gaps and late or duplicate messages of a call, if any."""
    if seq.gaps or seq.late:
        gateway.log.warning("sequence anomalies", call_id=handle.call_id, gaps=seq.gaps,
                            late_or_duplicate=seq.late)


def json_uint(value: Any, what: str) -> int | None:
    """A non-negative integer field (JSON number or decimal string), None when absent."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise ProtocolError("bad_message", f"{what} must be a non-negative integer")


def json_object(value: Any, what: str) -> dict[str, Any]:
    """A field that must be a JSON object."""
    if not isinstance(value, dict):
        raise ProtocolError("bad_message", f"{what} must be a JSON object")
    return value


async def serve_tracks(gateway: Gateway, conn: ServerConnection, handle: CallHandle, *,
                       provider: str, parse: Callable[[str | bytes, int], Any],
                       start_type: type, media_type: type, on_start: Callable[[Any], str],
                       id_attr: str, id_name: str, closed: CallEnd | None = None) -> CallEnd:
    """One stream of a provider whose messages are ``start``, per-track ``media``, ``stop``.

    ``parse`` turns a message into an instance of ``start_type``, ``media_type`` (with
    ``sequence``, ``track``, ``payload`` and the stream id in ``id_attr``) or an event with
    ``event`` and ``sequence``; ``on_start`` starts the call and returns the stream id that
    later media must carry (``id_name`` in errors). Late or repeated media are dropped,
    sequence anomalies logged at the end; ``stop`` ends the call as ``stop``, and so does a
    clean close unless ``closed`` says otherwise.
    """
    seq = SequenceTracker()
    guard = RateGuard(gateway.limits)
    stream_id: str | None = None
    try:
        async for raw in json_messages(gateway, conn, handle, provider):
            msg = parse(raw, gateway.limits.max_text_bytes)
            in_order = seq.see(msg.sequence)
            if isinstance(msg, start_type):
                check_first_start(handle)
                stream_id = on_start(msg)
            elif isinstance(msg, media_type):
                check_media(handle, getattr(msg, id_attr), stream_id, id_name)
                if in_order and msg.payload:
                    feed_track(handle, gateway.config, msg.track, msg.payload, guard)
            elif msg.event == "stop":
                return CallEnd("stop")
        return closed or CallEnd("stop", f"stream closed by {provider}")
    finally:
        log_sequence(gateway, handle, seq)
