import shutil

import numpy as np
import pytest
import soundfile as sf
from helpers import tone_bursts

from nes2net_stream.audio import g711
from nes2net_stream.audio.io import load_audio, resample
from nes2net_stream.errors import AudioError


def write(path, x, rate, subtype="PCM_16"):
    sf.write(str(path), x, rate, subtype=subtype)
    return path


def test_reads_and_resamples_any_rate(tmp_path):
    x = tone_bursts(2.0, 11025)
    clip = load_audio(write(tmp_path / "a.wav", x, 11025))
    assert clip.sample_rate == 16000 and clip.source_rate == 11025
    assert abs(clip.duration_s - 2.0) < 1e-3
    native = load_audio(tmp_path / "a.wav", sample_rate=None)
    assert native.sample_rate == 11025 and len(native.samples) == len(x)


def test_flac_and_stereo_channel_selection(tmp_path):
    left = tone_bursts(1.0, 16000, seed=1)
    right = np.zeros_like(left) + 0.001 * np.sign(np.arange(left.size) % 2 - 0.5)
    path = write(tmp_path / "s.flac", np.stack([left, right], axis=1), 16000)
    mix = load_audio(path)
    assert mix.source_channels == 2
    assert np.allclose(mix.samples, (left + right) / 2, atol=1e-4)
    assert np.allclose(load_audio(path, channel=0).samples, left, atol=1e-4)
    with pytest.raises(AudioError, match="channel 2 does not exist"):
        load_audio(path, channel=2)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_gsm_through_sox(tmp_path):
    import subprocess

    wav = write(tmp_path / "in.wav", tone_bursts(1.0, 8000), 8000)
    gsm = tmp_path / "in.gsm"
    subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", str(gsm)], check=True)
    clip = load_audio(gsm)
    assert clip.source_rate == 8000 and abs(clip.duration_s - 1.0) < 0.05


@pytest.mark.parametrize("make,match", [
    (lambda p: p, "not found"),
    (lambda p: (p.write_bytes(b""), p)[1], "empty"),
    (lambda p: (p.write_bytes(b"RIFF....WAVEjunkjunkjunk" * 10), p)[1], "cannot"),
    (lambda p: write(p, np.zeros(16000, np.float32), 16000), "silent"),
    (lambda p: write(p, tone_bursts(0.05), 16000), "shorter than"),
    (lambda p: write(p, np.where(np.arange(16000) == 5, np.nan, 0.1).astype(np.float32), 16000,
                     "FLOAT"), "NaN"),
])
def test_bad_audio_gives_specific_errors(tmp_path, make, match):
    path = make(tmp_path / "bad.wav")
    with pytest.raises(AudioError, match=match):
        load_audio(path)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        load_audio(tmp_path)


def test_resample_identity_and_length():
    x = tone_bursts(1.0, 8000)
    assert resample(x, 8000, 8000) is not None
    assert len(resample(x, 8000, 16000)) == 16000


def test_g711_matches_reference_values():
    # G.711 mu-law: 0 -> 0xFF, max positive -> 0x80, max negative -> 0x00
    pcm = np.array([0, 32767, -32768, 1000, -1000], dtype=np.int16)
    assert list(g711.mulaw_encode(pcm)[:3]) == [0xFF, 0x80, 0x00]
    # A-law: 0 -> 0xD5, largest positive -> 0xAA, largest negative -> 0x2A
    assert list(g711.alaw_encode(pcm)[:3]) == [0xD5, 0xAA, 0x2A]
    assert g711.mulaw_decode(bytes([0xFF]))[0] == 0
    assert g711.alaw_decode(bytes([0xD5]))[0] == 8
    # decode(encode(x)) error bounded by the segment step (about 3 % relative)
    x = np.arange(-32768, 32768, 7, dtype=np.int16)
    for enc, dec in ((g711.mulaw_encode, g711.mulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        y = dec(enc(x)).astype(np.int32)
        big = np.abs(x.astype(np.int32)) > 1024
        assert np.max(np.abs(y - x)[big] / np.abs(x[big])) < 0.04
        # every code is a fixed point of decode -> encode
        codes = np.arange(256, dtype=np.uint8)
        again = enc(dec(codes))
        same = again == codes
        assert same.sum() >= 255  # mu-law has both +0 (0xFF) and -0 (0x7F)


def test_g711_matches_audioop_when_available():
    audioop = pytest.importorskip("audioop")
    x = np.arange(-32768, 32768, dtype=np.int16)
    assert np.array_equal(np.frombuffer(audioop.lin2ulaw(x.tobytes(), 2), np.uint8),
                          g711.mulaw_encode(x))
    assert np.array_equal(np.frombuffer(audioop.lin2alaw(x.tobytes(), 2), np.uint8),
                          g711.alaw_encode(x))
    codes = bytes(range(256))
    assert np.array_equal(np.frombuffer(audioop.ulaw2lin(codes, 2), np.int16),
                          g711.mulaw_decode(codes))
