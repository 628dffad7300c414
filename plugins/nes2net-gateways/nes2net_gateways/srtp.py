"""SDES-SRTP for recorded streams (RFC 4568 keys in SDP, RFC 3711/7714 decryption by libsrtp).

The recording client offers its key in ``a=crypto`` lines; the answer picks the first usable
one and returns a key of our own with the same tag and suite (RFC 4568 §6.1; this side sends
no media, but an answer without a key would refuse the stream). Decryption uses ``pylibsrtp``
(libsrtp), which the ``webrtc`` extra installs; without it SRTP streams are refused.
Keys exchanged over SIP without TLS are visible to anyone on the path: use ``transports =
["tls"]`` where SRTP matters.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import secrets
from typing import Any

from nes2net_gateways.sip_sdp import Crypto

#: crypto suite -> (libsrtp profile name, bytes of master key + salt)
SUITES: dict[str, tuple[str, int]] = {
    "AES_CM_128_HMAC_SHA1_80": ("SRTP_PROFILE_AES128_CM_SHA1_80", 30),
    "AES_CM_128_HMAC_SHA1_32": ("SRTP_PROFILE_AES128_CM_SHA1_32", 30),
    "AEAD_AES_128_GCM": ("SRTP_PROFILE_AEAD_AES_128_GCM", 28),
    "AEAD_AES_256_GCM": ("SRTP_PROFILE_AEAD_AES_256_GCM", 44),
}
#: session parameters that change how packets are protected (not supported)
_UNSUPPORTED_PARAMS = ("UNENCRYPTED_SRTP", "UNAUTHENTICATED_SRTP", "KDR=", "FEC_ORDER",
                       "FEC_KEY", "WSH=")


def available() -> bool:
    """True when libsrtp's Python binding is installed."""
    return importlib.util.find_spec("pylibsrtp") is not None


def master_key(crypto: Crypto) -> bytes | None:
    """The master key and salt of an ``a=crypto`` line, or None when it is not usable here.

    Usable: a known suite, one ``inline:`` key of the suite's length, no MKI and no session
    parameter that changes the packet protection.
    """
    suite = SUITES.get(crypto.suite.upper())
    method, _, value = crypto.key_params.partition(":")
    if suite is None or method.lower() != "inline" or ";" in value:
        return None  # unknown suite, another key method, or several keys
    encoded, *extra = value.split("|")
    if any(":" in e for e in extra):
        return None  # an MKI (``|1:4``) is not supported; a lifetime is ignored
    params = crypto.session_params.upper()
    if any(p in params for p in _UNSUPPORTED_PARAMS):
        return None
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == suite[1] else None


def pick_crypto(offered: list[Crypto]) -> Crypto | None:
    """The first offered ``a=crypto`` line this side can use."""
    return next((c for c in offered if master_key(c) is not None), None)


def answer_crypto(crypto: Crypto) -> str:
    """The ``a=crypto`` value of the answer: same tag and suite, a fresh key of ours."""
    length = SUITES[crypto.suite.upper()][1]
    key = base64.b64encode(secrets.token_bytes(length)).decode()
    return f"{crypto.tag} {crypto.suite.upper()} inline:{key}"


def _session(crypto: Crypto, inbound: bool) -> Any:
    """A libsrtp session with the key of ``crypto`` for packets of any SSRC."""
    from pylibsrtp import Policy, Session

    key = master_key(crypto)
    if key is None:
        raise ValueError("unusable a=crypto line")
    profile = getattr(Policy, SUITES[crypto.suite.upper()][0])
    ssrc = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
    return Session(policy=Policy(key=key, ssrc_type=ssrc, srtp_profile=profile))


class SrtpReceiver:
    """Decrypts and authenticates the packets of one stream (replays are refused too)."""

    def __init__(self, crypto: Crypto):
        self._session = _session(crypto, inbound=True)
        self.failures = 0

    def unprotect(self, data: bytes) -> bytes | None:
        """The plain RTP packet, or None for a packet that fails authentication or replays."""
        from pylibsrtp import Error

        try:
            return self._session.unprotect(data)
        except Error:
            self.failures += 1
            return None


class SrtpSender:
    """Encrypts RTP with a key of an ``a=crypto`` line (what a recording client does; tests)."""

    def __init__(self, crypto: Crypto):
        self._session = _session(crypto, inbound=False)

    def protect(self, packet: bytes) -> bytes:
        """The SRTP form of an RTP packet."""
        return self._session.protect(packet)
