"""SIP digest authentication (RFC 3261 §22, RFC 8760: SHA-256 and MD5) for the SIPREC gateway.

The server keeps no per-challenge state: a nonce is a timestamp signed with a per-process
key and bound to the client's address, valid for :data:`NONCE_TTL_S`. A response seen once
(nonce, client nonce and count) is refused again, so a captured INVITE cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections import OrderedDict

NONCE_TTL_S = 300.0
MAX_SEEN = 100_000
ALGORITHMS = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')


def parse_digest(value: str | None, *, max_len: int = 4096) -> dict[str, str] | None:
    """Parameters of an ``Authorization: Digest ...`` value (names lower-cased), or None."""
    if not value or len(value) > max_len or value[:7].lower() != "digest ":
        return None
    rest, params, pos = value[7:], {}, 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            return None
        raw = m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[m.group(1).lower()] = raw
        pos = m.end()
    return params


class DigestAuthenticator:
    """Challenges and checks digest credentials for one username and password."""

    def __init__(self, username: str, password: str, realm: str, *,
                 ttl_s: float = NONCE_TTL_S):
        self.username = username
        self.password = password
        self.realm = realm
        self.ttl_s = ttl_s
        self._key = os.urandom(32)
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def _sign(self, stamp: str, client_ip: str) -> str:
        return hmac.new(self._key, f"{stamp}:{client_ip}".encode(), "sha256").hexdigest()[:32]

    def nonce(self, client_ip: str, now: float | None = None) -> str:
        """A fresh nonce for ``client_ip``."""
        stamp = f"{int((time.time() if now is None else now) * 1000):x}"
        return f"{stamp}.{self._sign(stamp, client_ip)}"

    def challenges(self, client_ip: str, *, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values, the stronger algorithm first (RFC 8760 §2.4)."""
        nonce = self.nonce(client_ip)
        extra = ", stale=true" if stale else ""
        return [f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={alg}, qop="auth"'
                f"{extra}" for alg in ALGORITHMS]

    def _nonce_state(self, nonce: str, client_ip: str, now: float) -> str:
        stamp, _, sig = nonce.partition(".")
        if not hmac.compare_digest(sig.encode(), self._sign(stamp, client_ip).encode()):
            return "invalid"
        try:
            issued = int(stamp, 16) / 1000
        except ValueError:
            return "invalid"
        return "fresh" if 0 <= now - issued <= self.ttl_s else "stale"

    def check(self, authorization: str | None, method: str, client_ip: str,
              now: float | None = None) -> str:
        """``ok``, ``missing``, ``stale`` (expired nonce: challenge again) or ``invalid``."""
        p = parse_digest(authorization)
        if p is None:
            return "missing" if not authorization else "invalid"
        algorithm = p.get("algorithm", "MD5").upper()
        hash_fn = ALGORITHMS.get(algorithm)
        needed = ("username", "realm", "nonce", "uri", "response")
        if hash_fn is None or any(k not in p for k in needed):
            return "invalid"
        now = time.time() if now is None else now
        state = self._nonce_state(p["nonce"], client_ip, now)
        if state != "fresh":
            return state

        def h(text: str) -> str:
            return hash_fn(text.encode()).hexdigest()

        ha1 = h(f"{self.username}:{self.realm}:{self.password}")
        ha2 = h(f"{method}:{p['uri']}")
        qop = p.get("qop")
        if qop:
            if qop.lower() != "auth" or "cnonce" not in p or "nc" not in p:
                return "invalid"
            expected = h(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{qop}:{ha2}")
        else:
            expected = h(f"{ha1}:{p['nonce']}:{ha2}")
        user_ok = hmac.compare_digest(p["username"].encode(), self.username.encode())
        realm_ok = hmac.compare_digest(p["realm"].encode(), self.realm.encode())
        resp_ok = hmac.compare_digest(p["response"].lower().encode(), expected.encode())
        if not (user_ok and realm_ok and resp_ok):
            return "invalid"
        key = (p["nonce"], p.get("cnonce", ""), p.get("nc", ""))
        if key in self._seen:
            return "invalid"  # a replayed response
        self._seen[key] = None
        while len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        return "ok"


def digest_response(params: dict[str, str], username: str, password: str, method: str,
                    uri: str, *, cnonce: str = "0a4f113b", nc: str = "00000001") -> str:
    """An ``Authorization`` value answering a challenge (what a recording client sends)."""
    algorithm = params.get("algorithm", "MD5").upper()
    hash_fn = ALGORITHMS[algorithm]

    def h(text: str) -> str:
        return hash_fn(text.encode()).hexdigest()

    realm, nonce = params["realm"], params["nonce"]
    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc}, '
            f'cnonce="{cnonce}"')
