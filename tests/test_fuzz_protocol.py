"""Fuzzing the generic WebSocket protocol: control messages (parse_json, parse_start) and audio.

Property: any input is either accepted as a well-formed result or refused with the layer's
error type (ProtocolError for control messages, AudioFormatError for audio frames), never any
other exception, never a hang; the size limits hold.
"""

from __future__ import annotations

import json
import re

import numpy as np
from fuzzing import FUZZ, call, corrupted, deep_json, dumps, json_values, mutated
from hypothesis import example, given
from hypothesis import strategies as st

from nes2net_stream.service.audio_decode import AudioFormatError, decode
from nes2net_stream.service.errors import ERROR_CODES, ProtocolError
from nes2net_stream.service.events import BYTES_PER_SAMPLE, ENCODINGS, CallStart, Source
from nes2net_stream.service.protocol import (
    CALL_ID_RE,
    PACKET_ENCODINGS,
    PROTOCOL_ENCODINGS,
    PROTOCOL_RATES,
    ROLE_RE,
    apply_update,
    parse_channel_end,
    parse_json,
    parse_start,
)

SOURCE = Source("websocket", "generic", "127.0.0.1:1")
MAX_TEXT = 16_384
MAX_METADATA = 8_192
JSON_CODES = {"bad_json", "bad_message", "frame_too_large"}
START_CODES = {"bad_message", "unsupported_format", "frame_too_large"}

call_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@+/=-]{0,40}", fullmatch=True)
roles = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)


@st.composite
def valid_starts(draw) -> dict:
    encoding = draw(st.sampled_from(PROTOCOL_ENCODINGS))
    channels = 1 if encoding in PACKET_ENCODINGS else draw(st.sampled_from([1, 2]))
    msg = {"type": "start", "call_id": draw(call_ids), "encoding": encoding,
           "sample_rate": draw(st.sampled_from(PROTOCOL_RATES))}
    if draw(st.booleans()):
        msg["channels"] = channels
    else:
        channels = 1
    if draw(st.booleans()):
        names = draw(st.lists(roles, min_size=channels, max_size=channels, unique=True))
        msg["channel_roles"] = names
        if draw(st.booleans()):
            msg["score_channels"] = names[:1]
    if draw(st.booleans()):
        msg["metadata"] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
    return msg


def _check_error(err: ProtocolError, codes: set[str]) -> None:
    assert err.code in codes, err.code
    event = err.to_event()
    assert event["close_code"] == ERROR_CODES[err.code][0]
    json.dumps(event)  # the error event is always sendable


def _check_start(start: CallStart, msg: dict) -> None:
    """A CallStart that passed validation respects the documented grammar."""
    assert re.fullmatch(CALL_ID_RE.pattern.strip("^$"), start.call_id), start.call_id
    assert start.encoding in PROTOCOL_ENCODINGS
    assert start.sample_rate in PROTOCOL_RATES and type(start.sample_rate) is int
    assert len(start.channels) in (1, 2) and len(set(start.channels)) == len(start.channels)
    assert all(re.fullmatch(ROLE_RE.pattern.strip("^$"), r) for r in start.channels)
    assert start.score_channels and start.score_channels <= set(start.channels)
    assert isinstance(start.metadata, dict)
    assert len(json.dumps(start.metadata)) <= MAX_METADATA


def _parse_both(text: str | bytes) -> CallStart | None:
    try:
        msg = call(parse_json, text, MAX_TEXT)
    except ProtocolError as err:
        _check_error(err, JSON_CODES)
        return None
    assert isinstance(msg, dict) and isinstance(msg["type"], str)
    try:
        start = call(parse_start, msg, source=SOURCE, max_metadata_bytes=MAX_METADATA)
    except ProtocolError as err:
        _check_error(err, START_CODES)
        return None
    _check_start(start, msg)
    return start


@FUZZ
@given(valid_starts())
def test_valid_start_messages_are_accepted(msg):
    start = _parse_both(dumps(msg))
    assert start is not None
    # packet encodings (opus) are decoded at the ingest edge: the call carries 16-bit PCM
    decoded = "pcm_s16le" if msg["encoding"] in PACKET_ENCODINGS else msg["encoding"]
    assert (start.call_id, start.encoding, start.sample_rate) == (
        msg["call_id"], decoded, msg["sample_rate"])
    assert start.metadata == msg.get("metadata", {}) or "NaN" in dumps(msg.get("metadata"))


@FUZZ
@given(valid_starts().flatmap(mutated))
@example({"type": "start", "call_id": "abc\n", "encoding": "mulaw", "sample_rate": 8000})
@example({"type": "start", "call_id": "a", "encoding": "mulaw", "sample_rate": 8000,
          "channel_roles": ["caller\n"]})
@example({"type": "start", "call_id": "a", "encoding": "mulaw", "sample_rate": 8000.0,
          "channels": 1.0})
@example({"type": "start", "call_id": "a", "encoding": "mulaw", "sample_rate": 8000,
          "channels": True})
def test_mutated_start_messages(msg):
    _parse_both(dumps(msg))


@FUZZ
@given(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    valid_starts().map(lambda m: dumps(m).encode()).flatmap(corrupted),
    json_values.map(dumps),
))
@example("1" * 5000)                       # an integer beyond int()'s digit limit
@example('{"type": "start", "x": ' + "9" * 4400 + "}")
@example(deep_json(5000))                  # nesting beyond the recursion limit
@example(deep_json(3000, "{").encode())
@example(b"\xff\xfe{}")                    # not UTF-8
@example('{"type": "\ud800"}')             # a lone surrogate
def test_any_text_or_bytes(data):
    _parse_both(data)


@FUZZ
@given(valid_starts(), st.integers(0, 3), st.sampled_from(["é", "€", "\U0001f600", " "]))
def test_text_size_limit_counts_bytes(msg, slack, pad):
    """A message over the limit in UTF-8 bytes is refused, whatever its character count."""
    text = dumps({**msg, "metadata": {"pad": ""}})
    room = MAX_TEXT - len(text.encode())
    n = room // len(pad.encode()) + 1 + slack
    big = text.replace('"pad": ""', f'"pad": "{pad * n}"')
    assert len(big.encode()) > MAX_TEXT
    for form in (big, big.encode()):
        try:
            parse_json(form, MAX_TEXT)
        except ProtocolError as err:
            assert err.code == "frame_too_large"
        else:
            raise AssertionError(f"{len(big.encode())} bytes accepted (limit {MAX_TEXT})")


@FUZZ
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.integers(0, 400))
def test_metadata_size_limit(metadata, limit):
    msg = {"type": "start", "call_id": "c1", "encoding": "mulaw", "sample_rate": 8000,
           "metadata": metadata}
    try:
        start = parse_start(msg, source=SOURCE, max_metadata_bytes=limit)
    except ProtocolError as err:
        assert err.code == "frame_too_large"
        assert len(json.dumps(metadata)) > limit
    else:
        assert len(json.dumps(start.metadata)) <= limit


# --------------------------------------------------------------------------- audio frames

@FUZZ
@given(st.sampled_from(ENCODINGS), st.integers(1, 4), st.binary(max_size=600))
@example("float32le", 1, b"\x00\x00\xc0\x7f")   # NaN
@example("float32le", 1, b"\x00\x00\x80\x7f")   # +inf
@example("pcm_s16le", 2, b"\x00\x00\x00")       # a partial frame
def test_decode_any_bytes(encoding, channels, data):
    width = BYTES_PER_SAMPLE[encoding] * channels
    try:
        x = call(decode, data, encoding, channels)
    except AudioFormatError:
        assert len(data) % width or encoding == "float32le"
        return
    assert len(data) % width == 0
    assert x.dtype == np.float32 and x.shape == (len(data) // width, channels)
    assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= 1.0)


@FUZZ
@given(st.sampled_from(ENCODINGS), st.integers(1, 2), st.integers(0, 400), st.data())
def test_decode_length_matches_payload(encoding, channels, frames, data):
    """N whole frames of any bytes decode to exactly N samples per channel."""
    width = BYTES_PER_SAMPLE[encoding] * channels
    if encoding == "float32le":
        values = data.draw(st.lists(st.floats(-1, 1, width=32), min_size=frames * channels,
                                    max_size=frames * channels))
        payload = np.asarray(values, dtype="<f4").tobytes()
    else:
        payload = data.draw(st.binary(min_size=frames * width, max_size=frames * width))
    x = decode(payload, encoding, channels)
    assert x.shape == (frames, channels)
    if encoding in ("mulaw", "alaw"):
        assert x.size == len(payload)  # one byte, one sample
    if encoding == "pcm_s16le" and frames:
        ref = np.frombuffer(payload, "<i2").reshape(-1, channels) / 32768.0
        np.testing.assert_allclose(x, ref, rtol=0, atol=1e-7)


@FUZZ
@given(st.sampled_from(ENCODINGS), st.integers(1, 2), st.binary(min_size=1, max_size=64))
def test_decode_rejects_unknown_encodings_and_partial_frames(encoding, channels, data):
    try:
        decode(data, encoding + "x", channels)
    except AudioFormatError:
        pass
    else:
        raise AssertionError("unknown encoding accepted")
    width = BYTES_PER_SAMPLE[encoding] * channels
    if len(data) % width:
        try:
            decode(data, encoding, channels)
        except AudioFormatError:
            pass
        else:
            raise AssertionError("partial frame accepted")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


@FUZZ
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4),
       st.dictionaries(st.sampled_from(["type", "metadata", "call_id", "x"]), json_values,
                       max_size=3), st.integers(0, 200))
def test_update_messages_merge_or_are_refused(current, msg, limit):
    msg = {**msg, "type": "update"}
    current = {k: v for k, v in current.items() if v is not None}
    try:
        merged = apply_update(msg, current, max_metadata_bytes=limit)
    except ProtocolError as err:
        _check_error(err, {"bad_message", "frame_too_large"})
        return
    changes = msg["metadata"]
    assert set(msg) <= {"type", "metadata"} and isinstance(changes, dict)
    assert len(json.dumps(merged)) <= limit and None not in merged.values()
    for key in {*current, *changes}:
        if changes.get(key, current.get(key)) is None:
            assert key not in merged
        else:
            assert merged[key] == changes.get(key, current.get(key))


@FUZZ
@given(st.dictionaries(st.sampled_from(["type", "channel", "detail", "x"]),
                       json_values | st.sampled_from(["caller", "agent", "left", "LEFT"]),
                       max_size=4))
def test_channel_end_messages_name_a_channel_or_are_refused(msg):
    msg = {**msg, "type": "channel_end"}
    try:
        role, detail = parse_channel_end(msg, ("caller", "agent"))
    except ProtocolError as err:
        _check_error(err, {"bad_message"})
        return
    assert role in ("caller", "agent") and set(msg) <= {"type", "channel", "detail"}
    assert detail is None or re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", detail)
