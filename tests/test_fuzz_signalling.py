"""Fuzzing the HTTP inputs of the web listener: the WebRTC offer body and SSE Last-Event-ID.

Property: any body/header either parses to a well-formed result or raises the layer's error
(SignallingError, answered with its HTTP status; FeedRequestError, answered with 400), never
another exception (which would be a 500), never a hang.
"""

from __future__ import annotations

import json
import re

from fuzzing import FUZZ, call, corrupted, deep_json, dumps, json_values, mutated
from hypothesis import example, given
from hypothesis import strategies as st

from nes2net_stream.web.feeds import (
    STREAMS,
    FeedRequestError,
    format_cursor,
    parse_cursor,
    parse_query,
)
from nes2net_stream.web.signalling import SignallingError, check_sdp, parse_offer

MAX_METADATA = 2048
SDP = ("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
       "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n"
       "a=ice-pwd:0123456789abcdefghijkl\r\na=fingerprint:sha-256 AA:BB\r\n"
       "a=rtpmap:111 opus/48000/2\r\n")
CALL_ID = r"[A-Za-z0-9][A-Za-z0-9._:@+/=-]{0,119}"
STREAM_ID = r"[0-9]{1,20}-[0-9]{1,20}"

offers = st.fixed_dictionaries(
    {"type": st.just("offer"), "sdp": st.just(SDP)},
    optional={"call_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True),
              "metadata": st.dictionaries(st.text(max_size=6), json_values, max_size=3),
              "channel_role": st.sampled_from(["caller", "agent", "customer"])})


def offer(body):
    try:
        req = call(parse_offer, body, max_metadata_bytes=MAX_METADATA)
    except SignallingError as err:
        assert err.status in (400, 413) and err.code and err.message
        json.dumps(err.to_json())
        return None
    assert re.fullmatch(CALL_ID, req.call_id), req.call_id
    assert re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", req.channel_role)
    assert isinstance(req.metadata, dict) and len(json.dumps(req.metadata)) <= MAX_METADATA
    check_sdp(req.sdp)
    return req


@FUZZ
@given(offers)
def test_valid_offers(doc):
    req = offer(dumps(doc).encode())
    if len(json.dumps(doc.get("metadata", {}))) <= MAX_METADATA:
        assert req is not None and req.sdp == SDP
        assert req.call_id == doc.get("call_id", req.call_id)


@FUZZ
@given(st.one_of(offers.flatmap(mutated).map(lambda d: dumps(d).encode()),
                 offers.map(lambda d: dumps(d).encode()).flatmap(corrupted),
                 st.binary(max_size=200), json_values.map(lambda v: dumps(v).encode())))
@example(b"1" * 5000)                                  # beyond int()'s digit limit
@example(deep_json(5000).encode())                     # beyond the recursion limit
@example(json.dumps({"type": "offer", "sdp": SDP, "call_id": "abc\n"}).encode())
@example(json.dumps({"type": "offer", "sdp": SDP, "channel_role": "caller\n"}).encode())
@example(b"\xff\xfe")
def test_fuzz_offer_bodies(body):
    offer(body)


@FUZZ
@given(st.text(max_size=300) | st.sampled_from([SDP, SDP.replace("\r\n", "\n"), "v=0\n",
                                                SDP + "\x00", SDP.replace("m=", "M=")]))
def test_fuzz_sdp(text):
    try:
        call(check_sdp, text)
    except SignallingError as err:
        assert (err.status, err.code) == (400, "bad_sdp")
    else:
        assert text.replace("\r\n", "\n").split("\n")[0] == "v=0" or text.startswith("\n")


stream_ids = st.tuples(st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 64 - 1)).map(
    lambda t: f"{t[0]}-{t[1]}")
cursors = st.tuples(stream_ids | st.just("-"), stream_ids | st.just("-")).map(",".join)
streams_sel = st.sampled_from([("alerts",), ("scores",), ("alerts", "scores")])


@FUZZ
@given(st.one_of(cursors, cursors.map(str.encode).flatmap(corrupted).map(
    lambda b: b.decode("utf-8", "replace")), st.text(max_size=60)), streams_sel)
@example("1-1\n,2-2", ("alerts", "scores"))          # a trailing newline inside
@example("١-١,2-2", ("alerts", "scores"))            # non-ASCII digits
@example("99999999999999999999-0,-", ("alerts",))   # above Redis's 64-bit ids
def test_fuzz_last_event_id(text, streams):
    try:
        cursor = call(parse_cursor, text, streams)
    except FeedRequestError:
        return
    assert set(cursor) <= set(streams)
    for value in cursor.values():  # every id is one Redis accepts in XREAD
        assert re.fullmatch(STREAM_ID, value), value
        assert all(int(part) < 2 ** 64 for part in value.split("-"))
    assert parse_cursor(format_cursor(cursor), streams) == cursor


@FUZZ
@given(cursors, streams_sel)
def test_valid_cursors_round_trip(text, streams):
    cursor = parse_cursor(text, streams)
    assert parse_cursor(format_cursor(cursor), streams) == cursor


@FUZZ
@given(st.dictionaries(st.sampled_from(["streams", "history_s", "call_id", "last_event_id", "x"]),
                       st.text(max_size=20) | st.sampled_from(
                           ["alerts", "scores,alerts", "nan", "inf", "1e9", "-0", "86400"]),
                       max_size=5),
       st.none() | st.text(max_size=40) | cursors)
def test_fuzz_feed_query(query, last_event_id):
    try:
        q = call(parse_query, query, last_event_id)
    except FeedRequestError:
        return
    assert q.streams and set(q.streams) <= set(STREAMS)
    assert 0.0 <= q.history_s <= 24 * 3600
