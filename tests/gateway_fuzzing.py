"""Strategies and checks shared by the gateway parser fuzz tests."""

from __future__ import annotations

from fuzzing import call, corrupted, deep_json, dumps, json_values, mutated
from hypothesis import strategies as st

from nes2net_stream.service.errors import ERROR_CODES, ProtocolError

MAX_TEXT = 4096
PARSE_CODES = {"bad_json", "bad_message", "unsupported_format", "frame_too_large",
               "unknown_message", "audio_before_start", "bad_audio_frame"}
UUID_FULL = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}" \
            r"-[0-9a-fA-F]{12}|0{8}-0{4}-0{4}-0{4}-0{12}"

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}", fullmatch=True)
payloads = st.binary(max_size=320)
uuids = st.uuids(version=4).map(str)


def expect(fn, *args, codes=PARSE_CODES, **kwargs):
    """Run a parser: its result, or None after checking the ProtocolError is documented."""
    try:
        return call(fn, *args, **kwargs)
    except ProtocolError as err:
        assert err.code in codes, err.code
        assert err.close_code == ERROR_CODES[err.code][0]
        return None


def inputs(valid):
    """Valid messages, mutated ones, corrupted bytes of valid ones, random text and bytes."""
    return st.one_of(
        valid.map(dumps),
        valid.flatmap(mutated).map(dumps),
        valid.map(lambda m: dumps(m).encode()).flatmap(corrupted),
        json_values.map(dumps), st.text(max_size=120), st.binary(max_size=120))


NASTY_JSON = ["1" * 5000, deep_json(5000), deep_json(3000, "{"), '{"event": "\ud800"}',
              "\ufeff{}", b"\xff{}", "{" + " " * 5000 + "}"]


def size_limit_holds(parse, valid_text: str) -> None:
    """Padding a valid message beyond the limit gets frame_too_large, counted in bytes."""
    padded = valid_text[:-1] + ', "pad": "' + "é" * (MAX_TEXT // 2) + '"}'
    for form in (padded, padded.encode()):
        try:
            parse(form, MAX_TEXT)
        except ProtocolError as err:
            assert err.code == "frame_too_large"
        else:
            raise AssertionError("oversized message accepted")
