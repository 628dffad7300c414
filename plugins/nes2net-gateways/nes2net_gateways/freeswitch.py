"""FreeSWITCH ``mod_audio_fork`` and ``mod_audio_stream`` gateway (one plugin for both).

FreeSWITCH dials the service (subprotocol ``audio.drachtio.org`` for mod_audio_fork); the
first text frame is the metadata given to ``uuid_audio_fork``/``uuid_audio_stream ... start``
(JSON or plain text), then binary 16-bit little-endian PCM frames: ``mono`` (the caller),
``mixed`` (both parties in one channel) or ``stereo`` (caller and callee interleaved). The mix
type and the rate are not in the stream: they come from this gateway's settings, overridden by
the metadata keys ``mixType`` and ``sampleRate``. A later text frame (``send_text``) of the form
``{"type": "update", "metadata": {...}}`` updates the call's ``metadata.custom`` for the events
still to come; other text frames (the optional last frame of ``stop``) are ignored. HTTP Basic
auth (mod_audio_fork's ``MOD_AUDIO_BASIC_AUTH_*`` channel variables) or a token in the URL query
authenticate the upgrade. See docs/gateways/freeswitch.md.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedOK
from websockets.http11 import Request

from nes2net_gateways._auth import (
    basic_auth_ok,
    bearer_token,
    check_basic_pair,
    query_params,
    secret_equal,
)
from nes2net_gateways._common import (
    AGENT_ROLE,
    call_metadata,
    call_start,
    check_roles,
    feed,
    parse_json_object,
    pump_audio,
    remote_of,
    serve_ws_call,
    ws_receive,
)
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import CallHandle, Gateway, GatewayConfig, HandshakeRejected
from nes2net_stream.service.errors import ProtocolError
from nes2net_stream.service.events import CallEnd
from nes2net_stream.service.protocol import CALL_ID_RE, apply_update

MixType = Literal["mono", "mixed", "stereo"]
MIX_TYPES = ("mono", "mixed", "stereo")


class FreeSwitchConfig(GatewayConfig):
    """``[gateways.freeswitch]`` settings.

    Attributes:
        username / password: HTTP Basic credentials (``MOD_AUDIO_BASIC_AUTH_USERNAME`` and
            ``_PASSWORD``).
        token / token_query_param: alternatively a token in the URL query
            (``wss://host/path?token=...``), e.g. for mod_audio_stream.
        subprotocol: WebSocket subprotocol accepted (``MOD_AUDIO_FORK_SUBPROTOCOL_NAME``).
        mix_type: ``mono``, ``mixed`` or ``stereo`` unless the metadata says otherwise.
        sample_rate: Hz unless the metadata says otherwise (``8k`` -> 8000, ``16k`` -> 16000).
        stereo_customer_channel: which stereo channel carries the customer.
    """

    path: str = "/v1/gateways/freeswitch"
    username: str = ""
    password: SecretStr = SecretStr("")
    token: SecretStr = SecretStr("")
    token_query_param: str = "token"
    subprotocol: str = "audio.drachtio.org"
    mix_type: MixType = "mono"
    sample_rate: int = Field(8000, ge=8000, le=64000)
    stereo_customer_channel: Literal["left", "right"] = "left"


# --------------------------------------------------------------------------- metadata (pure)

@dataclass(frozen=True)
class StreamInfo:
    """What the metadata frame says about the stream."""

    call_id: str | None
    mix_type: str
    sample_rate: int
    ani: Any = None
    dnis: Any = None
    custom: dict[str, Any] = field(default_factory=dict)


def parse_rate(value: Any) -> int:
    """A sample rate given as 16000, "16000" or "16k"."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text.endswith("k") and text[:-1].isascii() and text[:-1].isdigit() and \
                len(text) <= 4:
            return int(text[:-1]) * 1000
        if text.isascii() and text.isdigit() and len(text) <= 6:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ProtocolError("unsupported_format", f"sample rate {str(value)[:20]!r}: use e.g. "
                        "8000, 16000, \"8k\" or \"16k\"")


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((obj[k] for k in keys if obj.get(k) not in (None, "")), None)


def parse_metadata(text: str, max_bytes: int, *, mix_type: str, sample_rate: int,
                   call_id_keys: tuple[str, ...], json_only: bool = False) -> StreamInfo:
    """Interpret the first text frame; raises only ProtocolError.

    JSON objects: the call id is the first of ``call_id_keys`` present; ``mixType`` /
    ``mix_type`` and ``sampleRate`` / ``sample_rate`` override the defaults; ``from`` /
    ``to`` are ANI/DNIS; every other key goes to ``custom``. Plain text (unless
    ``json_only``): a single word that is a valid call id becomes the call id, any other
    text is kept as ``custom["text"]``.
    """
    stripped = text.strip()
    if not stripped.startswith("{"):
        if json_only:
            raise ProtocolError("bad_message", "the first frame must be a JSON object")
        if len(text.encode()) > max_bytes:
            raise ProtocolError("frame_too_large", f"metadata exceeds {max_bytes} bytes")
        if CALL_ID_RE.match(stripped):
            return StreamInfo(stripped, mix_type, sample_rate)
        return StreamInfo(None, mix_type, sample_rate, custom={"text": text} if text else {})
    obj = parse_json_object(text, max_bytes, "metadata frame")
    mix = _first(obj, ("mixType", "mix_type"))
    mix = mix_type if mix is None else mix
    if mix not in MIX_TYPES:
        raise ProtocolError("unsupported_format", f"mixType {str(mix)[:20]!r}: use mono, "
                            "mixed or stereo")
    rate_value = _first(obj, ("sampleRate", "sample_rate"))
    rate = sample_rate if rate_value is None else parse_rate(rate_value)
    call_id = _first(obj, call_id_keys)
    if call_id is not None and not isinstance(call_id, str):
        raise ProtocolError("bad_message", f"{call_id_keys[0]} must be a string")
    used = {"mixType", "mix_type", "sampleRate", "sample_rate", "from", "to"}
    custom = {k: v for k, v in obj.items() if k not in used}
    return StreamInfo(call_id, mix, rate, obj.get("from"), obj.get("to"), custom)


def custom_update(handle: CallHandle, text: str, max_text_bytes: int,
                  max_metadata_bytes: int) -> bool:
    """A text frame ``{"type": "update", "metadata": {...}}`` mid-call: merge into ``custom``.

    The generic protocol's ``update`` for gateways whose platform can send text during a call
    (FreeSWITCH ``uuid_audio_fork ... send_text``): top-level keys replace those of the call's
    ``metadata.custom``, ``null`` removes one. Returns False (nothing done) for any other text;
    raises ProtocolError for a malformed update.
    """
    if '"update"' not in text or handle.session is None:
        return False
    try:
        msg = parse_json_object(text, max_text_bytes, "text frame")
    except ProtocolError:
        return False  # not JSON: other text is ignored, as before
    if msg.get("type") != "update":
        return False
    meta = dict(handle.session.metadata)
    custom = apply_update(msg, meta.get("custom") or {},
                          max_metadata_bytes=max_metadata_bytes)
    if custom:
        meta["custom"] = custom
    else:
        meta.pop("custom", None)
    if len(json.dumps(meta)) > max_metadata_bytes:
        raise ProtocolError("frame_too_large", f"update: metadata exceeds {max_metadata_bytes} "
                            "bytes")
    handle.update_metadata(meta)
    return True


# --------------------------------------------------------------------------- the gateway

class FreeSwitchGateway(Gateway):
    """FreeSWITCH mod_audio_fork / mod_audio_stream (listen only)."""

    name = "freeswitch"
    transport = "websocket"
    Config = FreeSwitchConfig
    subprotocols = ("audio.drachtio.org",)
    #: metadata keys tried, in order, for the call id (the FreeSWITCH channel UUID)
    call_id_keys: ClassVar[tuple[str, ...]] = ("callId", "call_id", "uuid", "callSid",
                                               "channel_uuid")
    #: the first text frame must be JSON (jambonz) rather than JSON or plain text
    json_only: ClassVar[bool] = False

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.subprotocols = (config.subprotocol,)  # type: ignore[attr-defined,misc]

    def check_config(self) -> None:
        """Require Basic credentials or a token when authentication is enforced."""
        cfg: FreeSwitchConfig = self.config  # type: ignore[assignment]
        check_roles(cfg, self.name)
        check_basic_pair(self, cfg.username, cfg.password.get_secret_value())
        if self.auth_required and not (cfg.username or cfg.token.get_secret_value()):
            raise ConfigError(
                f"gateways.{self.name}.username/password (or token): authentication is "
                "required (the service listens beyond loopback or auth = \"required\") but no "
                "credentials are configured; set them, or auth = \"off\" on a trusted network")

    def check_handshake(self, request: Request, remote: str | None) -> None:
        """Refuse upgrades without valid Basic credentials or token (HTTP 401)."""
        cfg: FreeSwitchConfig = self.config  # type: ignore[assignment]
        token = cfg.token.get_secret_value()
        if cfg.auth == "off" or not (cfg.username or token):
            return
        if cfg.username and basic_auth_ok(request.headers, cfg.username,
                                          cfg.password.get_secret_value()):
            return
        if token:
            given = query_params(request.path).get(cfg.token_query_param) or \
                bearer_token(request.headers)
            if secret_equal(given, token):
                return
        raise HandshakeRejected(401, "missing or invalid credentials")

    async def serve_websocket(self, conn: ServerConnection) -> None:
        """Serve one forked audio stream."""
        await serve_ws_call(self, conn, lambda handle: self._stream(conn, handle))

    def _channels(self, mix_type: str) -> tuple[str, ...]:
        cfg: FreeSwitchConfig = self.config  # type: ignore[assignment]
        if mix_type != "stereo":
            return (cfg.customer_role,)  # mono: the caller; mixed: both parties, one channel
        left_first = cfg.stereo_customer_channel == "left"
        return (cfg.customer_role, AGENT_ROLE) if left_first else (AGENT_ROLE,
                                                                   cfg.customer_role)

    def _start(self, handle: CallHandle, info: StreamInfo, remote: str | None) -> None:
        call_id = info.call_id or f"{self.name}-{uuid.uuid4()}"
        meta = call_metadata(self.name, info.call_id, ani=info.ani, dnis=info.dnis,
                             custom=info.custom)
        if info.mix_type == "mixed":
            meta["mixed"] = True
        handle.start(call_start(self, call_id=call_id, encoding="pcm_s16le",
                                sample_rate=info.sample_rate,
                                channels=self._channels(info.mix_type), metadata=meta,
                                remote=remote))

    async def _stream(self, conn: ServerConnection, handle: CallHandle) -> CallEnd:
        cfg: FreeSwitchConfig = self.config  # type: ignore[assignment]
        try:
            first = await ws_receive(self, conn, started=False)
        except ConnectionClosedOK:
            return CallEnd("disconnect", "closed before any audio")
        remote = remote_of(conn)
        if isinstance(first, bytes):  # no metadata given: the configured defaults
            if self.json_only:
                raise ProtocolError("audio_before_start", "audio before the JSON frame")
            self._start(handle, StreamInfo(None, cfg.mix_type, cfg.sample_rate), remote)
            feed(handle, first)
        else:
            self._start(handle, parse_metadata(
                first, self.limits.max_text_bytes, mix_type=cfg.mix_type,
                sample_rate=cfg.sample_rate, call_id_keys=self.call_id_keys,
                json_only=self.json_only), remote)
        lim = self.limits

        def on_text(text: str) -> None:
            custom_update(handle, text, lim.max_text_bytes, lim.max_metadata_bytes)

        return await pump_audio(self, conn, handle, on_text)
