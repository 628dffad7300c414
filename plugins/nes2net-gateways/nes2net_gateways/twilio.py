"""Twilio Media Streams gateway (``<Start><Stream>`` / ``<Connect><Stream>``), listen only.

Twilio dials the service over WebSocket and sends JSON text messages: ``connected``, ``start``,
``media`` (base64 μ-law 8 kHz, one message per track), ``dtmf``, ``mark``, ``stop``. Each
track is a channel: the customer's track (``inbound`` by default) gets ``customer_role``, the
other one ``agent``. The upgrade is authenticated with ``X-Twilio-Signature`` (base64
HMAC-SHA1 of the ``wss://`` URL with the account's auth token). See docs/gateways/twilio.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request

from nes2net_gateways._auth import require_secret
from nes2net_gateways._common import (
    AGENT_ROLE,
    b64decode,
    call_metadata,
    call_start,
    check_roles,
    parse_json_object,
    remote_of,
    serve_ws_call,
)
from nes2net_gateways._json_media import (
    json_object,
    json_uint,
    serve_tracks,
    stream_call_id,
    warn_untracked_customer,
)
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig, HandshakeRejected
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd

TRACKS = ("inbound", "outbound")
SIGNATURE_HEADER = "X-Twilio-Signature"
#: present when a Webhooks Rule signs with a shared key: ``key=<id>,algorithm=HMAC_SHA256``
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}
#: (mediaFormat.encoding lower-cased, sampleRate) -> internal encoding; Twilio sends only μ-law
FORMATS: dict[tuple[str, int], str] = {("audio/x-mulaw", 8000): "mulaw"}


class TwilioConfig(GatewayConfig):
    """``[gateways.twilio]`` settings.

    Attributes:
        auth_token: the account's auth token (validates ``X-Twilio-Signature``).
        secondary_auth_token: a second accepted token while rotating the primary one.
        shared_key_secret: the secret of a Webhooks shared key, for upgrades that a Webhooks
            Rule signs with it (they carry ``X-Twilio-Webhooks-Signature-Settings``).
        secondary_shared_key_secret: a second accepted shared-key secret while rotating.
        public_url: the ``wss://`` URL exactly as written in the TwiML ``<Stream url>``; when
            empty it is ``wss://<Host header><request path>``.
        customer_track: the track carrying the customer (``inbound`` for inbound calls).
        stream_in_call_id: call id ``<CallSid>:<StreamSid>`` (True) or just the CallSid.
    """

    path: str = "/v1/gateways/twilio"
    auth_token: SecretStr = SecretStr("")
    secondary_auth_token: SecretStr = SecretStr("")
    shared_key_secret: SecretStr = SecretStr("")
    secondary_shared_key_secret: SecretStr = SecretStr("")
    public_url: str = ""
    customer_track: Literal["inbound", "outbound"] = "inbound"
    stream_in_call_id: bool = True


# --------------------------------------------------------------------------- messages (pure)

@dataclass(frozen=True)
class TwilioStart:
    """A ``start`` message."""

    sequence: int | None
    call_sid: str
    stream_sid: str
    account_sid: str | None
    tracks: tuple[str, ...]
    custom: dict[str, Any] = field(default_factory=dict)
    encoding: str = "mulaw"  # "mulaw" or "l16" (byte order set by the gateway)
    sample_rate: int = 8000


@dataclass(frozen=True)
class TwilioMedia:
    """A ``media`` message (decoded μ-law bytes of one track)."""

    sequence: int | None
    stream_sid: str | None
    track: str
    payload: bytes


@dataclass(frozen=True)
class TwilioEvent:
    """Any other message (``connected``, ``dtmf``, ``mark``, ``stop``, unknown events)."""

    event: str
    sequence: int | None
    stream_sid: str | None


TwilioMessage = TwilioStart | TwilioMedia | TwilioEvent


def _str(obj: dict[str, Any], key: str, what: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_message", f"{what}: '{key}' must be a non-empty string")
    return value



def _media_format(start: dict[str, Any], formats: dict[tuple[str, int], str]
                  ) -> tuple[str, int]:
    fmt = start.get("mediaFormat")
    if fmt is None:
        return "mulaw", 8000
    fmt = json_object(fmt, "start.mediaFormat")
    enc, rate, ch = fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels", 1)
    rate = json_uint(rate, "start.mediaFormat.sampleRate") if rate is not None else None
    kind = formats.get((enc.lower() if isinstance(enc, str) else "", rate or 0))
    if kind is None or ch not in (1, "1"):
        allowed = ", ".join(f"{e} {r} Hz" for e, r in formats)
        raise ProtocolError("unsupported_format", f"mediaFormat {enc!r}/{rate!r} Hz/{ch!r} "
                            f"channel(s): expected mono {allowed}")
    return kind, rate or 8000


def _parse_start(msg: dict[str, Any], seq: int | None,
                 formats: dict[tuple[str, int], str]) -> TwilioStart:
    start = json_object(msg.get("start"), "start.start")
    call_sid = _str(start, "callSid", "start")
    stream_sid = _str(start, "streamSid", "start", required=False) or \
        _str(msg, "streamSid", "start")
    tracks_raw = start.get("tracks", list(TRACKS))
    if not isinstance(tracks_raw, list) or not all(t in TRACKS for t in tracks_raw):
        raise ProtocolError("bad_message", "start: 'tracks' must list 'inbound'/'outbound'")
    custom = start.get("customParameters") or {}
    custom = json_object(custom, "start.customParameters")
    encoding, rate = _media_format(start, formats)
    account = start.get("accountSid")
    return TwilioStart(seq, call_sid or "", stream_sid or "",
                       account if isinstance(account, str) else None, tuple(tracks_raw), custom,
                       encoding, rate)


def parse_object(msg: dict[str, Any], formats: dict[tuple[str, int], str] = FORMATS
                 ) -> TwilioMessage:
    """One decoded Media Streams message (Twilio's layout; ``formats`` accepted on start)."""
    event = msg.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError("bad_message", "a Media Streams message needs a string 'event'")
    seq = json_uint(msg.get("sequenceNumber"), "sequenceNumber")
    stream_sid = msg.get("streamSid")
    if stream_sid is not None and not isinstance(stream_sid, str):
        raise ProtocolError("bad_message", "'streamSid' must be a string")
    if event == "start":
        return _parse_start(msg, seq, formats)
    if event == "media":
        media = json_object(msg.get("media"), "media.media")
        track = media.get("track", "inbound")
        if track not in TRACKS:
            raise ProtocolError("bad_message", f"media: unknown track {track!r}")
        json_uint(media.get("chunk"), "media.chunk")
        payload = b64decode(media.get("payload"), "media.payload")
        return TwilioMedia(seq, stream_sid, track, payload)
    return TwilioEvent(event, seq, stream_sid)


def parse_message(text: str | bytes, max_bytes: int) -> TwilioMessage:
    """Parse one Twilio Media Streams message; raises only ProtocolError."""
    return parse_object(parse_json_object(text, max_bytes, "Twilio message"))


# --------------------------------------------------------------------------- signatures (pure)

def compute_signature(token: str, url: str, algorithm: str = "HMAC_SHA1") -> str:
    """``X-Twilio-Signature`` of a WebSocket upgrade: base64(HMAC(token, url)).

    SHA-1 unless a Webhooks shared key's settings name ``HMAC_SHA256``.
    """
    digest = hmac.new(token.encode(), url.encode(), ALGORITHMS[algorithm]).digest()
    return base64.b64encode(digest).decode()


def parse_signature_settings(value: str) -> tuple[str | None, str]:
    """``(key, algorithm)`` of an ``X-Twilio-Webhooks-Signature-Settings`` value.

    The value is ``key=<id>,algorithm=<HMAC_SHA1|HMAC_SHA256>``; a missing algorithm is
    HMAC_SHA1. The algorithm is returned upper-cased and may be one Twilio adds later.
    """
    fields: dict[str, str] = {}
    for item in value.split(","):
        name, sep, val = item.partition("=")
        if sep:
            fields[name.strip().lower()] = val.strip()
    return fields.get("key") or None, (fields.get("algorithm") or "HMAC_SHA1").upper()


def signature_urls(url: str) -> list[str]:
    """The URL as given, without its port, and with the scheme's default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme in ("wss", "https") else 80
    without = urlunsplit(parts._replace(netloc=host))
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{parts.port or default}"))
    out = [url]
    for candidate in (without, with_port):
        if candidate not in out:
            out.append(candidate)
    return out


def signature_valid(tokens: list[str], url: str, signature: str,
                    algorithm: str = "HMAC_SHA1") -> bool:
    """Constant-time check of ``signature`` against every token and URL variant."""
    ok = False
    for token in tokens:
        for candidate in signature_urls(url):
            ok |= hmac.compare_digest(compute_signature(token, candidate, algorithm).encode(),
                                      signature.encode())
    return ok


# --------------------------------------------------------------------------- the gateway

class TwilioGateway(Gateway):
    """Twilio Media Streams (listen only; marks and DTMF are ignored)."""

    name = "twilio"
    provider = "Twilio"
    transport = "websocket"
    Config = TwilioConfig

    def check_config(self) -> None:
        """Require an auth token (or a shared-key secret) when authentication is enforced."""
        cfg: TwilioConfig = self.config  # type: ignore[assignment]
        check_roles(cfg, self.name)
        if cfg.public_url and urlsplit(cfg.public_url).scheme != "wss":
            raise ConfigError("gateways.twilio.public_url: must be the wss:// URL given to "
                              f"<Stream url> (got {cfg.public_url!r})")
        if not cfg.shared_key_secret.get_secret_value():
            require_secret(self, "auth_token", cfg.auth_token.get_secret_value())
        if not self._tokens and not self._shared_keys:
            self.log.warning("Twilio signature validation is off (no auth_token or auth=off)")

    def _secrets(self, *names: str) -> list[str]:
        if self.config.auth == "off":
            return []
        values = (getattr(self.config, n).get_secret_value() for n in names)
        return [v for v in values if v]

    @property
    def _tokens(self) -> list[str]:
        return self._secrets("auth_token", "secondary_auth_token")

    @property
    def _shared_keys(self) -> list[str]:
        return self._secrets("shared_key_secret", "secondary_shared_key_secret")

    def _url(self, request: Request) -> str:
        cfg: TwilioConfig = self.config  # type: ignore[assignment]
        if cfg.public_url:
            return cfg.public_url
        host = request.headers.get("Host")
        if not host:
            raise HandshakeRejected(403, "no Host header to validate the Twilio signature")
        return f"wss://{host}{request.path}"

    def check_handshake(self, request: Request, remote: str | None) -> None:
        """Refuse upgrades without a valid ``X-Twilio-Signature`` (HTTP 403).

        Signed with the auth token (HMAC-SHA1), or, when the upgrade carries
        ``X-Twilio-Webhooks-Signature-Settings``, with a Webhooks shared key and the algorithm
        that header names.
        """
        tokens, keys = self._tokens, self._shared_keys
        if not tokens and not keys:
            return
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            raise HandshakeRejected(403, f"missing {SIGNATURE_HEADER} header")
        settings = request.headers.get(SETTINGS_HEADER)
        if settings is None:
            secrets, algorithm, what = tokens, "HMAC_SHA1", "auth token"
        else:
            key, algorithm = parse_signature_settings(settings)
            if algorithm not in ALGORITHMS:
                raise HandshakeRejected(403, f"{SETTINGS_HEADER}: unsupported algorithm "
                                        f"{algorithm[:40]!r}")
            secrets, what = keys, f"shared key {(key or '?')[:64]}"
        if not secrets:
            raise HandshakeRejected(403, f"{SIGNATURE_HEADER} signed with the {what}, which "
                                    "is not configured (auth_token / shared_key_secret)")
        if not signature_valid(secrets, self._url(request), signature, algorithm):
            raise HandshakeRejected(403, f"invalid {SIGNATURE_HEADER} (wrong {what} or URL)")

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """Serve one Twilio stream."""
        await serve_ws_call(self, conn, lambda handle: self._stream(conn, handle))

    def _roles(self) -> tuple[str, ...]:
        return (self.config.customer_role, AGENT_ROLE)

    def _parse(self, text: str | bytes, max_bytes: int) -> TwilioMessage:
        return parse_message(text, max_bytes)

    def _encoding(self, msg: TwilioStart) -> str:
        """The internal encoding of a started stream (Twilio: always μ-law)."""
        return msg.encoding

    def _start(self, handle: CallHandle, msg: TwilioStart, remote: str | None) -> None:
        cfg: TwilioConfig = self.config  # type: ignore[assignment]
        call_id = stream_call_id(cfg, msg.call_sid, msg.stream_sid)
        meta = call_metadata(self.name, msg.call_sid, stream_id=msg.stream_sid,
                             custom=msg.custom, account_id=msg.account_sid)
        warn_untracked_customer(self, msg.tracks, call_id)
        handle.start(call_start(self, call_id=call_id, encoding=self._encoding(msg),
                                sample_rate=msg.sample_rate, channels=self._roles(),
                                metadata=meta, remote=remote))

    async def _stream(self, conn: ServerConnection, handle: CallHandle) -> CallEnd:
        remote = remote_of(conn)

        def start(msg: TwilioStart) -> str:
            self._start(handle, msg, remote)
            return msg.stream_sid

        return await serve_tracks(self, conn, handle, provider=self.provider,
                                  parse=self._parse, start_type=TwilioStart,
                                  media_type=TwilioMedia, on_start=start, id_attr="stream_sid",
                                  id_name="streamSid",
                                  closed=CallEnd("disconnect", "closed without a stop message"))
