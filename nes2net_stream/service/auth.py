"""Ingress authentication for the generic protocol, signalling and dashboards.

Bearer tokens come from ``[auth] tokens``, ``[auth] tokens_file`` or the environment, are
compared in constant time and never logged. ``mode = "auto"`` requires a token whenever the
server listens beyond loopback, so an exposed service is never open by accident.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from nes2net_stream.errors import ConfigError
from nes2net_stream.settings import AuthSection


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TokenAuth:
    """Checks bearer tokens from an ``Authorization`` header or a ``token`` query parameter."""

    def __init__(self, tokens: list[str], required: bool):
        self._tokens = [t.encode() for t in tokens if t]
        self.required = required

    @classmethod
    def from_settings(cls, auth: AuthSection, host: str) -> TokenAuth:
        """Build from ``[auth]``; fail fast when tokens are required but none is configured."""
        tokens = list(auth.tokens)
        if auth.tokens_file:
            path = Path(auth.tokens_file)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"auth.tokens_file: cannot read {path}: {exc}") from exc
            tokens += [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
        short = [t for t in tokens if len(t) < 16]
        if short:
            raise ConfigError("auth.tokens: every token must be at least 16 characters long")
        required = auth.mode == "required" or (auth.mode == "auto" and not is_loopback(host))
        if required and not tokens:
            raise ConfigError(
                f"auth: server.host={host!r} is not a loopback address, so authentication is "
                "required, but no token is configured: set auth.tokens / auth.tokens_file (or "
                "NES2NET_AUTH__TOKENS='[\"...\"]'), or auth.mode = \"off\" on a trusted network")
        return cls(tokens, required)

    def check_token(self, token: str | None) -> bool:
        """Constant-time comparison against every configured token."""
        if not self.required:
            return True
        if not token:
            return False
        candidate = token.encode()
        ok = False
        for t in self._tokens:
            ok |= hmac.compare_digest(candidate, t)
        return ok

    def check_request(self, path: str, headers: Mapping[str, str]) -> bool:
        """Token from ``Authorization: Bearer ...`` or the ``token`` query parameter."""
        if not self.required:
            return True
        header = headers.get("Authorization") or headers.get("authorization") or ""
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        if token is None:
            values = parse_qs(urlsplit(path).query).get("token")
            token = values[0] if values else None
        return self.check_token(token)
