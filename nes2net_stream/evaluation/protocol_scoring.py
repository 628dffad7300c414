"""Scoring every trial of a protocol with a detector, and fitting its calibration.

Trial scores are the raw spoof scores of the detector (see ``models/detector.py``); the
evaluation code works on CM scores, higher = bona fide, i.e. ``-llr``.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from nes2net_stream.audio.io import load_audio, resample
from nes2net_stream.audio.plc import LOSS_FILLS, LossFill, lose_packets
from nes2net_stream.audio.vad import VADConfig
from nes2net_stream.audio.windows import WindowConfig, pad_by_repetition
from nes2net_stream.data.protocols import Trial, audio_path
from nes2net_stream.errors import AudioError, DataError, DependencyError
from nes2net_stream.evaluation.calibration import fit_affine_calibration
from nes2net_stream.models.detector import Calibration, Detector
from nes2net_stream.scoring.files import OFFICIAL_SAMPLES, pipeline_windows, score_arrays

ProtocolMode = Literal["4s", "windows"]
#: A transmission channel applied to each trial before scoring: (samples, rate) -> samples.
Channel = Callable[[np.ndarray, int], np.ndarray]


def codec_channel(codec: str, bitrate: int | None = None) -> Channel:
    """A channel that passes each trial through ``codec`` (encode, then decode).

    Raises:
        AudioError: unknown codec or bitrate.
        DependencyError: the codec's external tool is not installed here.
    """
    from nes2net_stream.audio.codecs import available_codecs, encode_decode, get_codec

    spec, rate = get_codec(codec, bitrate)
    if spec.name not in available_codecs():
        raise DependencyError(f"codec {codec!r} cannot run here: install {spec.package}")

    def apply(samples: np.ndarray, sample_rate: int) -> np.ndarray:
        return encode_decode(samples, sample_rate, spec.name, bitrate=rate)

    return apply


def loss_channel(rate: float, *, fill: LossFill = "conceal", packet_ms: float = 20.0,
                 then: Channel | None = None) -> Channel:
    """A channel that loses packets of ``packet_ms`` at ``rate`` after ``then`` (a codec).

    ``fill`` is what a receiver puts in their place (:func:`~nes2net_stream.audio.plc.\
lose_packets`): ``conceal`` as the RTP gateways do, ``silence`` as a receiver without
    concealment. The losses of a recording are drawn from a generator seeded by its samples,
    so every run (and every model compared) meets the same losses.
    """
    if not 0.0 <= rate < 1.0:
        raise AudioError(f"packet loss rate {rate} is outside [0, 1)")
    if fill not in LOSS_FILLS:
        raise AudioError(f"loss fill {fill!r} is not one of {', '.join(LOSS_FILLS)}")

    def apply(samples: np.ndarray, sample_rate: int) -> np.ndarray:
        x = then(samples, sample_rate) if then is not None else samples
        seed = zlib.crc32(np.ascontiguousarray(samples).tobytes())
        packet = max(1, round(packet_ms * sample_rate / 1000.0))
        return lose_packets(x, packet, rate, np.random.default_rng(seed), fill=fill)

    return apply


def score_trials(detector: Detector, trials: Sequence[Trial], audio_dir: str | Path, *,
                 mode: ProtocolMode = "4s", vad: VADConfig | None = None,
                 windows: WindowConfig | None = None, batch_size: int = 32,
                 progress: bool = True, channel: Channel | None = None) -> dict[str, float]:
    """Raw spoof score of every trial (``4s``: official crop; ``windows``: mean over windows).

    ``channel``, when given, transforms each trial's whole recording before it is cut (e.g.
    :func:`codec_channel`: how the detector holds up on a codec it may not have seen).
    """

    def load(path: Path, rate: int | None) -> tuple[np.ndarray, int]:
        clip = load_audio(path, sample_rate=rate, allow_silence=True)
        x = clip.samples
        if channel is not None and x.size:
            x = channel(x, clip.sample_rate)
        return x, clip.sample_rate

    vad = vad or VADConfig()
    windows = windows or WindowConfig()
    raw: dict[str, float] = {}
    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        scores = score_arrays(detector, [x for _, x in pending], batch_size=batch_size)
        for (utt, _), s in zip(pending, scores, strict=True):
            raw[utt] = s["raw"]
        pending.clear()

    for trial in tqdm(trials, desc="scoring trials", unit="trial", disable=not progress,
                      file=sys.stderr):
        path = audio_path(audio_dir, trial.utterance)
        if mode == "4s":
            x, _ = load(path, 16000)
            pending.append((trial.utterance, pad_by_repetition(x, OFFICIAL_SAMPLES)))
            if len(pending) >= batch_size:
                flush()
            continue
        x, rate = load(path, None)
        cut = pipeline_windows(x, rate, vad, windows)
        if not cut:  # too little speech for a window: score the whole clip, padded
            x = resample(x, rate, 16000)
            cut_samples = [pad_by_repetition(x, int(windows.window_s * 16000))]
        else:
            cut_samples = [w.samples for w in cut]
        scores = score_arrays(detector, cut_samples, batch_size=batch_size)
        raw[trial.utterance] = float(np.mean([s["raw"] for s in scores]))
    if pending:
        flush()
    return raw


def fit_calibration(raw: dict[str, float], trials: Sequence[Trial], *,
                    spoof_prior: float = 0.5, source: str = "") -> Calibration:
    """Fit the affine raw-score -> spoof-LLR map by prior-weighted logistic regression."""
    missing = [t.utterance for t in trials if t.utterance not in raw]
    if missing:
        raise DataError(f"no score for {len(missing)} trial(s), e.g. {missing[:3]}")
    scores = np.array([raw[t.utterance] for t in trials])
    labels = np.array([1 if t.is_spoof else 0 for t in trials])
    fit = fit_affine_calibration(scores, labels, prior=spoof_prior)
    return Calibration(scale=float(fit.scale), offset=float(fit.offset), fitted=True,
                       spoof_prior=0.5,
                       details={"method": "prior-weighted logistic regression",
                                "fit_prior": spoof_prior, "n_bonafide": int(fit.n_negative),
                                "n_spoof": int(fit.n_positive), "source": source})


def cm_scores(raw: dict[str, float], calibration: Calibration) -> dict[str, float]:
    """CM scores in the official convention (higher = bona fide): ``-llr``."""
    return {u: -(calibration.scale * r + calibration.offset) for u, r in raw.items()}
