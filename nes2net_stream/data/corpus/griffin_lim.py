"""Mel-spectrogram copy-synthesis with Griffin-Lim phase reconstruction (spoofing system A08).

Real speech is reduced to a mel magnitude spectrogram, the representation most neural TTS
acoustic models predict, and turned back into a waveform without its phase: the linear
magnitude is estimated from the mel bands and the phase is rebuilt iteratively [1], with the
momentum of the fast variant [2] in part of the utterances. The result keeps the speaker's own
words, prosody and timbre and carries the artefacts of a spectrogram-based vocoder (smeared
harmonics above the mel resolution, phase incoherence), a family of artefacts the WORLD
systems (A05/A06) do not have. Training on vocoded copies of bona fide speech is the
data-side route to countermeasures that generalise to unseen synthesisers [3].

[1] D. Griffin and J. Lim, "Signal estimation from modified short-time Fourier transform",
IEEE Trans. ASSP 32(2), 1984.
[2] N. Perraudin, P. Balazs and P. L. Sondergaard, "A fast Griffin-Lim algorithm", IEEE
WASPAA 2013.
[3] X. Wang and J. Yamagishi, "Spoofed training data for speech spoofing countermeasure can be
efficiently created using neural vocoders", ICASSP 2023 (arXiv:2210.10570).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from scipy.signal import istft, stft

from nes2net_stream.audio.io import resample
from nes2net_stream.errors import AudioError

#: Sample rate of the analysis and the output.
RATE = 16000


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


@lru_cache(maxsize=16)
def mel_basis(n_mels: int, n_fft: int, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """Triangular mel filters (HTK scale, 0 Hz to Nyquist) and their pseudo-inverse.

    Returns:
        ``(filters, inverse)`` of shapes ``(n_mels, n_fft // 2 + 1)`` and the transpose.
    """
    freqs = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    edges_mel = np.linspace(0.0, float(_hz_to_mel(np.array(rate / 2))), n_mels + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    filters = np.maximum(0.0, np.minimum(up, down))
    return filters, np.linalg.pinv(filters)


def _spectrum(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    _, _, z = stft(x, fs=RATE, window="hann", nperseg=n_fft, noverlap=n_fft - hop,
                   boundary="even", padded=True)
    return z


def _signal(z: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    _, y = istft(z, fs=RATE, window="hann", nperseg=n_fft, noverlap=n_fft - hop,
                 boundary=True)
    out = np.zeros(length)
    n = min(length, len(y))
    out[:n] = y[:n]
    return out


def griffin_lim(magnitude: np.ndarray, n_fft: int, hop: int, length: int, iterations: int,
                momentum: float, rng: np.random.Generator) -> np.ndarray:
    """A waveform whose STFT magnitude approaches ``magnitude``, from random phases.

    ``momentum`` 0 is the original algorithm [1]; 0.99 the fast one [2].
    """
    phase = np.exp(2j * np.pi * rng.random(magnitude.shape))
    previous = np.zeros_like(phase)
    y = _signal(magnitude * phase, n_fft, hop, length)
    for _ in range(iterations):
        rebuilt = _spectrum(y, n_fft, hop)[:, : magnitude.shape[1]]
        accelerated = rebuilt + momentum * (rebuilt - previous)
        previous = rebuilt
        phase = accelerated / np.maximum(np.abs(accelerated), 1e-8)
        y = _signal(magnitude * phase, n_fft, hop, length)
    return y


def mel_copy_synthesis(x: np.ndarray, rate: int, params: dict[str, Any]
                       ) -> tuple[np.ndarray, int]:
    """Resynthesise speech from its mel spectrogram (see the module docstring).

    Args:
        x: Real speech, mono float.
        rate: Its sample rate (resampled to :data:`RATE` first).
        params: ``n_mels``, ``n_fft`` (hop a quarter of it), ``iterations``, ``momentum``,
            ``log_floor_db`` (mel energies below the frame maximum minus this are floored,
            as the log compression of TTS features does) and ``seed`` (initial phases).

    Returns:
        The resynthesised audio at :data:`RATE`, as long as the input after resampling.

    Raises:
        AudioError: If the audio is too short to analyse or the result is not finite.
    """
    if rate != RATE:
        x = resample(x, rate, RATE)
    n_fft = int(params["n_fft"])
    hop = n_fft // 4
    if len(x) < n_fft:
        raise AudioError(f"{len(x)} samples are too few for a {n_fft}-point mel analysis")
    sig = np.asarray(x, dtype=np.float64)
    magnitude = np.abs(_spectrum(sig, n_fft, hop))
    filters, inverse = mel_basis(int(params["n_mels"]), n_fft)
    mel = filters @ magnitude
    floor = mel.max(axis=0, keepdims=True) * 10.0 ** (-float(params["log_floor_db"]) / 20.0)
    mel = np.maximum(mel, np.maximum(floor, 1e-8))
    estimate = np.maximum(inverse @ mel, 0.0)
    rng = np.random.default_rng(int(params["seed"]))
    y = griffin_lim(estimate, n_fft, hop, len(sig), int(params["iterations"]),
                    float(params["momentum"]), rng)
    if not np.all(np.isfinite(y)):
        raise AudioError("mel copy-synthesis produced non-finite samples")
    peak = float(np.max(np.abs(y)))
    if peak > 0.99:  # the channel re-levels every utterance; only avoid clipping here
        y *= 0.99 / peak
    return y.astype(np.float32), RATE
