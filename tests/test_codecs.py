"""Codec round trips on real speech: length, rate, similarity, alignment, errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from nes2net_stream.audio.codecs import CODECS, available_codecs, encode_decode, get_codec
from nes2net_stream.audio.g711 import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode
from nes2net_stream.audio.io import float_to_pcm16, load_audio, pcm16_to_float, resample
from nes2net_stream.errors import AudioError, DependencyError

# Speech recordings shipped by Debian packages (pocketsphinx-testdata: 16 kHz wideband;
# codec2-examples and asterisk-core-sounds-en-wav: 8 kHz).
SPEECH_FILES = [
    Path("/usr/share/pocketsphinx/test/data/librivox/"
         "sense_and_sensibility_01_austen_64kb-0880.wav"),
    Path("/usr/share/codec2/wav/hts1a.wav"),
    Path("/usr/share/codec2/wav/mmt1.wav"),
    Path("/usr/share/asterisk/sounds/en_US_f_Allison/digits/1.wav"),
]
FS = 16000
_BAND = signal.butter(4, [200, 3400], btype="bandpass", fs=FS, output="sos")
#: Smallest telephone-band correlation with the input, per codec (default 0.9), on speech.
MIN_CORR = {"speex": 0.75, "speex_wb": 0.85, "amr_nb": 0.85}
#: Vocoders do not keep the waveform; they are aligned and compared on the energy envelope.
VOCODERS = {"codec2"}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    for path in SPEECH_FILES:
        if path.exists():
            return load_audio(path, sample_rate=FS).samples
    pytest.skip("no speech recording found (install codec2-examples)")


@pytest.fixture(scope="module")
def round_trips(speech: np.ndarray) -> dict[str, np.ndarray]:
    usable = set(available_codecs())
    return {name: encode_decode(speech, FS, name) for name in CODECS if name in usable}


def _band_limited(x: np.ndarray, codec: str) -> np.ndarray:
    rate = CODECS[codec].sample_rate
    return resample(resample(x, FS, rate), rate, FS)[: len(x)]


def _telephone_band(x: np.ndarray) -> np.ndarray:
    """200-3400 Hz, zero phase: AMR, Speex and Opus high-pass the rumble below ~100 Hz."""
    return signal.sosfiltfilt(_BAND, x)


def _envelope(x: np.ndarray, width: int = 160) -> np.ndarray:
    env = np.sqrt(np.convolve(x.astype(np.float64) ** 2, np.ones(width) / width, "same"))
    return env - env.mean()


def _lag(x: np.ndarray, y: np.ndarray, max_lag: int) -> int:
    """Lag (samples) at which ``y`` best matches ``x``; positive means ``y`` is late."""
    n = len(x)
    cc = np.fft.irfft(np.fft.rfft(y, 2 * n) * np.conj(np.fft.rfft(x, 2 * n)), 2 * n)
    window = np.concatenate([cc[-max_lag:], cc[: max_lag + 1]])
    return int(np.argmax(np.abs(window))) - max_lag


def test_all_codecs_listed_run_here() -> None:
    # Every codec in CODECS runs on the Debian packages the project installs.
    missing = sorted(set(CODECS) - set(available_codecs()))
    assert missing == [], f"codecs that do not run here: {missing}"


@pytest.mark.parametrize("codec", list(CODECS))
def test_round_trip_keeps_length_rate_and_speech(codec: str, speech: np.ndarray,
                                                 round_trips: dict[str, np.ndarray]) -> None:
    if codec not in round_trips:
        pytest.skip(f"{codec} does not run on this machine")
    y = round_trips[codec]
    assert y.dtype == np.float32 and y.shape == speech.shape
    assert np.all(np.isfinite(y)) and float(np.max(np.abs(y))) <= 1.0
    ref = _band_limited(speech, codec)
    if codec in VOCODERS:
        corr = np.corrcoef(_envelope(ref), _envelope(y))[0, 1]
        assert corr > 0.8, corr
    else:
        corr = np.corrcoef(_telephone_band(ref), _telephone_band(y))[0, 1]
        assert corr > MIN_CORR.get(codec, 0.9), corr
    # Not a no-op: the output differs from the input by far more than 16-bit rounding.
    assert float(np.max(np.abs(y - speech))) > 1e-3
    if codec != "pcm":
        assert float(np.max(np.abs(y - ref))) > 1e-3


@pytest.mark.parametrize("codec", list(CODECS))
def test_output_is_time_aligned(codec: str, speech: np.ndarray,
                                round_trips: dict[str, np.ndarray]) -> None:
    if codec not in round_trips:
        pytest.skip(f"{codec} does not run on this machine")
    y, ref = round_trips[codec], _band_limited(speech, codec)
    if codec in VOCODERS:
        lag = _lag(_envelope(ref), _envelope(y), max_lag=FS // 10)
        assert abs(lag) <= 5 * FS // 1000, f"{codec} is {lag / FS * 1000:.1f} ms off"
    else:
        lag = _lag(_telephone_band(ref), _telephone_band(y), max_lag=FS // 10)
        assert abs(lag) <= FS // 1000, f"{codec} is {lag / FS * 1000:.1f} ms off"


@pytest.mark.parametrize("codec,encode,decode", [("mulaw", mulaw_encode, mulaw_decode),
                                                 ("alaw", alaw_encode, alaw_decode)])
def test_g711_matches_reference_exactly(codec, encode, decode, speech: np.ndarray) -> None:
    x8 = resample(speech, FS, 8000)
    expected = pcm16_to_float(decode(encode(float_to_pcm16(x8))))
    np.testing.assert_array_equal(encode_decode(x8, 8000, codec), expected)


def test_pcm_is_narrowband_only(speech: np.ndarray, round_trips: dict[str, np.ndarray]) -> None:
    y = round_trips["pcm"]
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / FS)
    assert spectrum[freqs > 4100].sum() < 1e-6 * spectrum.sum()
    np.testing.assert_allclose(y, _band_limited(speech, "pcm"), atol=1e-4)


def test_lower_bitrate_is_noisier(speech: np.ndarray) -> None:
    ref = _band_limited(speech, "g726")

    def snr(bitrate: int) -> float:
        y = encode_decode(speech, FS, "g726", bitrate=bitrate)
        return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - y) ** 2)))

    assert snr(16000) + 6.0 < snr(40000)


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_other_input_rates_keep_rate_and_length(rate: int, speech: np.ndarray) -> None:
    x = resample(speech, FS, rate)[: rate + 123]
    for codec in ("gsm", "opus", "alaw"):
        y = encode_decode(x, rate, codec)
        assert y.shape == x.shape and y.dtype == np.float32
        assert np.corrcoef(_band_limited(x, codec) if rate == FS else x, y)[0, 1] > 0.7


def test_short_and_loud_input() -> None:
    x = np.full(50, 3.0, dtype=np.float32)  # out of range: clipped, not an error
    for codec in ("mulaw", "gsm", "mp3"):
        y = encode_decode(x, FS, codec)
        assert y.shape == (50,) and np.all(np.abs(y) <= 1.0)


def test_unknown_codec_and_bitrate_list_valid_values() -> None:
    x = np.zeros(1600, dtype=np.float32)
    with pytest.raises(AudioError, match="valid codecs: pcm, mulaw, alaw, gsm"):
        encode_decode(x, FS, "silk")
    with pytest.raises(AudioError, match="valid bitrates: 16000, 24000, 32000, 40000"):
        encode_decode(x, FS, "g726", bitrate=8000)
    assert get_codec("opus") == (CODECS["opus"], 16000)


@pytest.mark.parametrize("bad", [np.zeros((2, 100), np.float32), np.zeros(0, np.float32),
                                 np.array([0.1, np.nan] * 100, np.float32)])
def test_bad_audio_is_an_audio_error(bad: np.ndarray) -> None:
    with pytest.raises(AudioError):
        encode_decode(bad, FS, "gsm")


def _path_with(tmp_path: Path, *tools: str) -> str:
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed")
        os.symlink(found, tmp_path / tool)
    return str(tmp_path)


def test_missing_ffmpeg_names_the_package(tmp_path: Path, monkeypatch, speech) -> None:
    monkeypatch.setenv("PATH", _path_with(tmp_path, "sox"))
    with pytest.raises(DependencyError, match=r"needs ffmpeg.*apt-get install ffmpeg"):
        encode_decode(speech, FS, "opus")
    # sox alone still runs GSM and AMR-NB; the in-process codecs need nothing.
    assert available_codecs() == ["pcm", "mulaw", "alaw", "gsm", "amr_nb"]


def test_gsm_falls_back_to_ffmpeg_without_sox(tmp_path: Path, monkeypatch, speech) -> None:
    expected = encode_decode(speech, FS, "gsm")
    monkeypatch.setenv("PATH", _path_with(tmp_path, "ffmpeg"))
    y = encode_decode(speech, FS, "gsm")
    assert np.corrcoef(expected, y)[0, 1] > 0.99  # same GSM 06.10 bitstream, libgsm both ways
    with pytest.raises(DependencyError, match=r"needs sox.*apt-get install sox"):
        encode_decode(speech, FS, "amr_nb")


def test_no_tools_at_all(tmp_path: Path, monkeypatch, speech) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DependencyError, match="needs sox"):
        encode_decode(speech, FS, "gsm")
    assert available_codecs() == ["pcm", "mulaw", "alaw"]
