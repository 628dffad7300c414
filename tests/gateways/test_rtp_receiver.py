"""The RTP receiver of the SIPREC and Asterisk External Media gateways: ordering, packet-loss
concealment, gap filling, and the concealment rule shared with training (audio/plc.py)."""

import struct

import numpy as np
import pytest
from gwsupport import FUZZ_EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st
from nes2net_gateways.rtp import RtpReceiver, parse_rtp
from nes2net_gateways.rtp_payload import CODECS, conceal_audio

from nes2net_stream.audio.g711 import mulaw_decode, mulaw_encode
from nes2net_stream.audio.plc import PLC_FADE, conceal, lose_packets
from nes2net_stream.data.augment import packet_loss

SILENCE = b"\xff"  # μ-law zero


def rtp(seq, ts, payload=b"\x01" * 160, pt=0, ssrc=7):
    return parse_rtp(struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
                     + payload)


def tone(i: int, n: int = 160) -> bytes:
    """A distinct μ-law packet per index (a sine of its own frequency)."""
    t = np.arange(n) / 8000.0
    return mulaw_encode((8000 * np.sin(2 * np.pi * (200 + 10 * i) * t)).astype(np.int16)
                        ).tobytes()


def receiver(**kw) -> RtpReceiver:
    return RtpReceiver(0, 8000, CODECS["PCMU"].decoder(8000), **kw)


# ---------------------------------------------------------------- concealment rule
def test_conceal_repeats_the_last_packet_fading_each_time():
    last = np.array([1000, -2000, 3000, -4000], dtype=np.int16)
    out = conceal(last, 14)
    assert out.dtype == np.int16 and len(out) == 14
    gains = [1.0, PLC_FADE, PLC_FADE ** 3, PLC_FADE ** 6]  # each repeat fades once more
    for k, gain in enumerate(gains):
        part = out[4 * k:4 * k + 4]
        np.testing.assert_array_equal(part, np.rint(last[:len(part)] * gain).astype(np.int16))
    assert not conceal(np.zeros(0, np.int16), 5).any() and len(conceal(last, 0)) == 0


def test_lose_packets_fills_with_concealment_or_silence():
    x = np.random.default_rng(1).standard_normal(8000)
    kept = lose_packets(x, 160, 0.2, np.random.default_rng(2))
    silent = lose_packets(x, 160, 0.2, np.random.default_rng(2), fill="silence")
    lost = [i for i in range(50) if not np.array_equal(silent[160 * i:160 * (i + 1)],
                                                      x[160 * i:160 * (i + 1)])]
    assert 0 not in lost and 3 <= len(lost) <= 20
    for i in lost:
        assert not silent[160 * i:160 * (i + 1)].any()
        # a concealed packet repeats the one before it (itself concealed in a run), fading
        ratio = kept[160 * i:160 * (i + 1)] / kept[160 * (i - 1):160 * i]
        assert np.allclose(ratio, ratio[0]) and 0 < ratio[0] <= 1
    with pytest.raises(ValueError):
        lose_packets(x, 0, 0.1, np.random.default_rng(0))


def test_training_augmentation_conceals_with_the_same_rule():
    x = np.random.default_rng(3).standard_normal(4000)
    np.testing.assert_array_equal(
        packet_loss(x, 80, 0.1, np.random.default_rng(4)),
        lose_packets(x, 80, 0.1, np.random.default_rng(4), at_least_one=True))


@pytest.mark.parametrize("encoding", ["mulaw", "alaw", "pcm_s16le", "pcm_s16be"])
def test_concealment_in_each_encoding_matches_the_linear_rule(encoding):
    from nes2net_stream.audio.g711 import alaw_decode, alaw_encode

    pcm = (6000 * np.sin(np.arange(160) / 5.0)).astype(np.int16)
    to_bytes = {"mulaw": lambda a: mulaw_encode(a).tobytes(),
                "alaw": lambda a: alaw_encode(a).tobytes(),
                "pcm_s16le": lambda a: a.astype("<i2").tobytes(),
                "pcm_s16be": lambda a: a.astype(">i2").tobytes()}[encoding]
    to_pcm = {"mulaw": mulaw_decode, "alaw": alaw_decode,
              "pcm_s16le": lambda b: np.frombuffer(b, "<i2"),
              "pcm_s16be": lambda b: np.frombuffer(b, ">i2")}[encoding]
    last = to_bytes(pcm)
    out = conceal_audio(last, 400, encoding)
    assert len(out) == len(to_bytes(np.zeros(400, np.int16)))
    want = conceal(to_pcm(last).astype(np.int16), 400)
    got = to_pcm(out).astype(np.int32)
    # G.711 re-quantises the faded repeats: within one quantisation step (≤ 1/16 of the level)
    assert np.all(np.abs(got - want) <= np.abs(want) / 16 + 16)


# ---------------------------------------------------------------- receiver
def test_lost_packets_are_concealed_then_filled_with_silence():
    r = receiver(reorder=0)  # losses released at once (with reordering: test below)
    assert r.push(rtp(65534, 0, tone(0))) == [tone(0)]
    out = r.push(rtp(1, 480, tone(3)))  # 65535 and 0 lost across the wrap: 40 ms concealed
    assert len(out) == 2 and out[1] == tone(3)
    assert out[0][:160] == tone(0)  # first repeat at full level
    assert np.abs(mulaw_decode(out[0][160:])).sum() < np.abs(mulaw_decode(tone(0))).sum()
    r.push(rtp(2, 640, tone(4)))
    out = r.push(rtp(8, 1600, tone(8)))  # five lost (100 ms): 60 ms concealed, 40 ms silence
    assert [len(x) for x in out] == [480, 320, 160] and out[1] == SILENCE * 320
    s = r.stats
    assert (s.packets, s.lost, s.late, s.reordered) == (4, 7, 0, 0)
    assert s.concealed_s == pytest.approx(0.04 + 0.06) and s.filled_s == pytest.approx(0.04)


def test_silence_suppression_is_filled_with_silence_not_concealed():
    r = receiver(max_gap_s=2.0)
    r.push(rtp(1, 0, tone(1)))
    # the next packet follows in sequence but its timestamp jumps 1 s: the sender paused
    assert r.push(rtp(2, 160 + 8000, tone(2)))[0] == SILENCE * 8000
    assert r.push(rtp(3, 8320 + 160 + 80000, tone(3)))[0] == SILENCE * 16000  # capped at 2 s
    assert r.stats.concealed_s == 0 and r.stats.filled_s == pytest.approx(3.0)


def test_packets_out_of_order_are_put_back_in_order():
    r = receiver(reorder=4)
    assert r.push(rtp(1, 0, tone(1))) == [tone(1)]
    assert r.push(rtp(3, 320, tone(3))) == []  # held back: 2 is missing
    assert r.push(rtp(2, 160, tone(2))) == [tone(2), tone(3)]
    assert r.push(rtp(4, 480, tone(4))) == [tone(4)]  # in order: never held
    assert r.push(rtp(3, 320, tone(3))) == []  # duplicate
    s = r.stats
    assert (s.packets, s.reordered, s.lost, s.late, s.concealed_s) == (4, 1, 0, 1, 0)


def test_a_missing_packet_is_given_up_after_the_reorder_window():
    r = receiver(reorder=2)
    r.push(rtp(1, 0, tone(1)))
    assert r.push(rtp(3, 320, tone(3))) == []
    assert r.push(rtp(4, 480, tone(4))) == []
    out = r.push(rtp(5, 640, tone(5)))  # three held > 2: 2 is lost, concealed
    assert out[0][:160] == tone(1) and out[1:] == [tone(3), tone(4), tone(5)]
    assert r.push(rtp(2, 160, tone(2))) == []  # too late now
    assert (r.stats.lost, r.stats.late) == (1, 1)


def test_flush_releases_held_packets_and_a_new_source_flushes_first():
    r = receiver(reorder=4)
    r.push(rtp(1, 0, tone(1)))
    r.push(rtp(3, 320, tone(3)))
    out = r.flush()
    assert len(out) == 2 and out[0][:160] == tone(1) and out[1] == tone(3)
    assert r.flush() == []
    assert r.push(rtp(5, 640, tone(5))) == []  # held: 4 is missing
    out = r.push(rtp(9000, 123456, tone(9), ssrc=8))  # a new source: 5 is released first
    assert len(out) == 3 and out[0][:160] == tone(3) and out[1:] == [tone(5), tone(9)]
    assert r.push(rtp(30000, 124000, tone(10), ssrc=8)) == [tone(10)]  # sequence jump
    assert r.stats.resyncs == 2 and r.stats.lost == 2  # 2, then 4


def test_no_reordering_and_no_concealment_when_configured_off():
    r = receiver(reorder=0, conceal_s=0.0)
    r.push(rtp(1, 0, tone(1)))
    assert r.push(rtp(3, 320, tone(3))) == [SILENCE * 160, tone(3)]
    assert r.push(rtp(2, 160, tone(2))) == []


def test_l16_keeps_whole_samples():
    r = RtpReceiver(96, 16000, CODECS["L16"].decoder(16000))
    assert r.push(rtp(1, 0, b"\x01\x02\x03", pt=96)) == [b"\x01\x02"]
    assert r.push(rtp(2, 3, b"\x00\x00", pt=96)) == [b"\x00\x00" * 2, b"\x00\x00"]
    assert r.push(rtp(2, 3, b"", pt=101)) == [] and r.stats.other == 1


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.integers(0, 6), st.integers(0, 65535),
       st.lists(st.floats(0.0, 1.0), min_size=2, max_size=60))
def test_any_reordering_within_the_window_is_undone(reorder, seq0, jitter):
    """Packets delayed by less than the window come out exactly as sent, losing nothing
    (the first to arrive starts the stream: one sent before it would be late)."""
    n = len(jitter)
    arrival = sorted(range(n), key=lambda i: i + jitter[i] * reorder if i else -1.0)
    r = receiver(reorder=reorder)
    out = []
    for i in arrival:
        out += r.push(rtp(seq0 + i, 160 * i, tone(i % 7)))
    out += r.flush()
    assert b"".join(out) == b"".join(tone(i % 7) for i in range(n))
    assert (r.stats.lost, r.stats.late, r.stats.concealed_s) == (0, 0, 0)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=30))
def test_rtp_never_raises(datagrams):
    r = RtpReceiver(0, 8000, CODECS["PCMU"].decoder(8000), max_gap_s=0.1)
    total = 0
    for d in datagrams:
        p = parse_rtp(b"\x80" + d)
        if p is not None:
            total += sum(len(x) for x in r.push(p))
    total += sum(len(x) for x in r.flush())
    assert total <= sum(len(d) for d in datagrams) + 800 * (len(datagrams) + 1)
