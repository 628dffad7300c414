"""SignalWire cXML ``<Stream>`` gateway (``<Start><Stream>`` / ``<Connect><Stream>``), listen only.

SignalWire's Compatibility API streams in Twilio's Media Streams layout (``connected``,
``start``, per-track ``media``, ``dtmf``, ``mark``, ``stop``), with three differences handled
here: the ``codec`` attribute selects μ-law 8 kHz (default) or L16 at 16 or 24 kHz; the
upgrade is authenticated with ``Authorization: Bearer <authBearerToken>`` (SignalWire
documents no signature on stream upgrades); and one revision of SignalWire's reference shows
each message wrapped as ``{"eventType": ..., "rawEvent": {...}}``, which is unwrapped. See
docs/gateways/signalwire.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SecretStr
from websockets.http11 import Request

from nes2net_gateways._auth import bearer_token, require_secret, secret_equal
from nes2net_gateways._common import check_roles, parse_json_object
from nes2net_gateways.twilio import (
    TwilioGateway,
    TwilioMessage,
    TwilioStart,
    parse_object,
)
from nes2net_stream.gateways.api import GatewayConfig, HandshakeRejected

#: mediaFormat (encoding lower-cased, sampleRate) -> internal encoding, per ``codec``
FORMATS: dict[tuple[str, int], str] = {
    ("audio/x-mulaw", 8000): "mulaw",
    ("audio/x-l16", 16000): "l16",
    ("audio/x-l16", 24000): "l16",
}


class SignalWireConfig(GatewayConfig):
    """``[gateways.signalwire]`` settings.

    Attributes:
        bearer_token: the ``authBearerToken`` of the ``<Stream>`` (sent as a Bearer token).
        secondary_bearer_token: a second accepted token while rotating the first.
        customer_track: the track carrying the customer (``inbound`` for inbound calls).
        stream_in_call_id: call id ``<CallSid>:<StreamSid>`` (True) or just the CallSid.
        l16_byte_order: byte order of ``audio/x-L16`` payloads (SignalWire does not say).
    """

    path: str = "/v1/gateways/signalwire"
    bearer_token: SecretStr = SecretStr("")
    secondary_bearer_token: SecretStr = SecretStr("")
    customer_track: Literal["inbound", "outbound"] = "inbound"
    stream_in_call_id: bool = True
    l16_byte_order: Literal["le", "be"] = "le"


def unwrap(msg: dict[str, Any]) -> dict[str, Any]:
    """The message itself: the ``rawEvent`` of an ``eventType``/``rawEvent`` envelope."""
    raw = msg.get("rawEvent")
    if "event" not in msg and isinstance(raw, dict):
        return raw
    return msg


def parse_message(text: str | bytes, max_bytes: int) -> TwilioMessage:
    """Parse one SignalWire stream message; raises only ProtocolError."""
    return parse_object(unwrap(parse_json_object(text, max_bytes, "SignalWire message")),
                        FORMATS)


class SignalWireGateway(TwilioGateway):
    """SignalWire cXML streams (listen only; marks and DTMF are ignored)."""

    name = "signalwire"
    provider = "SignalWire"
    Config = SignalWireConfig  # type: ignore[assignment]

    def check_config(self) -> None:
        """Require a bearer token when authentication is enforced."""
        cfg: SignalWireConfig = self.config  # type: ignore[assignment]
        check_roles(cfg, self.name)
        require_secret(self, "bearer_token", cfg.bearer_token.get_secret_value())
        if not self._tokens:
            self.log.warning("SignalWire stream authentication is off (no bearer_token or "
                             "auth=off)")

    @property
    def _tokens(self) -> list[str]:
        return self._secrets("bearer_token", "secondary_bearer_token")

    @property
    def _shared_keys(self) -> list[str]:
        return []

    def check_handshake(self, request: Request, remote: str | None) -> None:
        """Refuse upgrades without a configured Bearer token (HTTP 401)."""
        tokens = self._tokens
        if not tokens:
            return
        given = bearer_token(request.headers)
        if given is None:
            raise HandshakeRejected(401, "missing Authorization: Bearer token")
        ok = False
        for token in tokens:
            ok |= secret_equal(given, token)
        if not ok:
            raise HandshakeRejected(401, "invalid bearer token")

    def _parse(self, text: str | bytes, max_bytes: int) -> TwilioMessage:
        return parse_message(text, max_bytes)

    def _encoding(self, msg: TwilioStart) -> str:
        if msg.encoding != "l16":
            return msg.encoding
        order = self.config.l16_byte_order  # type: ignore[attr-defined]
        return "pcm_s16le" if order == "le" else "pcm_s16be"
