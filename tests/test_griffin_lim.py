"""Spoofing system A08: mel-spectrogram copy-synthesis with Griffin-Lim phase reconstruction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nes2net_stream.audio.io import resample
from nes2net_stream.data.corpus.griffin_lim import (
    RATE,
    _spectrum,
    griffin_lim,
    mel_basis,
    mel_copy_synthesis,
)
from nes2net_stream.data.corpus.systems import COPY_SYSTEMS, SYSTEMS, draw_voice, systems_in
from nes2net_stream.errors import AudioError

SPEECH = Path(__file__).parent / "fixtures" / "human_short.wav"
PARAMS = {"n_mels": 64, "n_fft": 1024, "iterations": 32, "momentum": 0.99,
          "log_floor_db": 80.0, "seed": 7}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    x, rate = sf.read(SPEECH, dtype="float32")
    assert rate == RATE
    return x


def _log_mel(y: np.ndarray) -> np.ndarray:
    filters, _ = mel_basis(40, 512)
    return np.log10(filters @ np.abs(_spectrum(y.astype(np.float64), 512, 128)) + 1e-6)


def test_mel_filters_are_triangles_over_the_band():
    filters, inverse = mel_basis(40, 512)
    assert filters.shape == (40, 257) and inverse.shape == (257, 40)
    assert filters.min() == 0.0 and filters.max() <= 1.0
    peaks = filters.argmax(axis=1)
    assert np.all(np.diff(peaks) > 0)  # centres rise with the index
    widths = (filters > 0).sum(axis=1)
    assert widths[-1] > 4 * widths[0]  # mel scale: wider filters at high frequencies
    # every bin between the first and last centre is covered by some filter
    assert np.all(filters[:, peaks[0]:peaks[-1] + 1].sum(axis=0) > 0)


def test_griffin_lim_recovers_a_signal_from_its_magnitude():
    t = np.arange(RATE) / RATE
    x = np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    magnitude = np.abs(_spectrum(x, 512, 128))

    def error(iterations: int, momentum: float) -> float:
        y = griffin_lim(magnitude, 512, 128, len(x), iterations, momentum,
                        np.random.default_rng(1))
        rebuilt = np.abs(_spectrum(y, 512, 128))
        return float(np.linalg.norm(rebuilt - magnitude) / np.linalg.norm(magnitude))

    assert error(0, 0.0) > 0.3  # random phases: far from consistent
    assert error(30, 0.0) < 0.5 * error(0, 0.0)
    assert error(30, 0.99) < error(30, 0.0)  # the fast variant converges faster


def test_copy_synthesis_keeps_the_spectrogram_not_the_waveform(speech):
    y, rate = mel_copy_synthesis(speech, RATE, PARAMS)
    assert rate == RATE and y.dtype == np.float32 and len(y) == len(speech)
    assert np.max(np.abs(y)) <= 0.99
    a, b = _log_mel(speech), _log_mel(y)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9  # same words, same voice
    assert abs(np.corrcoef(speech, y)[0, 1]) < 0.3  # but a new phase: not a copy


def test_copy_synthesis_is_seeded_and_resamples_narrowband_input(speech):
    a, _ = mel_copy_synthesis(speech, RATE, PARAMS)
    b, _ = mel_copy_synthesis(speech, RATE, PARAMS)
    c, _ = mel_copy_synthesis(speech, RATE, {**PARAMS, "seed": 8})
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    narrow = resample(speech, RATE, 8000)
    y, rate = mel_copy_synthesis(narrow, 8000, {**PARAMS, "n_fft": 512, "momentum": 0.0})
    assert rate == RATE and abs(len(y) - len(speech)) <= 2


def test_too_short_audio_is_refused():
    with pytest.raises(AudioError, match="too few"):
        mel_copy_synthesis(np.zeros(300, dtype=np.float32), RATE, PARAMS)


def test_a08_is_a_training_system_of_the_split_speakers():
    assert "A08" in COPY_SYSTEMS
    assert "A08" in systems_in("train") and "A08" in systems_in("dev")
    assert "A08" not in systems_in("eval")  # eval keeps its systems (and its files)
    assert SYSTEMS["A08"].languages == ("en", "fr")
    rng = np.random.default_rng(0)
    for _ in range(50):
        speaker, params = draw_voice("A08", "train", "fr", rng, ("ARMELLE",))
        assert speaker == "ARMELLE"
        assert 40 <= params["n_mels"] <= 80 and params["n_fft"] in (512, 1024)
        assert 8 <= params["iterations"] <= 48 and params["momentum"] in (0.0, 0.99)
        assert 50.0 <= params["log_floor_db"] <= 90.0
