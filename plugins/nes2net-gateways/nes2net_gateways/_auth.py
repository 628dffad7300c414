"""Authentication helpers shared by the built-in gateway plugins.

Secrets are compared in constant time; TLS server contexts come from the configured PEM files.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import Gateway

__all__ = [
    "basic_auth_ok", "bearer_token", "check_basic_pair", "parse_basic_auth", "query_params",
    "require_secret", "secret_equal", "server_tls_context",
]


def secret_equal(given: str | bytes | None, expected: str | bytes) -> bool:
    """Constant-time comparison; False when ``given`` is missing or ``expected`` is empty."""
    if given is None or not expected:
        return False
    a = given.encode() if isinstance(given, str) else given
    b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


def parse_basic_auth(value: str | None) -> tuple[str, str] | None:
    """``(username, password)`` from an ``Authorization: Basic ...`` value, None if malformed."""
    if not value or value[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


def basic_auth_ok(headers: Mapping[str, str], username: str, password: str) -> bool:
    """Check HTTP Basic credentials; both parts are compared in constant time."""
    creds = parse_basic_auth(headers.get("Authorization"))
    if creds is None:
        return False
    user_ok = secret_equal(creds[0], username)
    pass_ok = secret_equal(creds[1], password)
    return user_ok and pass_ok


def bearer_token(headers: Mapping[str, str], header: str = "Authorization") -> str | None:
    """The token of a ``<header>: Bearer ...`` header (``Authorization``), if any."""
    value = headers.get(header) or ""
    return (value[7:].strip() or None) if value[:7].lower() == "bearer " else None


def query_params(path: str) -> dict[str, str]:
    """Query parameters of a request path (first value of each name)."""
    out: dict[str, str] = {}
    for key, value in parse_qsl(urlsplit(path).query, keep_blank_values=True):
        out.setdefault(key, value)
    return out


def check_basic_pair(gateway: Gateway, username: str, password: str) -> None:
    """ConfigError naming ``gateways.<name>.username/password`` unless both or neither are set."""
    if bool(username) != bool(password):
        raise ConfigError(f"gateways.{gateway.name}.username/password: set both or neither")


def require_secret(gateway: Gateway, key: str, value: str) -> None:
    """ConfigError naming ``gateways.<name>.<key>`` when auth is required but it is unset."""
    if gateway.auth_required and not value:
        raise ConfigError(
            f"gateways.{gateway.name}.{key}: authentication is required (the service listens "
            "beyond loopback or auth = \"required\") but no secret is configured; set it, or "
            "auth = \"off\" on a trusted network only")


def server_tls_context(section: str, cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context from PEM files; ConfigError naming ``<section>.tls_cert``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{section}.tls_cert: cannot load the certificate or key ({exc})"
                          ) from None
    return ctx
