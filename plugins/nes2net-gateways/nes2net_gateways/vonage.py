"""Vonage Voice API WebSocket gateway (NCCO ``connect`` to a ``websocket`` endpoint).

Vonage dials the service; the first message is JSON text with the audio format and the
NCCO ``headers`` at the top level (``{"event": "websocket:connected", "content-type":
"audio/l16;rate=16000", ...}``), then binary 16-bit signed little-endian PCM frames of 20 ms,
with JSON events (``websocket:dtmf`` ...) interleaved. The audio is a mix of every party of
the call, scored as the customer role. Vonage documents no signature: a shared token in the
URI query or in the NCCO ``headers`` authenticates the stream. See docs/gateways/vonage.md.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, SecretStr
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedOK

from nes2net_gateways._common import (
    QueryTokenGateway,
    call_metadata,
    call_start,
    parse_json_object,
    pump_audio,
    remote_of,
    ws_receive,
)
from nes2net_stream.gateways.api import CallHandle, GatewayConfig
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

CONTENT_TYPE_RE = re.compile(r"^\s*audio/l16\s*;\s*rate\s*=\s*(\d{4,6})\s*$", re.IGNORECASE)
RESERVED = {"event", "content-type"}


class VonageConfig(GatewayConfig):
    """``[gateways.vonage]`` settings.

    Attributes:
        token: shared secret expected in the URI query or the NCCO ``headers``.
        token_key: name of the query parameter / header key carrying it.
        call_id_keys: header keys tried, in order, for the call id (put the call's ``uuid``
            there in the NCCO); a random ``vonage-<uuid>`` id otherwise.
    """

    path: str = "/v1/gateways/vonage"
    token: SecretStr = SecretStr("")
    token_key: str = "token"
    call_id_keys: list[str] = Field(default_factory=lambda: ["call_id", "uuid",
                                                             "conversation_uuid"])


@dataclass(frozen=True)
class VonageConnected:
    """The first message: audio rate and the NCCO headers."""

    sample_rate: int
    headers: dict[str, Any] = field(default_factory=dict)


def parse_connected(text: str | bytes, max_bytes: int) -> VonageConnected:
    """Parse the first (``websocket:connected``) message; raises only ProtocolError."""
    msg = parse_json_object(text, max_bytes, "Vonage first message")
    event = msg.get("event", "websocket:connected")
    if event != "websocket:connected":
        raise ProtocolError("bad_message", f"the first Vonage message must be "
                            f"websocket:connected (got {str(event)[:40]!r})")
    ctype = msg.get("content-type")
    if not isinstance(ctype, str):
        raise ProtocolError("bad_message", "websocket:connected needs a 'content-type'")
    match = CONTENT_TYPE_RE.match(ctype)
    if match is None:
        raise ProtocolError("unsupported_format", f"content-type {ctype[:60]!r}: use "
                            "audio/l16;rate=8000 or audio/l16;rate=16000")
    headers = {k: v for k, v in msg.items() if k not in RESERVED}
    return VonageConnected(int(match.group(1)), headers)


def parse_event(text: str | bytes, max_bytes: int) -> str:
    """Name of a mid-stream JSON event (``websocket:dtmf`` ...); raises only ProtocolError."""
    msg = parse_json_object(text, max_bytes, "Vonage event")
    event = msg.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError("bad_message", "a Vonage event needs a string 'event'")
    return event


class VonageGateway(QueryTokenGateway):
    """Vonage Voice WebSocket (mixed audio of the call; listen only)."""

    name = "vonage"
    transport = "websocket"
    Config = VonageConfig

    def _start(self, handle: CallHandle, first: VonageConnected, remote: str | None,
               authed: bool) -> None:
        cfg: VonageConfig = self.config  # type: ignore[assignment]
        headers = dict(first.headers)
        self._take_token(headers, authed, "NCCO header")
        provider_id = next((headers[k] for k in cfg.call_id_keys
                            if isinstance(headers.get(k), str) and headers[k]), None)
        call_id = provider_id or f"vonage-{uuid.uuid4()}"
        ani, dnis = headers.pop("from", None), headers.pop("to", None)
        meta = call_metadata(self.name, provider_id, ani=ani, dnis=dnis, custom=headers)
        meta["mixed"] = True
        # one mixed channel: every party of the call, scored as the customer's
        handle.start(call_start(self, call_id=call_id, encoding="pcm_s16le",
                                sample_rate=first.sample_rate,
                                channels=(cfg.customer_role,), metadata=meta, remote=remote))

    async def _stream(self, conn: ServerConnection, handle: CallHandle, authed: bool
                      ) -> CallEnd:
        try:
            raw = await ws_receive(self, conn, started=False)
        except ConnectionClosedOK:
            return CallEnd("disconnect", "closed before websocket:connected")
        if isinstance(raw, bytes):
            raise ProtocolError("audio_before_start", "audio before websocket:connected")
        self._start(handle, parse_connected(raw, self.limits.max_text_bytes),
                    remote_of(conn), authed)

        def on_text(text: str) -> CallEnd | None:
            parse_event(text, self.limits.max_text_bytes)  # DTMF and the like: ignored
            return None

        return await pump_audio(self, conn, handle, on_text)
