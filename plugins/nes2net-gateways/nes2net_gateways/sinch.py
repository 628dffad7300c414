"""Sinch Voice API stream gateway (SVAML ``connectStream``, a ``STREAM`` leg over WebSocket).

Sinch dials the service with no HTTP headers of its own; the first message is JSON text, the
``ConnectRequest`` (``{"command": "connect", "version": 1, "callId": ..., "applicationKey":
..., "codec": "PCM", "sampleRate": 8000, "callHeaders": {...}}``), which the server must
answer with ``{"command": "answer"}`` (or ``busy`` / ``reject``, which end the stream leg).
Then binary frames of 16-bit signed little-endian mono PCM at ``sampleRate``. The stream leg
hears what a participant of its call hears: in a conference (the way to watch a call between
a caller and an agent) a mix of the other parties. Sinch hangs the stream leg up after a
minute without audio from the server, so a listen-only server sends ``heartbeat`` commands.
A shared token in the endpoint URL's query or in ``callHeaders`` authenticates the stream.
See docs/gateways/sinch.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, SecretStr
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedOK

from nes2net_gateways._common import (
    QueryTokenGateway,
    call_metadata,
    call_start,
    check_call_id,
    parse_json_object,
    pump_audio,
    remote_of,
    serve_ws_call,
    ws_receive,
)
from nes2net_stream.gateways.api import CallHandle, GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

#: sample rates a ConnectRequest may carry (the Voice Stream AsyncAPI's enum)
SAMPLE_RATES = (8000, 16000, 24000, 44100, 48000, 96000)
#: protocol version this gateway reads
VERSION = 1
#: errors answered with ``busy`` (try later or elsewhere) rather than ``reject``
BUSY_CODES = ("too_many_calls", "shutting_down")


class SinchConfig(GatewayConfig):
    """``[gateways.sinch]`` settings.

    Attributes:
        token: shared secret expected in the endpoint URL's query or in ``callHeaders``.
        token_key: name of the query parameter / call header carrying it.
        ani_key / dnis_key: call headers holding the caller's and the called number (the
            ConnectRequest carries neither; put them there in the SVAML).
        mixed: the stream hears several parties (a conference leg); False when it hears only
            the caller (an inbound call answered by ``connectStream``).
        heartbeat_s: seconds between ``heartbeat`` commands (Sinch's no-audio timeout is one
            minute); 0 sends none.
        call_id_keys: call headers tried, in order, for the call id (e.g. the id of the
            conference's customer call); the ConnectRequest's ``callId`` otherwise.
    """

    path: str = "/v1/gateways/sinch"
    token: SecretStr = SecretStr("")
    token_key: str = "token"
    ani_key: str = "cli"
    dnis_key: str = "to"
    mixed: bool = True
    heartbeat_s: float = Field(20.0, ge=0, le=55)
    call_id_keys: list[str] = Field(default_factory=lambda: ["call_id"])


@dataclass(frozen=True)
class SinchConnect:
    """The ``ConnectRequest``: who is calling and the audio format."""

    call_id: str
    application_key: str | None
    sample_rate: int
    version: int
    headers: dict[str, Any] = field(default_factory=dict)


def _headers(value: Any) -> dict[str, Any]:
    """``callHeaders`` as an object, or as the SVAML's list of ``{key, value}`` pairs."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("key"), str)
                                       for p in value):
        return {p["key"]: p.get("value") for p in value}
    raise ProtocolError("bad_message", "callHeaders must be an object or a list of "
                        "{key, value}")


def parse_connect(text: str | bytes, max_bytes: int) -> SinchConnect:
    """Parse the first message (the ``ConnectRequest``); raises only ProtocolError."""
    msg = parse_json_object(text, max_bytes, "Sinch ConnectRequest")
    if msg.get("command") != "connect":
        raise ProtocolError("bad_message", "the first Sinch message must be command "
                            f"'connect' (got {str(msg.get('command'))[:40]!r})")
    call_id = check_call_id(msg.get("callId"), "callId")
    codec = msg.get("codec", "PCM")
    if not isinstance(codec, str) or codec.upper() != "PCM":
        raise ProtocolError("unsupported_format", f"codec {str(codec)[:40]!r}: only PCM "
                            "(16-bit little-endian linear) is streamed")
    rate = msg.get("sampleRate")
    if isinstance(rate, bool) or rate not in SAMPLE_RATES:
        raise ProtocolError("unsupported_format", f"sampleRate {str(rate)[:20]!r}: use one of "
                            f"{', '.join(map(str, SAMPLE_RATES))}")
    version = msg.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError("bad_message", "version must be an integer")
    app = msg.get("applicationKey")
    if app is not None and not isinstance(app, str):
        raise ProtocolError("bad_message", "applicationKey must be a string")
    return SinchConnect(call_id, app or None, rate, version, _headers(msg.get("callHeaders")))


def parse_control(text: str | bytes, max_bytes: int) -> str | None:
    """The ``command`` of a later JSON message, None if it has none.

    Raises only ProtocolError; a second ``connect`` is refused.
    """
    msg = parse_json_object(text, max_bytes, "Sinch message")
    command = msg.get("command")
    if command == "connect":
        raise ProtocolError("bad_message", "connect sent twice")
    return command if isinstance(command, str) else None


class SinchGateway(QueryTokenGateway):
    """Sinch Voice API ``STREAM`` leg (listen only; answers, then sends heartbeats)."""

    name = "sinch"
    transport = "websocket"
    Config = SinchConfig

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """Serve one stream leg; a refused ConnectRequest is answered ``busy``/``reject``."""
        authed = self._query_authed(conn)
        answered: list[bool] = [False]

        async def refuse(err: ProtocolError) -> None:
            if not answered[0]:  # Sinch ends the leg on busy/reject; the close code says why
                reply = "busy" if err.code in BUSY_CODES else "reject"
                await conn.send(json.dumps({"command": reply}))

        await serve_ws_call(self, conn, lambda handle: self._stream(conn, handle, authed,
                                                                    answered), on_error=refuse)

    def _start(self, handle: CallHandle, first: SinchConnect, remote: str | None,
               authed: bool) -> None:
        cfg: SinchConfig = self.config  # type: ignore[assignment]
        headers = dict(first.headers)
        self._take_token(headers, authed, "call header")
        if first.version != VERSION:
            self.log.warning("unknown Sinch stream protocol version; read as version 1",
                             version=first.version, call_id=first.call_id)
        ani, dnis = headers.pop(cfg.ani_key, None), headers.pop(cfg.dnis_key, None)
        meta = call_metadata(self.name, first.call_id, ani=ani, dnis=dnis, custom=headers,
                             account_id=first.application_key)
        if cfg.mixed:
            meta["mixed"] = True
        chosen = next((headers[k] for k in cfg.call_id_keys if headers.get(k)), None)
        call_id = first.call_id if chosen is None else check_call_id(chosen, "call header "
                                                                     "call id")
        handle.start(call_start(self, call_id=call_id, encoding="pcm_s16le",
                                sample_rate=first.sample_rate, channels=(cfg.customer_role,),
                                metadata=meta, remote=remote))

    async def _heartbeats(self, conn: ServerConnection) -> None:
        every = self.config.heartbeat_s  # type: ignore[attr-defined]
        while every > 0:
            await asyncio.sleep(every)
            await conn.send(json.dumps({"command": "heartbeat"}))

    async def _stream(self, conn: ServerConnection, handle: CallHandle, authed: bool,
                      answered: list[bool]) -> CallEnd:
        try:
            raw = await ws_receive(self, conn, started=False)
        except ConnectionClosedOK:
            return CallEnd("disconnect", "closed before the ConnectRequest")
        if isinstance(raw, bytes):
            raise ProtocolError("audio_before_start", "audio before the ConnectRequest")
        self._start(handle, parse_connect(raw, self.limits.max_text_bytes), remote_of(conn),
                    authed)
        await conn.send(json.dumps({"command": "answer"}))
        answered[0] = True
        beat = asyncio.create_task(self._heartbeats(conn))

        def on_text(text: str) -> CallEnd | None:
            parse_control(text, self.limits.max_text_bytes)  # nothing else is documented
            return None

        try:
            return await pump_audio(self, conn, handle, on_text)
        finally:
            beat.cancel()
            with contextlib.suppress(BaseException):
                await beat
