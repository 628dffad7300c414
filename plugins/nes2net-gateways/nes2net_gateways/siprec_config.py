"""``[gateways.siprec]``: the SIPREC gateway's settings and their checks.

Invalid settings fail fast, naming the key.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from typing import Any, Literal

from pydantic import Field

from nes2net_gateways._auth import server_tls_context
from nes2net_gateways._common import parse_networks
from nes2net_gateways.srtp import available as srtp_available
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import GatewayConfig

LOOPBACK = ["127.0.0.0/8", "::1/128"]
ANYWHERE = ["0.0.0.0/0", "::/0"]


class SiprecConfig(GatewayConfig):
    """``[gateways.siprec]`` settings (see docs/gateways/siprec.md)."""

    port: int = Field(5060, ge=0, le=65535)
    transports: list[Literal["udp", "tcp", "tls"]] = Field(
        default_factory=lambda: ["udp", "tcp"], min_length=1)
    tls_port: int = Field(5061, ge=0, le=65535)
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    srtp: Literal["allow", "require", "off"] = "allow"
    media_address: str = ""
    rtp_port_min: int = Field(20000, ge=0, le=65535)
    rtp_port_max: int = Field(29999, ge=0, le=65535)
    rtp_reorder_packets: int = Field(4, ge=0, le=50)
    rtp_conceal_ms: float = Field(60.0, ge=0.0, le=500.0)
    allowed_networks: list[str] | None = None
    username: str = "nes2net"
    password: str = ""
    realm: str = "nes2net-stream"
    customer_label: str = ""
    customer_aor: str = ""
    customer_wait_s: float = Field(60.0, ge=0.0, le=3600.0)
    codecs: list[Literal["PCMU", "PCMA", "G722", "OPUS", "G729", "AMR-WB", "AMR", "GSM",
                         "L16"]] = Field(default_factory=lambda: [
                             "PCMU", "PCMA", "G722", "OPUS", "G729", "AMR-WB", "AMR", "GSM",
                             "L16"], min_length=1)
    max_streams: int = Field(4, ge=1, le=16)
    max_requests_per_s: float = Field(200.0, gt=0)


def customer_aor(cfg: SiprecConfig) -> re.Pattern[str] | None:
    """``customer_aor`` compiled (a regular expression on participant addresses), if set."""
    if not cfg.customer_aor:
        return None
    try:
        return re.compile(cfg.customer_aor)
    except re.error as exc:
        raise ConfigError(f"gateways.siprec.customer_aor: not a regular expression ({exc})"
                          ) from None


def tls_context(cfg: SiprecConfig) -> ssl.SSLContext | None:
    """The server context of SIP over TLS (mutual TLS with ``tls_client_ca``), if served."""
    if "tls" not in cfg.transports:
        return None
    if not cfg.tls_cert or not cfg.tls_key:
        raise ConfigError("gateways.siprec.tls_cert: transports include \"tls\": set tls_cert "
                          "and tls_key (PEM files)")
    ctx = server_tls_context("gateways.siprec", cfg.tls_cert, cfg.tls_key)
    if cfg.tls_client_ca:
        try:
            ctx.load_verify_locations(cfg.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"gateways.siprec.tls_client_ca: cannot load ({exc})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the SBC shows its certificate
    return ctx


def srtp_mode(cfg: SiprecConfig, log: Any) -> str:
    """The SRTP mode in effect: ``off`` when libsrtp's binding is missing (unless required)."""
    if cfg.srtp != "off" and not srtp_available():
        if cfg.srtp == "require":
            raise ConfigError("gateways.siprec.srtp: \"require\" needs libsrtp's Python binding "
                              "(pylibsrtp, installed with the webrtc extra)")
        log.warning("pylibsrtp is not installed: SRTP streams will be refused")
        return "off"
    return cfg.srtp


def allowed_networks(cfg: SiprecConfig, auth_required: bool) -> list[Any]:
    """The networks requests are accepted from.

    Refuses an exposed gateway without any authentication (an address list, a digest
    password, or mutual TLS as the only transport), and checks the RTP range and address.
    """
    nets = cfg.allowed_networks
    mutual_tls_only = bool(cfg.tls_client_ca) and cfg.transports == ["tls"]
    if nets is None:
        if auth_required and not (cfg.password or mutual_tls_only):
            raise ConfigError(
                f"gateways.siprec.allowed_networks: host={cfg.host!r} is not loopback (or auth "
                "= \"required\"): list the networks of your recording clients (SBCs), e.g. "
                "[\"10.0.0.5/32\"], and/or set gateways.siprec.password for digest "
                "authentication, or serve only TLS with tls_client_ca")
        nets = ANYWHERE if cfg.password or mutual_tls_only else LOOPBACK
    networks = parse_networks("gateways.siprec.allowed_networks", nets)
    lo, hi = cfg.rtp_port_min, cfg.rtp_port_max
    if lo and (hi - lo < 1 or lo < 1024):
        raise ConfigError("gateways.siprec.rtp_port_min: the RTP range must hold at least one "
                          "even/odd port pair at or above 1024 (or set it to 0 for ephemeral "
                          "ports)")
    if cfg.media_address:
        try:
            ipaddress.ip_address(cfg.media_address)
        except ValueError:
            raise ConfigError("gateways.siprec.media_address: not an IP address") from None
    return networks
