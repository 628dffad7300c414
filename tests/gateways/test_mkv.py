"""The incremental Matroska reader against fragments written by the tests' own writer."""

import pytest
from fuzzing import FUZZ, corrupted
from hypothesis import given
from hypothesis import strategies as st
from kvs_fake import el, mkv_fragment, simple_tag
from nes2net_gateways.amazon_connect import parse_registration
from nes2net_gateways.mkv import Block, FragmentStart, MkvError, MkvReader, Tag

from nes2net_stream.service.errors import ProtocolError

CUSTOMER, AGENT = bytes(range(256)) * 5, bytes(reversed(range(256))) * 5  # 1,280 bytes each


def two_fragments() -> bytes:
    return mkv_fragment(0, "c-1", CUSTOMER, AGENT) + mkv_fragment(1, "c-2", AGENT, CUSTOMER)


def read_all(data: bytes, piece: int) -> tuple[list, MkvReader]:
    reader, out = MkvReader(), []
    for i in range(0, len(data), piece):
        out.extend(reader.feed(data[i:i + piece]))
    return out, reader


@pytest.mark.parametrize("piece", [1, 7, 320, 1 << 20])
def test_fragments_read_alike_whatever_the_pieces(piece):
    items, reader = read_all(two_fragments(), piece)
    assert [type(i) for i in items].count(FragmentStart) == 2
    blocks = [i for i in items if isinstance(i, Block)]
    assert b"".join(b.data for b in blocks if b.track == 1) == CUSTOMER + AGENT
    assert b"".join(b.data for b in blocks if b.track == 2) == AGENT + CUSTOMER
    tags = [(t.name, t.value) for t in items if isinstance(t, Tag)]
    assert ("ContactId", "c-1") in tags and ("ContactId", "c-2") in tags
    assert [t.name for t in items if isinstance(t, Tag)][:1] == [
        "AWS_KINESISVIDEO_FRAGMENT_NUMBER"]
    t1, t2 = reader.tracks[1], reader.tracks[2]
    assert (t1.name, t1.codec, t1.sampling_frequency, t1.channels) == (
        "AUDIO_FROM_CUSTOMER", "A_PCM/INT/LIT", 8000.0, 1)
    assert t2.name == "AUDIO_TO_CUSTOMER"


def test_large_unknown_elements_are_skipped_as_they_stream_past():
    void = el(0xEC, b"\0" * 300_000)  # bigger than any element the reader keeps
    items, _ = read_all(void + two_fragments(), 4096)
    assert sum(len(i.data) for i in items if isinstance(i, Block)) == 4 * 1280


def test_streams_it_cannot_follow_raise_mkv_error():
    with pytest.raises(MkvError, match="laced"):
        MkvReader().feed(el(0xA3, b"\x81\x00\x00\x02" + b"\0" * 8))
    with pytest.raises(MkvError, match="unknown size"):
        MkvReader().feed(b"\xa3\x01\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(MkvError, match="bytes"):
        MkvReader().feed(b"\xa3\x01\x00\x00\x00\x10\x00\x00\x00")
    with pytest.raises(MkvError, match="variable-size"):
        MkvReader().feed(b"\x00\x81")


def test_tags_before_the_audio_are_read_first():
    frag = mkv_fragment(0, "c-1", CUSTOMER, AGENT)
    tags = el(0x1254C367, el(0x7373, simple_tag("ContactId", "c-1")))
    cut = frag.index(b"\x1f\x43\xb6\x75")  # the cluster
    items, _ = read_all(frag[:cut] + tags + frag[cut:], 64)
    first = next(i for i in items if not isinstance(i, FragmentStart))
    assert first == Tag("ContactId", "c-1")


@FUZZ
@given(st.one_of(st.binary(max_size=400), st.sampled_from([two_fragments()]).flatmap(corrupted)),
       st.integers(1, 64))
def test_any_bytes_raise_only_mkv_error(data, piece):
    try:
        read_all(data, piece)
    except MkvError:
        pass


@FUZZ
@given(st.fixed_dictionaries(
    {"contact_id": st.text(max_size=12) | st.uuids().map(str),
     "stream_arn": st.sampled_from(["arn:aws:kinesisvideo:us-east-1:1:stream/s/1", "", "arn:"])},
    optional={"start_fragment_number": st.text("0123456789x", max_size=70) | st.integers(),
              "ani": st.text(max_size=5) | st.integers(), "custom": st.none() | st.just({}),
              "extra": st.just(1)}))
def test_contact_registrations_raise_only_protocol_errors(doc):
    import json

    try:
        got = parse_registration(json.dumps(doc).encode(), 16_384)
    except ProtocolError as err:
        assert err.code in ("bad_message", "bad_json")
    else:
        assert got["stream_arn"].startswith("arn:aws:kinesisvideo:")
