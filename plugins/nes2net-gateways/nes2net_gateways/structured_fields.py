"""Structured Field Values for HTTP (RFC 8941), as HTTP message signatures use them.

RFC 9421 carries its ``Signature-Input`` and ``Signature`` headers as structured dictionaries.

Only what signatures need: :func:`parse_dictionary` (raises only
:class:`StructuredFieldError`, so it can be fuzzed) and the serialisers of items and inner
lists, which produce the canonical form RFC 9421 signs.
"""

from __future__ import annotations

import base64
import binascii
import string
from dataclasses import dataclass, field
from typing import Union

__all__ = [
    "BareItem", "InnerList", "Item", "Params", "StructuredFieldError", "Token",
    "parse_dictionary", "serialize_inner_list", "serialize_item",
]


class StructuredFieldError(ValueError):
    """A header value that is not a valid RFC 8941 structured field."""


class Token(str):
    """An RFC 8941 token (serialised without quotes, unlike a string)."""

    __slots__ = ()


BareItem = Union[int, float, str, Token, bytes, bool]  # noqa: UP007 - used at runtime
Params = list[tuple[str, BareItem]]


@dataclass
class Item:
    """A bare item with parameters."""

    value: BareItem
    params: Params = field(default_factory=list)


@dataclass
class InnerList:
    """An inner list of items with parameters."""

    items: list[Item]
    params: Params = field(default_factory=list)


# ----------------------------------------------------------------------------- parsing

_KEY_FIRST = set(string.ascii_lowercase + "*")
_KEY_CHARS = _KEY_FIRST | set(string.digits + "_-.")
_TCHAR = set("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
_TOKEN_CHARS = _TCHAR | set(":/")
_B64_CHARS = set(string.ascii_letters + string.digits + "+/=")


class _Reader:
    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def take(self) -> str:
        c = self.peek()
        self.i += 1
        return c

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.i += 1

    @property
    def done(self) -> bool:
        return self.i >= len(self.s)


def _fail(msg: str) -> StructuredFieldError:
    return StructuredFieldError(msg)


def _parse_key(r: _Reader) -> str:
    if not r.peek() or r.peek() not in _KEY_FIRST:
        raise _fail(f"invalid key at offset {r.i}")
    start = r.i
    while r.peek() and r.peek() in _KEY_CHARS:
        r.i += 1
    return r.s[start:r.i]


def _parse_number(r: _Reader) -> int | float:
    start = r.i
    if r.peek() == "-":
        r.i += 1
    if not r.peek().isdigit() or not r.peek().isascii():
        raise _fail(f"invalid number at offset {start}")
    digits_start = r.i
    while r.peek() and r.peek() in string.digits:
        r.i += 1
    int_len = r.i - digits_start
    if r.peek() != ".":
        if int_len > 15:
            raise _fail("integer has more than 15 digits")
        return int(r.s[start:r.i])
    if int_len > 12:
        raise _fail("decimal has more than 12 integer digits")
    r.i += 1
    frac_start = r.i
    while r.peek() and r.peek() in string.digits:
        r.i += 1
    if not 1 <= r.i - frac_start <= 3:
        raise _fail("decimal needs 1 to 3 fractional digits")
    return float(r.s[start:r.i])


def _parse_string(r: _Reader) -> str:
    r.take()  # opening quote
    out = []
    while True:
        c = r.take()
        if c == "":
            raise _fail("unterminated string")
        if c == "\\":
            n = r.take()
            if n not in ('"', "\\"):
                raise _fail("invalid escape in string")
            out.append(n)
        elif c == '"':
            return "".join(out)
        elif not (" " <= c <= "~"):
            raise _fail("invalid character in string")
        else:
            out.append(c)


def _parse_token(r: _Reader) -> Token:
    start = r.i
    r.i += 1
    while r.peek() and r.peek() in _TOKEN_CHARS:
        r.i += 1
    return Token(r.s[start:r.i])


def _parse_binary(r: _Reader) -> bytes:
    r.take()
    end = r.s.find(":", r.i)
    if end < 0:
        raise _fail("unterminated byte sequence")
    chunk = r.s[r.i:end]
    r.i = end + 1
    if not set(chunk) <= _B64_CHARS:
        raise _fail("invalid base64 in byte sequence")
    try:
        return base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _fail("invalid base64 in byte sequence") from None


def _parse_bare_item(r: _Reader) -> BareItem:
    c = r.peek()
    if c == "-" or (c.isascii() and c.isdigit()):
        return _parse_number(r)
    if c == '"':
        return _parse_string(r)
    if c == ":":
        return _parse_binary(r)
    if c == "?":
        r.take()
        b = r.take()
        if b not in ("0", "1"):
            raise _fail("invalid boolean")
        return b == "1"
    if c and (c.isascii() and c.isalpha() or c == "*"):
        return _parse_token(r)
    raise _fail(f"invalid item at offset {r.i}")


def _parse_params(r: _Reader) -> Params:
    params: dict[str, BareItem] = {}
    while r.peek() == ";":
        r.take()
        r.skip(" ")
        key = _parse_key(r)
        value: BareItem = True
        if r.peek() == "=":
            r.take()
            value = _parse_bare_item(r)
        params[key] = value
    return list(params.items())


def _parse_item(r: _Reader) -> Item:
    value = _parse_bare_item(r)
    return Item(value, _parse_params(r))


def _parse_inner_list(r: _Reader) -> InnerList:
    r.take()  # "("
    items: list[Item] = []
    while True:
        r.skip(" ")
        if r.peek() == ")":
            r.take()
            return InnerList(items, _parse_params(r))
        items.append(_parse_item(r))
        if not r.peek() or r.peek() not in " )":
            raise _fail(f"invalid or unterminated inner list at offset {r.i}")


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    """Parse an RFC 8941 dictionary (raises StructuredFieldError only)."""
    if not isinstance(text, str):
        raise _fail("header value must be text")
    r = _Reader(text)
    r.skip(" ")
    out: dict[str, Item | InnerList] = {}
    while not r.done:
        key = _parse_key(r)
        if r.peek() == "=":
            r.take()
            member: Item | InnerList = (_parse_inner_list(r) if r.peek() == "("
                                        else _parse_item(r))
        else:
            member = Item(True, _parse_params(r))
        out[key] = member
        r.skip(" \t")
        if r.done:
            return out
        if r.take() != ",":
            raise _fail(f"expected ',' at offset {r.i - 1}")
        r.skip(" \t")
        if r.done:
            raise _fail("trailing comma")
    return out


# ----------------------------------------------------------------------------- serialising

def _serialize_bare(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = f"{round(value, 3):.3f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, Token):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return ":" + base64.b64encode(value).decode("ascii") + ":"


def _serialize_params(params: Params) -> str:
    return "".join(f";{k}" if v is True else f";{k}={_serialize_bare(v)}" for k, v in params)


def serialize_item(item: Item) -> str:
    """RFC 8941 serialisation of an item."""
    return _serialize_bare(item.value) + _serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    """RFC 8941 serialisation of an inner list."""
    return "(" + " ".join(serialize_item(i) for i in inner.items) + ")" + \
        _serialize_params(inner.params)
