"""RFC 4867 AMR / AMR-WB payloads and the G.729 decoder: re-packing, packing detection, errors."""

import random

import numpy as np
import pytest
from gwsupport import FUZZ_EXAMPLES, amr_nb_frames, amr_pack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nes2net_gateways.rtp_amr import (
    AMR,
    AMR_WB,
    NO_DATA,
    AmrPayloadError,
    depacketize,
    detect_octet_aligned,
    octet_aligned_in,
)
from nes2net_gateways.rtp_payload import CODECS

av = pytest.importorskip("av")


def random_frame(rng: random.Random, flavour, ft: int) -> bytes:
    """A storage-format frame of type ``ft`` with random speech bits."""
    nbits = flavour.size(ft)
    nbytes = (nbits + 7) // 8
    speech = rng.getrandbits(nbits) << (nbytes * 8 - nbits) if nbits else 0
    return bytes([(ft << 3) | (rng.getrandbits(1) << 2)]) + speech.to_bytes(nbytes, "big")


@pytest.mark.parametrize("flavour", [AMR, AMR_WB], ids=["amr", "amr-wb"])
@pytest.mark.parametrize("octet", [True, False], ids=["octet-aligned", "bandwidth-efficient"])
def test_every_frame_type_round_trips(flavour, octet):
    rng = random.Random(3)
    types = [*range(len(flavour.bits)), NO_DATA]
    for ft in types:  # one frame per payload, then all of them in one payload
        frame = random_frame(rng, flavour, ft)
        assert depacketize(amr_pack([frame], flavour.bits, octet), flavour, octet) == [frame]
    frames = [random_frame(rng, flavour, ft) for ft in types]
    payload = amr_pack(frames, flavour.bits, octet)
    assert depacketize(payload, flavour, octet) == frames


@pytest.mark.parametrize("flavour", [AMR, AMR_WB], ids=["amr", "amr-wb"])
def test_packing_is_detected_from_a_payload(flavour):
    rng = random.Random(4)
    hits = {True: 0, False: 0}
    for _ in range(200):
        frames = [random_frame(rng, flavour, rng.randrange(len(flavour.bits) - 1))
                  for _ in range(rng.choice((1, 1, 2, 3)))]
        for octet in (True, False):
            hits[octet] += detect_octet_aligned(amr_pack(frames, flavour.bits, octet),
                                                flavour) == octet
    assert hits == {True: 200, False: 200}


def test_malformed_payloads_are_refused():
    frame = random_frame(random.Random(5), AMR, 7)
    good = amr_pack([frame], AMR.bits, octet=True)
    with pytest.raises(AmrPayloadError, match="shorter"):
        depacketize(good[:-1], AMR, True)
    with pytest.raises(AmrPayloadError, match="longer"):
        depacketize(good + b"\x00", AMR, True)
    with pytest.raises(AmrPayloadError, match="reserved frame type"):
        depacketize(bytes([0xF0, 12 << 3]), AMR, True)
    with pytest.raises(AmrPayloadError, match="reserved bits"):
        depacketize(bytes([0xF1]) + good[1:], AMR, True)
    with pytest.raises(AmrPayloadError, match="too long"):
        depacketize(bytes([0xF0]) + bytes([0x80 | (15 << 3)]) * 70, AMR, True)


def test_fmtp_octet_align():
    assert octet_aligned_in("octet-align=1; mode-set=0,2,5,7")
    assert octet_aligned_in("mode-change-capability=2;OCTET-ALIGN = 1")
    assert not octet_aligned_in("octet-align=0") and not octet_aligned_in("")


@pytest.mark.parametrize("octet", [True, False])
def test_amr_decoder_matches_ffmpeg_on_the_frames(octet):
    """Decoding re-packed payloads gives what FFmpeg gives for the encoder's own frames."""
    t = np.arange(8000 * 2) / 8000
    frames = amr_nb_frames((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    ref = av.CodecContext.create("amrnb", "r")
    ref.sample_rate, ref.layout = 8000, "mono"
    ref.open()
    want = np.concatenate([f.to_ndarray().reshape(-1) for p in frames
                           for f in ref.decode(av.Packet(p))])
    want = (np.clip(want, -1, 1) * 32767).astype("<i2")
    dec = CODECS["AMR"].decoder(8000, "octet-align=1" if octet else "")
    got, units = zip(*(dec.decode(amr_pack([f], AMR.bits, octet)) for f in frames),
                     strict=True)
    assert sum(units) == len(frames) * 160
    assert np.array_equal(np.frombuffer(b"".join(got), "<i2"), want)
    # NO_DATA: 20 ms of silence; a payload that is not AMR: dropped and counted
    assert dec.decode(amr_pack([bytes([NO_DATA << 3])], AMR.bits, octet)) == (b"\0" * 320, 160)
    assert dec.decode(b"\x00") == (b"", 0) and dec.errors == 1


def test_amr_wb_decoder_frame_sizes_and_auto_packing():
    rng = random.Random(6)
    dec = CODECS["AMR-WB"].decoder(16000)  # no SDP: the packing is read off the first payload
    frames = [random_frame(rng, AMR_WB, 2) for _ in range(2)]
    pcm, units = dec.decode(amr_pack(frames, AMR_WB.bits, octet=False))
    assert units == 640 and len(pcm) == 1280 and dec.octet is False


def test_g729_frames_and_sid():
    rng = random.Random(7)
    frames = bytes(rng.getrandbits(8) for _ in range(20))
    ref = av.CodecContext.create("g729", "r")
    ref.sample_rate, ref.layout = 8000, "mono"
    ref.open()
    want = np.concatenate([f.to_ndarray().reshape(-1) for f in ref.decode(av.Packet(frames))])
    dec = CODECS["G729"].decoder(8000)
    pcm, units = dec.decode(frames)
    assert units == 160 and np.array_equal(np.frombuffer(pcm, "<i2"), want.astype("<i2"))
    pcm, units = dec.decode(frames[:10] + b"\x12\x34")  # a speech frame, then Annex B SID
    assert units == 160 and pcm[160:] == b"\0" * 160
    assert dec.decode(b"\x12\x34") == (b"\0" * 160, 80)
    assert dec.decode(b"\x00" * 15) == (b"", 0) and dec.errors == 1


@settings(derandomize=True, max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.booleans(), st.sampled_from([AMR, AMR_WB]))
def test_depacketize_fuzz_raises_only_its_error(payload, octet, flavour):
    try:
        frames = depacketize(payload, flavour, octet)
    except AmrPayloadError:
        return
    for f in frames:
        ft = f[0] >> 3
        assert len(f) == 1 + (flavour.size(ft) + 7) // 8
