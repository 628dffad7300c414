"""Bearer JWTs signed with keys of a JSON Web Key Set (JWKS): fetch, cache, verify.

Azure Communication Services signs every media-streaming WebSocket upgrade with an RS256 JWT
whose keys it publishes as a JWKS (OpenID Connect). :class:`JwksKeys` holds the set: read
from a URL (HTTPS; plain HTTP only to a loopback host) or a local file, refreshed every
``refresh_s`` and, when a token names a key id the set does not hold (a rotated key), at once
but at most every ``min_refetch_s``. :class:`JwtVerifier` checks signature, issuer, audience
and lifetime with PyJWT.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from nes2net_stream.errors import ConfigError

MAX_JWKS_BYTES = 1 << 20
FETCH_TIMEOUT_S = 10.0
RETRY_S = 5.0  # pause between loads while no key set has been loaded yet
ALGORITHMS = ("RS256",)


class TokenRejected(Exception):
    """The token is missing, malformed, unsigned by a known key, or fails a claim check."""


class KeysUnavailable(Exception):
    """No key set could be loaded (the service cannot authenticate anyone yet)."""


def check_jwks_url(key: str, url: str) -> None:
    """Refuse a JWKS URL that is not HTTPS (plain HTTP is accepted for loopback hosts)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host:
        try:
            if host == "localhost" or ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
    raise ConfigError(f"{key}: must be an https:// URL (http:// only for a loopback host), "
                      f"got {url!r}")


def parse_jwks(raw: bytes | str) -> dict[str, Any]:
    """Key id -> key object of a JWKS document's RSA signing keys (ValueError if unusable)."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("a JWKS document is a JSON object with a 'keys' list")
    keys: dict[str, Any] = {}
    for i, entry in enumerate(doc["keys"]):
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or \
                entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry, algorithm="RS256").key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        keys[str(entry.get("kid", f"#{i}"))] = key
    if not keys:
        raise ValueError("the JWKS holds no usable RSA signing key")
    return keys


class JwksKeys:
    """The signing keys of one JWKS source, cached (see the module docstring).

    Args:
        url: where the JWKS is served (ignored when ``file`` is set).
        file: a local JWKS file instead of the URL (re-read when it changes).
        refresh_s: age after which the set is loaded again before use.
        min_refetch_s: shortest interval between loads forced by an unknown key id.
    """

    def __init__(self, *, url: str = "", file: str = "", refresh_s: float = 3600.0,
                 min_refetch_s: float = 60.0):
        self.url, self.file = url, file
        self.refresh_s, self.min_refetch_s = refresh_s, min_refetch_s
        self._keys: dict[str, Any] = {}
        self._loaded_at = -float("inf")
        self._tried_at = -float("inf")
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self.loads = 0
        self.last_error: str | None = None

    async def _read(self) -> bytes:
        if self.file:
            return await asyncio.to_thread(Path(self.file).read_bytes)
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S))
        async with self._http.get(self.url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status} from the JWKS URL")
            body = await resp.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        return body

    async def _load(self) -> None:
        self._tried_at = time.monotonic()
        try:
            keys = parse_jwks(await self._read())
        except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
            self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            if not self._keys:
                raise KeysUnavailable(self.last_error) from None
            return  # keep the keys we have; the next refresh tries again
        self._keys, self._loaded_at = keys, time.monotonic()
        self.loads += 1
        self.last_error = None

    def _needs_load(self, kid: str | None) -> bool:
        now = time.monotonic()
        stale = now - self._loaded_at > self.refresh_s
        unknown = kid is not None and kid not in self._keys
        # a source that failed (or a set that lacks a key) is asked again only after a pause
        due = now - self._tried_at >= (self.min_refetch_s if self._keys else RETRY_S)
        return (stale or unknown) and due

    async def key_for(self, kid: str | None) -> list[Any]:
        """The keys that may have signed a token with ``kid`` (all of them when it has none).

        Handshakes arriving while a load is under way wait for it when they need its result
        (no set yet, or an unknown key id); one load serves them all. Raises KeysUnavailable
        when no set has ever been loaded.
        """
        unknown = kid is not None and kid not in self._keys
        waiting = self._lock.locked() and (not self._keys or unknown)
        if waiting or self._needs_load(kid):
            async with self._lock:
                if self._needs_load(kid):  # not if the load we waited for settled it
                    await self._load()
        if not self._keys:
            raise KeysUnavailable(self.last_error or "no key set loaded")
        if kid is None:
            return list(self._keys.values())
        key = self._keys.get(kid)
        return [key] if key is not None else []

    async def close(self) -> None:
        """Close the HTTP session, if one was opened."""
        if self._http is not None:
            await self._http.close()
            self._http = None


class JwtVerifier:
    """Verify RS256 bearer tokens against a :class:`JwksKeys` (issuer, audience, lifetime).

    ``audience=None`` accepts any audience but still requires the claim; ``require`` lists
    the claims a token must carry.
    """

    def __init__(self, keys: JwksKeys, *, issuer: str, audience: str | None,
                 leeway_s: float = 60.0, require: tuple[str, ...] = ("exp", "iss", "aud")):
        self.keys, self.issuer, self.audience, self.leeway_s = keys, issuer, audience, leeway_s
        self.require = require

    async def verify(self, token: str | None) -> dict[str, Any]:
        """The token's claims; raises TokenRejected or KeysUnavailable."""
        return await self.verify_with(token, self.keys, self.issuer)

    async def verify_with(self, token: str | None, keys: JwksKeys, issuer: str
                          ) -> dict[str, Any]:
        """Verify ``token`` against ``keys`` and ``issuer`` (the checks of :meth:`verify`)."""
        if not token:
            raise TokenRejected("missing bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRejected("malformed token") from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenRejected(f"token algorithm {str(header.get('alg'))[:20]!r} is not RS256")
        kid = header.get("kid")
        candidates = await keys.key_for(kid if isinstance(kid, str) else None)
        if not candidates:
            raise TokenRejected("token signed with an unknown key")
        error = "invalid token"
        options: dict[str, Any] = {"require": list(self.require)}
        if self.audience is None:
            options["verify_aud"] = False
        for key in candidates:
            try:
                return jwt.decode(token, key, algorithms=list(ALGORITHMS),
                                  audience=self.audience, issuer=issuer,
                                  leeway=self.leeway_s, options=options)
            except jwt.InvalidSignatureError:
                error = "bad signature"
            except jwt.InvalidTokenError as exc:
                raise TokenRejected(f"{type(exc).__name__}: {str(exc)[:120]}") from None
        raise TokenRejected(error)
