"""RawBoost data augmentation for anti-spoofing (Tak et al., ICASSP 2022, arXiv 2111.04433).

RawBoost distorts the raw waveform in three ways that model a transmission channel:

1. **LnL**, linear and non-linear convolutive noise: the signal and its powers ``x**2 .. x**N``
   are each filtered by a random multi-band notch FIR filter and summed, the non-linear terms
   at a lower gain (a polynomial Hammerstein model of stationary channel and device effects).
2. **ISD**, impulsive signal-dependent additive noise: up to ``P`` % of the samples, chosen at
   random, get an impulse proportional to their own value (clicks, overload bursts).
3. **SSI**, stationary signal-independent additive noise: white Gaussian noise coloured by a
   random notch filter, added at a random SNR.

The eight ``algo`` numbers follow the paper and its official recipe: 1=LnL, 2=ISD, 3=SSI,
4=1+2+3 in series, 5=1+2 in series, 6=1+3 in series, 7=2+3 in series, 8=1 and 2 in parallel
(their sum). The default ranges of :class:`RawBoostParams` are those of the official training
recipe (command-line defaults of TakHemlata/SSL_Anti-spoofing ``main_SSL_LA.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import signal

from nes2net_stream.errors import AudioError, ConfigError

#: Meaning of each RawBoost ``algo`` number (0 leaves the audio unchanged).
RAWBOOST_ALGOS: dict[int, str] = {
    0: "none",
    1: "LnL convolutive noise",
    2: "ISD impulsive noise",
    3: "SSI coloured additive noise",
    4: "LnL + ISD + SSI in series",
    5: "LnL + ISD in series",
    6: "LnL + SSI in series",
    7: "ISD + SSI in series",
    8: "LnL and ISD in parallel",
}


@dataclass(frozen=True, slots=True)
class RawBoostParams:
    """Random ranges of the RawBoost distortions (defaults of the official recipe).

    Attributes:
        n_bands: notch filters combined in one multi-band filter.
        min_freq: lowest notch centre frequency, Hz.
        max_freq: highest notch centre frequency, Hz (capped below Nyquist).
        min_bandwidth: narrowest notch, Hz.
        max_bandwidth: widest notch, Hz.
        min_coeffs: fewest FIR taps per notch (made odd).
        max_coeffs: most FIR taps per notch.
        min_gain_db: lowest gain of the linear LnL term and of the SSI colouring filter, dB.
        max_gain_db: highest such gain, dB.
        min_bias_db: least attenuation of the non-linear LnL terms relative to the linear one.
        max_bias_db: most such attenuation, dB.
        n_orders: non-linearity order N of LnL (1 keeps only the linear term).
        max_impulse_percent: ISD changes a random share of samples between 0 and this, %.
        impulse_gain: ISD impulse gain ``g_sd`` (> 0).
        min_snr_db: lowest SNR of the SSI noise, dB.
        max_snr_db: highest SNR of the SSI noise, dB.
    """

    n_bands: int = 5
    min_freq: float = 20.0
    max_freq: float = 8000.0
    min_bandwidth: float = 100.0
    max_bandwidth: float = 1000.0
    min_coeffs: int = 10
    max_coeffs: int = 100
    min_gain_db: float = 0.0
    max_gain_db: float = 0.0
    min_bias_db: float = 5.0
    max_bias_db: float = 20.0
    n_orders: int = 5
    max_impulse_percent: float = 10.0
    impulse_gain: float = 2.0
    min_snr_db: float = 10.0
    max_snr_db: float = 40.0

    def __post_init__(self) -> None:
        """Check the ranges; raise :class:`ConfigError` naming the bad field."""
        for low, high in (("min_freq", "max_freq"), ("min_bandwidth", "max_bandwidth"),
                          ("min_coeffs", "max_coeffs"), ("min_gain_db", "max_gain_db"),
                          ("min_bias_db", "max_bias_db"), ("min_snr_db", "max_snr_db")):
            a, b = getattr(self, low), getattr(self, high)
            for key, value in ((low, a), (high, b)):
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not np.isfinite(value):
                    raise ConfigError(f"rawboost.{key} must be a finite number, got {value!r}")
            if a > b:
                raise ConfigError(f"rawboost.{low} ({a}) is larger than rawboost.{high} ({b})")
        for key in ("n_bands", "n_orders", "min_coeffs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"rawboost.{key} must be a positive integer, got {value!r}")
        if self.min_freq < 0 or self.min_bandwidth <= 0:
            raise ConfigError("rawboost.min_freq must be >= 0 and rawboost.min_bandwidth > 0")
        if not 0 <= self.max_impulse_percent <= 100:
            raise ConfigError("rawboost.max_impulse_percent must be within [0, 100], got "
                              f"{self.max_impulse_percent!r}")
        if not self.impulse_gain > 0:
            raise ConfigError(f"rawboost.impulse_gain must be > 0, got {self.impulse_gain!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RawBoostParams:
        """Build from a mapping; unknown keys raise :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"rawboost must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown rawboost key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable mapping."""
        return asdict(self)


def _peak_normalise(y: np.ndarray) -> np.ndarray:
    """Scale down to a peak of 1 only when the peak exceeds 1."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y / peak if peak > 1.0 else y


def _notch_filter(fs: int, rng: np.random.Generator, p: RawBoostParams,
                  gain_db: tuple[float, float]) -> np.ndarray:
    """Random multi-band notch FIR filter whose peak magnitude is a random gain in dB."""
    nyquist = fs / 2.0
    taps = np.ones(1)
    for _ in range(p.n_bands):
        centre = rng.uniform(p.min_freq, min(p.max_freq, nyquist))
        width = rng.uniform(p.min_bandwidth, p.max_bandwidth)
        n = int(rng.integers(p.min_coeffs, p.max_coeffs + 1))
        n += 1 - n % 2  # a band-stop FIR needs an odd number of taps
        low = max(centre - width / 2.0, 1e-3)
        high = min(centre + width / 2.0, nyquist - 1e-3)
        if high <= low:
            continue
        taps = np.convolve(taps, signal.firwin(n, [low, high], window="hamming", fs=fs))
    _, response = signal.freqz(taps, 1, worN=1024, fs=fs)
    gain = 10.0 ** (rng.uniform(*gain_db) / 20.0)
    return taps * gain / max(float(np.max(np.abs(response))), 1e-12)


def _filter_same(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Linear-phase FIR filtering with its group delay removed (output aligned to input)."""
    full = signal.oaconvolve(x, taps) if len(x) > len(taps) else np.convolve(x, taps)
    delay = (len(taps) - 1) // 2
    return full[delay:delay + len(x)]


def lnl_convolutive_noise(x: np.ndarray, fs: int, rng: np.random.Generator,
                          params: RawBoostParams) -> np.ndarray:
    """RawBoost 1: sum of notch-filtered powers of the signal (linear and non-linear terms)."""
    y = np.zeros(len(x))
    linear = (params.min_gain_db, params.max_gain_db)
    nonlinear = (params.min_gain_db - params.max_bias_db, params.max_gain_db - params.min_bias_db)
    for order in range(1, params.n_orders + 1):
        taps = _notch_filter(fs, rng, params, linear if order == 1 else nonlinear)
        y += _filter_same(np.power(x, order), taps)
    return _peak_normalise(y - np.mean(y))


def isd_additive_noise(x: np.ndarray, rng: np.random.Generator,
                       params: RawBoostParams) -> np.ndarray:
    """RawBoost 2: impulses proportional to the signal at a random share of its samples."""
    share = rng.uniform(0.0, params.max_impulse_percent) / 100.0
    count = int(len(x) * share)
    y = np.array(x, dtype=np.float64, copy=True)
    idx = rng.permutation(len(x))[:count]
    shape = rng.uniform(-1.0, 1.0, count) * rng.uniform(-1.0, 1.0, count)
    y[idx] += params.impulse_gain * x[idx] * shape
    return _peak_normalise(y)


def ssi_additive_noise(x: np.ndarray, fs: int, rng: np.random.Generator,
                       params: RawBoostParams) -> np.ndarray:
    """RawBoost 3: coloured Gaussian noise added at an SNR drawn from the configured range.

    Unlike the other two distortions the output is not peak-normalised here, so the SNR is
    exact; :func:`rawboost` normalises the final result.
    """
    noise = _filter_same(rng.standard_normal(len(x)), _notch_filter(
        fs, rng, params, (params.min_gain_db, params.max_gain_db)))
    snr_db = rng.uniform(params.min_snr_db, params.max_snr_db)
    noise_norm = float(np.linalg.norm(noise))
    if noise_norm == 0.0:
        return np.asarray(x, dtype=np.float64)
    scale = float(np.linalg.norm(x)) / noise_norm / 10.0 ** (snr_db / 20.0)
    return x + noise * scale


def rawboost(samples: np.ndarray, fs: int, algo: int, rng: np.random.Generator,
             params: RawBoostParams | None = None) -> np.ndarray:
    """Apply one RawBoost combination.

    Args:
        samples: mono float audio.
        fs: its sample rate.
        algo: 0..8, see :data:`RAWBOOST_ALGOS`.
        rng: the source of all randomness (seed it for reproducible output).
        params: random ranges; the official defaults when None.

    Returns:
        float32 audio of the same length, finite, with peak at most 1.

    Raises:
        ConfigError: ``algo`` is not 0..8.
        AudioError: the audio is not 1-D or not finite.
    """
    if isinstance(algo, bool) or algo not in RAWBOOST_ALGOS:
        raise ConfigError(f"rawboost algo must be one of {sorted(RAWBOOST_ALGOS)}, got {algo!r}")
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise AudioError("rawboost needs 1-D finite audio")
    p = params or RawBoostParams()
    if algo == 0 or x.size == 0:
        return x.astype(np.float32)
    if algo == 8:
        y = lnl_convolutive_noise(x, fs, rng, p) + isd_additive_noise(x, rng, p)
    else:
        steps = {1: "1", 2: "2", 3: "3", 4: "123", 5: "12", 6: "13", 7: "23"}[algo]
        y = x
        for step in steps:
            if step == "1":
                y = lnl_convolutive_noise(y, fs, rng, p)
            elif step == "2":
                y = isd_additive_noise(y, rng, p)
            else:
                y = ssi_additive_noise(y, fs, rng, p)
    return np.clip(_peak_normalise(y), -1.0, 1.0).astype(np.float32)
