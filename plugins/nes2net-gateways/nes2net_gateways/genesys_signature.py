"""HTTP message signatures (RFC 9421) as Genesys AudioHook signs its WebSocket upgrade.

Genesys signs the upgrade ``GET`` with HMAC-SHA256: the key is the base64-decoded client
secret of the integration's credentials and ``keyid`` is its API key. The signature covers
``@request-target``, ``@authority``, the three ``audiohook-*`` headers and ``x-api-key`` (the
set the AudioHook reference server requires, purecloudlabs/audiohook-reference-implementation
``app/src/authenticator.ts``). The ``Signature-Input`` and ``Signature`` headers are Structured
Field dictionaries (RFC 8941, parsed and serialised by
:mod:`~nes2net_gateways.structured_fields`); this module holds :func:`verify_signature`,
which rebuilds the signature base exactly as RFC 9421 section 2.5 defines it (the
``@signature-params`` line is re-serialised from the parsed value, so a non-canonical
``Signature-Input`` fails instead of being trusted as sent).

Everything here is pure (no I/O) so it can be fuzzed: :func:`verify_signature` never raises,
it returns a :class:`SignatureResult`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nes2net_gateways.structured_fields import (
    BareItem,
    InnerList,
    Item,
    Params,
    StructuredFieldError,
    Token,
    parse_dictionary,
    serialize_inner_list,
    serialize_item,
)

__all__ = [
    "RequestView", "SignatureResult", "build_signature", "canonical_field_value",
    "signature_base", "verify_signature",
]


# ----------------------------------------------------------------------------- RFC 9421

_FOLD = re.compile(r"[ \t]*\r?\n[ \t]+")

#: derived components this verifier can resolve for a WebSocket upgrade request
DERIVED = ("@method", "@authority", "@request-target", "@path", "@query")


def canonical_field_value(values: list[str]) -> str:
    """RFC 9421 section 2.1: trim each field line, unfold, join multiple lines with ", "."""
    return ", ".join(_FOLD.sub(" ", v).strip(" \t") for v in values)


@dataclass(frozen=True)
class SignatureResult:
    """Outcome of a verification.

    Attributes:
        code: ``verified``, ``unsigned`` (no signature headers), ``invalid`` (malformed),
            ``precondition`` (a required part is missing: nonce, created, a covered component,
            keyid mismatch), ``expired``, ``unsupported`` (algorithm or component parameters)
            or ``failed`` (the HMAC does not match, or the key is unknown).
        reason: a short human explanation, never containing secret material.
        nonce: the verified signature's ``nonce`` (for replay detection).
    """

    code: str
    reason: str = ""
    nonce: str = ""

    @property
    def ok(self) -> bool:
        """True when the signature verified."""
        return self.code == "verified"


@dataclass(frozen=True)
class RequestView:
    """What the verifier needs from the HTTP request.

    Attributes:
        method: request method (``GET`` for a WebSocket upgrade).
        target: the request target as sent (path and query).
        authority: host[:port] as the client addressed it (normalised to lower case).
        field_values: header name (lower case) -> list of field line values.
    """

    method: str
    target: str
    authority: str
    field_values: Mapping[str, list[str]]


def _component_value(name: str, req: RequestView) -> str | None:
    if name == "@method":
        return req.method.upper()
    if name == "@authority":
        return req.authority.lower()
    if name == "@request-target":
        return req.target
    path, _, query = req.target.partition("?")
    if name == "@path":
        return path or "/"
    if name == "@query":
        return "?" + query
    values = req.field_values.get(name)
    return canonical_field_value(values) if values else None


def signature_base(components: InnerList, req: RequestView) -> str:
    """The RFC 9421 signature base; raises StructuredFieldError naming what is wrong."""
    lines = []
    seen: set[str] = set()
    for item in components.items:
        name = item.value
        if not isinstance(name, str) or isinstance(name, Token):
            raise StructuredFieldError("covered components must be strings")
        if item.params:
            raise StructuredFieldError(
                f"component parameters are not supported ({serialize_item(item)})")
        if name != name.lower():
            raise StructuredFieldError(f"component name {name!r} must be lower case")
        if name in seen:
            raise StructuredFieldError(f"component {name!r} is covered twice")
        if name == "@signature-params" or (name.startswith("@") and name not in DERIVED):
            raise StructuredFieldError(f"derived component {name!r} is not supported here")
        value = _component_value(name, req)
        if value is None:
            raise StructuredFieldError(f"covered component {name!r} is missing from the request")
        seen.add(name)
        lines.append(f"{serialize_item(item)}: {value}")
    lines.append('"@signature-params": ' + serialize_inner_list(components))
    return "\n".join(lines)


def _param(params: Params, key: str) -> BareItem | None:
    return next((v for k, v in params if k == key), None)


def verify_signature(req: RequestView, *, api_key: str,
                     secret_for: Callable[[str], bytes | None],
                     required: tuple[str, ...], max_age_s: float, clock_skew_s: float,
                     min_nonce_len: int, now: float) -> SignatureResult:
    """Verify the request's ``Signature``/``Signature-Input`` (never raises).

    Args:
        req: the request as seen by the server.
        api_key: the ``x-api-key`` header value; ``keyid`` must equal it.
        secret_for: HMAC key (decoded client secret) of a known API key, None if unknown.
        required: components the signature must cover.
        max_age_s: maximum age of ``created``.
        clock_skew_s: tolerated clock difference for ``created`` in the future and
            ``expires``.
        min_nonce_len: minimum ``nonce`` length.
        now: current UNIX time in seconds.
    """
    inputs = req.field_values.get("signature-input") or []
    sigs = req.field_values.get("signature") or []
    if not inputs and not sigs:
        return SignatureResult("unsigned", "no Signature / Signature-Input header")
    if not inputs or not sigs:
        return SignatureResult("invalid", "Signature and Signature-Input must be sent together")
    try:
        input_dict = parse_dictionary(canonical_field_value(inputs))
        sig_dict = parse_dictionary(canonical_field_value(sigs))
    except StructuredFieldError as exc:
        return SignatureResult("invalid", f"unparsable signature header: {exc}")
    labels = [k for k, v in input_dict.items() if isinstance(v, InnerList)]
    if not labels:
        return SignatureResult("invalid", "Signature-Input holds no signature")
    label = next((k for k in labels if _param(input_dict[k].params, "keyid") == api_key),
                 labels[0])
    covered = input_dict[label]
    sig_item = sig_dict.get(label)
    assert isinstance(covered, InnerList)
    if not isinstance(sig_item, Item) or not isinstance(sig_item.value, bytes):
        return SignatureResult("invalid", f"no byte-sequence Signature for label {label!r}")
    params = covered.params
    for key, value in params:
        if key in ("created", "expires") and (isinstance(value, bool)
                                              or not isinstance(value, int) or value < 0):
            return SignatureResult("invalid", f"signature parameter {key!r} must be an integer")
        if key in ("keyid", "nonce", "alg", "tag") and (
                not isinstance(value, str) or isinstance(value, Token)):
            return SignatureResult("invalid", f"signature parameter {key!r} must be a string")
    created, expires = _param(params, "created"), _param(params, "expires")
    nonce, keyid, alg = _param(params, "nonce"), _param(params, "keyid"), _param(params, "alg")
    if created is None:
        return SignatureResult("precondition", "no 'created' signature parameter")
    if created > now + clock_skew_s:
        return SignatureResult("invalid", "'created' is in the future")
    if now - created > max_age_s:
        return SignatureResult("expired", f"signature older than {max_age_s:g} s")
    if expires is not None and expires + clock_skew_s < now:
        return SignatureResult("expired", "'expires' has passed")
    if min_nonce_len and (not isinstance(nonce, str) or len(nonce) < min_nonce_len):
        return SignatureResult("precondition", f"'nonce' missing or shorter than "
                               f"{min_nonce_len} characters")
    if not isinstance(keyid, str) or not hmac.compare_digest(keyid.encode(), api_key.encode()):
        return SignatureResult("precondition", "signature keyid does not match X-API-KEY")
    names = {i.value for i in covered.items}
    missing = [c for c in required if c not in names]
    if missing:
        return SignatureResult("precondition", f"signature does not cover {missing}")
    try:
        base = signature_base(covered, req)
    except StructuredFieldError as exc:
        return SignatureResult("precondition" if "missing" in str(exc) else "unsupported",
                               str(exc))
    key = secret_for(keyid)
    known = key is not None
    digest = hmac.new(key if known else os.urandom(32), base.encode("utf-8"),
                      hashlib.sha256).digest()
    match = hmac.compare_digest(digest, sig_item.value)
    if alg is not None and alg != "hmac-sha256":
        return SignatureResult("unsupported", f"algorithm {alg!r} is not supported")
    if not (match and known):
        return SignatureResult("failed", "signature does not match")
    return SignatureResult("verified", nonce=nonce if isinstance(nonce, str) else "")


def build_signature(req: RequestView, components: list[str], *, keyid: str, key: bytes,
                    created: int, expires: int | None = None, nonce: str,
                    label: str = "sig1") -> dict[str, str]:
    """Sign a request the way Genesys does (used by tests and client tooling).

    Returns the ``signature-input`` and ``signature`` header values.
    """
    params: Params = [("keyid", keyid), ("nonce", nonce), ("alg", "hmac-sha256"),
                      ("created", created)]
    if expires is not None:
        params.append(("expires", expires))
    inner = InnerList([Item(c) for c in components], params)
    base = signature_base(inner, req)
    digest = hmac.new(key, base.encode("utf-8"), hashlib.sha256).digest()
    return {"signature-input": f"{label}={serialize_inner_list(inner)}",
            "signature": f"{label}={serialize_item(Item(digest))}"}
