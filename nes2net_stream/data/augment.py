"""Training-time augmentation that imitates telephone channels.

:class:`TelephoneAugment` is applied identically to bona fide and spoofed training audio (16 kHz
mono float32), so the detector learns to ignore channel effects rather than to use them as a
label cue. Each step runs independently with its own probability, in the order a call passes
through them:

RawBoost (device/channel distortions) -> gain -> background noise -> clipping -> handset
band-limiting -> narrowband resampling -> codec -> packet loss with concealment.

All randomness comes from the :class:`numpy.random.Generator` passed to each call, so a seeded
generator reproduces the output exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy import signal

from nes2net_stream.audio.codecs import CODECS, available_codecs, encode_decode
from nes2net_stream.audio.io import MODEL_SAMPLE_RATE, resample
from nes2net_stream.audio.plc import lose_packets
from nes2net_stream.data.rawboost import RAWBOOST_ALGOS, RawBoostParams, rawboost
from nes2net_stream.errors import AudioError, ConfigError, DependencyError

log = logging.getLogger(__name__)

NOISE_COLORS = ("white", "pink", "brown")
#: Default codec mix: telephone codecs weighted by how common they are on calls.
DEFAULT_CODEC_WEIGHTS: dict[str, float] = {
    "mulaw": 2.0, "alaw": 2.0, "gsm": 1.0, "amr_nb": 2.0, "g726": 1.0, "g722": 1.0,
    "g723_1": 0.5, "opus": 1.0, "opus_nb": 1.0, "speex": 0.5, "mp3": 0.5, "codec2": 0.25,
}

_PROBS = ("speed_prob", "rawboost_prob", "codec_prob", "narrowband_prob", "gain_prob",
          "noise_prob", "bandlimit_prob", "packet_loss_prob", "clipping_prob")
_RANGES = ("speed_range", "gain_db", "noise_snr_db", "lowpass_hz", "highpass_hz", "packet_ms",
           "clip_fraction")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"augment.{key} must be a finite number, got {value!r}")
    return float(value)


def _pair(key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"augment.{key} must be a [low, high] pair, got {value!r}")
    low, high = _number(key, value[0]), _number(key, value[1])
    if low > high:
        raise ConfigError(f"augment.{key}: low {low} is larger than high {high}")
    return low, high


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation step (all ranges are ``(low, high)``).

    Attributes:
        speed_prob: chance of a speed perturbation by a factor drawn from ``speed_range``
            (plain resampling: tempo, pitch and formants move together with no vocoder, which
            turns a few real speakers into many plausible ones; applied to both classes).
        rawboost_prob: chance of applying RawBoost.
        rawboost_algo: RawBoost combination 1..8 (5 = LnL + ISD, the official LA recipe).
        rawboost: random ranges of RawBoost.
        codec_prob: chance of passing the audio through a codec.
        codecs: codec name -> relative weight of being picked.
        codec_bitrates: optional codec name -> bitrates to draw from (default: all it allows).
        skip_unavailable_codecs: drop codecs this machine cannot run (with a warning) instead
            of raising :class:`DependencyError`.
        narrowband_prob: chance of resampling to 8 kHz and back (before any codec).
        gain_prob: chance of a random gain; ``gain_db`` its range.
        noise_prob: chance of adding generated noise at an SNR in ``noise_snr_db``.
        noise_colors: noise spectra to draw from: white, pink (1/f) or brown (1/f^2).
        bandlimit_prob: chance of a handset band-pass filter with a cut-off drawn from
            ``lowpass_hz`` and ``highpass_hz``.
        packet_loss_prob: chance of simulating packet loss; ``packet_loss_rate`` is the share
            of packets lost and ``packet_ms`` the range of the packet length.
        clipping_prob: chance of hard clipping at ``clip_fraction`` times the peak.
    """

    speed_prob: float = 0.0
    speed_range: tuple[float, float] = (0.9, 1.1)
    rawboost_prob: float = 0.5
    rawboost_algo: int = 5
    rawboost: RawBoostParams = field(default_factory=RawBoostParams)
    codec_prob: float = 0.5
    codecs: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CODEC_WEIGHTS))
    codec_bitrates: dict[str, tuple[int, ...]] = field(default_factory=dict)
    skip_unavailable_codecs: bool = True
    narrowband_prob: float = 0.2
    gain_prob: float = 0.5
    gain_db: tuple[float, float] = (-6.0, 6.0)
    noise_prob: float = 0.3
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    noise_colors: tuple[str, ...] = NOISE_COLORS
    bandlimit_prob: float = 0.3
    lowpass_hz: tuple[float, float] = (3000.0, 3800.0)
    highpass_hz: tuple[float, float] = (100.0, 300.0)
    packet_loss_prob: float = 0.1
    packet_loss_rate: float = 0.05
    packet_ms: tuple[float, float] = (10.0, 40.0)
    clipping_prob: float = 0.1
    clip_fraction: tuple[float, float] = (0.3, 0.9)

    def __post_init__(self) -> None:
        """Normalise types and validate; raise :class:`ConfigError` naming the bad key."""
        set_ = object.__setattr__
        for key in (*_PROBS, "packet_loss_rate"):
            value = _number(key, getattr(self, key))
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{key} must be within [0, 1], got {value}")
            set_(self, key, value)
        for key in _RANGES:
            set_(self, key, _pair(key, getattr(self, key)))
        if isinstance(self.rawboost_algo, bool) or self.rawboost_algo not in RAWBOOST_ALGOS:
            raise ConfigError(f"augment.rawboost_algo must be one of {sorted(RAWBOOST_ALGOS)}, "
                              f"got {self.rawboost_algo!r}")
        set_(self, "rawboost_algo", int(self.rawboost_algo))
        if isinstance(self.rawboost, Mapping):
            set_(self, "rawboost", RawBoostParams.from_dict(self.rawboost))
        elif not isinstance(self.rawboost, RawBoostParams):
            raise ConfigError("augment.rawboost must be a mapping of RawBoost parameters")
        self._check_codecs()
        colors = self.noise_colors
        if isinstance(colors, str) or not isinstance(colors, list | tuple) or not colors \
                or any(c not in NOISE_COLORS for c in colors):
            raise ConfigError(f"augment.noise_colors must be a non-empty list of "
                              f"{list(NOISE_COLORS)}, got {colors!r}")
        set_(self, "noise_colors", tuple(colors))
        if self.highpass_hz[0] <= 0 or self.lowpass_hz[1] >= MODEL_SAMPLE_RATE / 2 \
                or self.highpass_hz[1] >= self.lowpass_hz[0]:
            raise ConfigError("augment.highpass_hz and augment.lowpass_hz must satisfy "
                              "0 < highpass < lowpass < 8000 Hz")
        if self.packet_ms[0] <= 0:
            raise ConfigError(f"augment.packet_ms must be > 0 ms, got {list(self.packet_ms)}")
        if not 0.5 <= self.speed_range[0] <= self.speed_range[1] <= 2.0:
            raise ConfigError("augment.speed_range must satisfy 0.5 <= low <= high <= 2, got "
                              f"{list(self.speed_range)}")
        if self.clip_fraction[0] <= 0.0 or self.clip_fraction[1] > 1.0:
            raise ConfigError("augment.clip_fraction must be within (0, 1], got "
                              f"{list(self.clip_fraction)}")
        if not isinstance(self.skip_unavailable_codecs, bool):
            raise ConfigError("augment.skip_unavailable_codecs must be true or false")

    def _check_codecs(self) -> None:
        if not isinstance(self.codecs, Mapping):
            raise ConfigError("augment.codecs must map codec names to weights")
        valid = ", ".join(CODECS)
        weights = {}
        for name, weight in self.codecs.items():
            if name not in CODECS:
                raise ConfigError(f"augment.codecs: unknown codec {name!r}; valid: {valid}")
            w = _number(f"codecs.{name}", weight)
            if w < 0:
                raise ConfigError(f"augment.codecs.{name}: weight must be >= 0, got {w}")
            weights[name] = w
        if self.codec_prob > 0 and sum(weights.values()) <= 0:
            raise ConfigError("augment.codecs needs a positive weight when codec_prob > 0")
        object.__setattr__(self, "codecs", weights)
        if not isinstance(self.codec_bitrates, Mapping):
            raise ConfigError("augment.codec_bitrates must map codec names to bitrate lists")
        rates = {}
        for name, values in self.codec_bitrates.items():
            if name not in CODECS:
                raise ConfigError(f"augment.codec_bitrates: unknown codec {name!r}; "
                                  f"valid: {valid}")
            allowed = CODECS[name].bitrates
            if isinstance(values, int) or not values or any(v not in allowed for v in values):
                raise ConfigError(f"augment.codec_bitrates.{name} must be a non-empty list of "
                                  f"{list(allowed)}, got {values!r}")
            rates[name] = tuple(int(v) for v in values)
        object.__setattr__(self, "codec_bitrates", rates)

    @classmethod
    def off(cls) -> AugmentConfig:
        """A configuration with every step disabled."""
        return cls(**{key: 0.0 for key in _PROBS})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentConfig:
        """Build from a mapping (e.g. a JSON model bundle); unknown keys raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"augment config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown augment key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable mapping that :meth:`from_dict` reads back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, RawBoostParams):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif f.name == "codec_bitrates":
                value = {k: list(v) for k, v in value.items()}
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to ``n`` samples."""
    return np.pad(y[:n], (0, max(0, n - len(y))))


def coloured_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean Gaussian noise with a white, pink (1/f) or brown (1/f^2) power spectrum."""
    white = rng.standard_normal(n)
    if color == "white" or n < 4:
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n)
    exponent = 0.5 if color == "pink" else 1.0
    spectrum[1:] /= freqs[1:] ** exponent
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def packet_loss(x: np.ndarray, packet: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Drop packets of ``packet`` samples at ``rate`` and conceal each run of losses.

    The concealment is the gateways' (:func:`nes2net_stream.audio.plc.conceal`). At least
    one packet (never the first) is lost when the audio has two or more packets.
    """
    return lose_packets(x, packet, rate, rng, at_least_one=True)


class TelephoneAugment:
    """Random telephone-channel augmentation of 16 kHz training audio.

    Args:
        config: probabilities and ranges; :class:`AugmentConfig` defaults when None.

    Raises:
        DependencyError: a configured codec cannot run here and ``skip_unavailable_codecs`` is
            false, or no configured codec can run while ``codec_prob > 0``.
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()
        self._codecs: list[str] = []
        self._weights = np.zeros(0)
        wanted = [name for name, w in self.config.codecs.items() if w > 0]
        if self.config.codec_prob > 0 and wanted:
            usable = set(available_codecs())
            missing = [name for name in wanted if name not in usable]
            if missing and not self.config.skip_unavailable_codecs:
                raise DependencyError(f"codec(s) {missing} cannot run on this machine; install "
                                      "sox and ffmpeg or remove them from augment.codecs")
            if missing:
                log.warning("codec augmentation skips unavailable codecs: %s", missing)
            self._codecs = [name for name in wanted if name in usable]
            if not self._codecs:
                raise DependencyError(f"none of the augmentation codecs {wanted} runs here")
            weights = np.array([self.config.codecs[name] for name in self._codecs])
            self._weights = weights / weights.sum()

    @property
    def codecs(self) -> list[str]:
        """Codecs the codec step draws from (configured and available here)."""
        return list(self._codecs)

    def __call__(self, samples16k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one clip; returns float32 of the same length within [-1, 1]."""
        return self.apply(samples16k, rng)[0]

    def apply(self, samples16k: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        """Augment one clip and also return the names of the steps that ran, in order."""
        x = np.asarray(samples16k)
        if x.ndim != 1 or x.size == 0:
            raise AudioError(f"augmentation needs non-empty 1-D audio, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise AudioError("augmentation input contains NaN or infinite samples")
        c = self.config
        fs = MODEL_SAMPLE_RATE
        y = np.clip(x.astype(np.float64), -1.0, 1.0)
        done: list[str] = []
        if rng.random() < c.speed_prob:
            factor = rng.uniform(*c.speed_range)
            sped = resample(y.astype(np.float32), int(round(fs * factor)), fs)
            reps = int(np.ceil(len(x) / max(1, len(sped))))
            y = np.tile(sped, reps)[: len(x)].astype(np.float64)
            done.append(f"speed_{factor:.2f}")
        if rng.random() < c.rawboost_prob and c.rawboost_algo:
            y = rawboost(y, fs, c.rawboost_algo, rng, c.rawboost).astype(np.float64)
            done.append(f"rawboost{c.rawboost_algo}")
        if rng.random() < c.gain_prob:
            y = y * 10.0 ** (rng.uniform(*c.gain_db) / 20.0)
            done.append("gain")
        if rng.random() < c.noise_prob:
            color = c.noise_colors[int(rng.integers(len(c.noise_colors)))]
            noise = coloured_noise(len(y), color, rng)
            power, noise_power = float(np.mean(y ** 2)), float(np.mean(noise ** 2))
            if power > 0 and noise_power > 0:
                snr = rng.uniform(*c.noise_snr_db)
                y = y + noise * math.sqrt(power / noise_power / 10.0 ** (snr / 10.0))
                done.append(f"noise_{color}")
        if rng.random() < c.clipping_prob:
            level = rng.uniform(*c.clip_fraction) * float(np.max(np.abs(y)))
            if level > 0:
                y = np.clip(y, -level, level)
                done.append("clipping")
        y = np.clip(y, -1.0, 1.0)
        if rng.random() < c.bandlimit_prob:
            band = [rng.uniform(*c.highpass_hz), rng.uniform(*c.lowpass_hz)]
            sos = signal.butter(4, band, btype="bandpass", fs=fs, output="sos")
            y = signal.sosfilt(sos, y)
            done.append("bandlimit")
        if rng.random() < c.narrowband_prob:
            y = _fit(resample(resample(y.astype(np.float32), fs, 8000), 8000, fs), len(x))
            done.append("narrowband")
        if rng.random() < c.codec_prob and self._codecs:
            name = self._codecs[int(rng.choice(len(self._codecs), p=self._weights))]
            rates = c.codec_bitrates.get(name, CODECS[name].bitrates)
            bitrate = int(rates[int(rng.integers(len(rates)))])
            y = encode_decode(y.astype(np.float32), fs, name, bitrate=bitrate).astype(np.float64)
            done.append(f"codec_{name}_{bitrate}")
        if rng.random() < c.packet_loss_prob:
            packet = max(1, round(rng.uniform(*c.packet_ms) * fs / 1000.0))
            y = packet_loss(y, packet, c.packet_loss_rate, rng)
            done.append("packet_loss")
        out = np.clip(np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        return out.astype(np.float32), done
