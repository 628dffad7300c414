"""The telephone channel every utterance goes through, bona fide and spoof alike.

Steps: resample to 8 kHz, a band-pass filter with random telephone band edges, loudness
normalisation to a random speech level, optional background noise at a random SNR, an optional
earlier codec pass (tandem coding, used to match the GSM history of the French bona fide
prompts), and the channel codec from :mod:`nes2net_stream.audio.codecs`. All random choices are
drawn by :func:`draw_channels` from one distribution per split, separately and stratified for
each class, so both classes get the same channel mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt

from nes2net_stream.audio.codecs import encode_decode
from nes2net_stream.audio.io import resample
from nes2net_stream.data.corpus.dsp import active_level_db

CHANNEL_RATE = 8000

#: Codecs of train and dev: (name, bitrate or None, weight).
KNOWN_CODECS: tuple[tuple[str, int | None, float], ...] = (
    ("mulaw", None, 1.0), ("alaw", None, 1.0), ("gsm", None, 1.0),
)
#: Codecs that only eval gets, never seen in training.
EVAL_ONLY_CODECS: tuple[tuple[str, int | None, float], ...] = (
    ("g726", 24000, 0.25), ("g726", 32000, 0.25), ("g726", 40000, 0.25),
    ("g723_1", None, 0.75), ("opus_nb", 8000, 0.4), ("opus_nb", 12000, 0.35),
)
#: Share of eval utterances that get an eval-only codec.
EVAL_ONLY_SHARE = 0.5
LEVEL_RANGE_DB = (-32.0, -18.0)
SNR_RANGE_DB = (20.0, 50.0)
NOISE_PROBABILITY = 0.7
PEAK_LIMIT = 0.95


@dataclass(frozen=True, slots=True)
class ChannelParams:
    """Random choices for one utterance's channel."""

    codec: str
    bitrate: int | None
    low_hz: float
    high_hz: float
    level_db: float
    snr_db: float | None
    noise_tilt: float  # 0 white, 1 pink, 2 brown
    precode: str = ""

    @property
    def environment(self) -> str:
        """Token for the protocol's ENVIRONMENT column, e.g. ``gsm`` or ``g726-32k``."""
        return self.codec if self.bitrate is None else f"{self.codec}-{self.bitrate // 1000}k"


def codec_table(split: str) -> list[tuple[str, int | None, float]]:
    """The (codec, bitrate, probability) table of a split."""
    known = [(c, b, w / sum(x[2] for x in KNOWN_CODECS)) for c, b, w in KNOWN_CODECS]
    if split != "eval":
        return known
    total = sum(x[2] for x in EVAL_ONLY_CODECS)
    return ([(c, b, p * (1 - EVAL_ONLY_SHARE)) for c, b, p in known]
            + [(c, b, EVAL_ONLY_SHARE * w / total) for c, b, w in EVAL_ONLY_CODECS])


def draw_channel(split: str, rng: np.random.Generator, precode: str = "") -> ChannelParams:
    """Draw one utterance's channel; the distribution depends on the split only."""
    return draw_channels(split, 1, rng, stratified=False)[0]


def _uniform(n: int, lo: float, hi: float, rng: np.random.Generator,
             stratified: bool) -> np.ndarray:
    """``n`` uniform values; stratified ones have one value in each of ``n`` equal bins."""
    u = (rng.permutation(n) + rng.random(n)) / n if stratified else rng.random(n)
    return lo + u * (hi - lo)


def _counts(probabilities: list[float], n: int) -> list[int]:
    """Split ``n`` items by ``probabilities`` (largest remainders)."""
    raw = np.asarray(probabilities) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(counts - raw)[: n - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def draw_channels(split: str, n: int, rng: np.random.Generator, *,
                  stratified: bool = True) -> list[ChannelParams]:
    """Draw ``n`` channels of a split, in random order.

    Stratified draws give each codec its exact share of the ``n`` utterances and spread every
    continuous setting evenly over its range; drawing each class separately this way gives
    both classes the same channel mix even in small splits.
    """
    table = codec_table(split)
    if stratified:
        picks = [i for i, c in enumerate(_counts([p for _, _, p in table], n)) for _ in range(c)]
        codec_idx = rng.permutation(np.asarray(picks, dtype=int))
        noisy = rng.permutation(np.arange(n) < round(NOISE_PROBABILITY * n))
    else:
        codec_idx = rng.choice(len(table), size=n, p=[p for _, _, p in table])
        noisy = rng.random(n) < NOISE_PROBABILITY
    low = _uniform(n, 150.0, 350.0, rng, stratified)
    high = _uniform(n, 3200.0, 3600.0, rng, stratified)
    level = _uniform(n, *LEVEL_RANGE_DB, rng, stratified)
    snr = _uniform(n, *SNR_RANGE_DB, rng, stratified)
    tilt = _uniform(n, 0.0, 2.0, rng, stratified)
    return [ChannelParams(codec=table[int(codec_idx[k])][0], bitrate=table[int(codec_idx[k])][1],
                          low_hz=float(low[k]), high_hz=float(high[k]),
                          level_db=float(level[k]),
                          snr_db=float(snr[k]) if noisy[k] else None, noise_tilt=float(tilt[k]))
            for k in range(n)]


def coloured_noise(n: int, tilt: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f**tilt power spectrum."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spec / f ** (tilt / 2.0), n)
    return (y / (np.sqrt(np.mean(y * y)) + 1e-12)).astype(np.float32)


def apply_channel(x: np.ndarray, rate: int, params: ChannelParams,
                  rng: np.random.Generator) -> np.ndarray:
    """Pass audio through the telephone channel; returns 8 kHz float32 audio."""
    y = resample(np.asarray(x, dtype=np.float32), rate, CHANNEL_RATE).astype(np.float64)
    sos = butter(6, [params.low_hz, params.high_hz], btype="bandpass", fs=CHANNEL_RATE,
                 output="sos")
    y = sosfilt(sos, y)
    gain_db = params.level_db - active_level_db(y, CHANNEL_RATE)
    y *= 10.0 ** (gain_db / 20.0)
    if params.snr_db is not None:
        noise = coloured_noise(len(y), params.noise_tilt, rng).astype(np.float64)
        noise = sosfilt(sos, noise)
        noise_rms = 10.0 ** ((params.level_db - params.snr_db) / 20.0)
        y += noise * noise_rms / (np.sqrt(np.mean(noise * noise)) + 1e-12)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > PEAK_LIMIT:
        y *= PEAK_LIMIT / peak
    out = y.astype(np.float32)
    if params.precode:
        out = encode_decode(out, CHANNEL_RATE, params.precode)
    return encode_decode(out, CHANNEL_RATE, params.codec, bitrate=params.bitrate)
