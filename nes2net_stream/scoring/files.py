"""Scoring audio files with a detector (the ``nes2net-stream score`` command).

Modes:

* ``windows`` (default): the file goes through the same per-channel pipeline as a live call
  (resampling, VAD, speech-only sliding windows); each window is scored and the file score is
  the mean window LLR. A window here is identical to the one the streaming service would score.
* ``4s``: the official scripts' fixed-length mode: the first ``official_samples`` samples at
  16 kHz, padded by repetition when shorter.
* ``full``: the whole file as one input, as the official scripts do for In-the-Wild.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from nes2net_stream.audio.io import ChannelSelect, load_audio
from nes2net_stream.audio.pipeline import ChannelPipeline
from nes2net_stream.audio.vad import VADConfig
from nes2net_stream.audio.windows import SpeechWindow, WindowConfig, pad_by_repetition
from nes2net_stream.errors import AudioError
from nes2net_stream.models.detector import Detector
from nes2net_stream.scoring.aggregate import Aggregation, aggregate_llrs

ScoreMode = Literal["windows", "4s", "full"]
OFFICIAL_SAMPLES = 64_600
MAX_FULL_SECONDS = 120.0


@dataclass(frozen=True)
class WindowScore:
    """Score of one window (see docs/scores.md for the convention)."""

    start_s: float
    end_s: float
    speech_s: float
    spoof_probability: float
    llr: float
    raw: float
    bona_fide_logit: float


@dataclass
class FileScore:
    """Score of one file: the aggregate plus every window."""

    file: str
    model_id: str
    mode: str
    duration_s: float
    speech_s: float
    spoof_probability: float | None
    llr: float | None
    calibrated: bool
    windows: list[WindowScore] = field(default_factory=list)
    note: str | None = None
    channel: int | None = None  # the file's channel scored (``score --channel each``)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (one line of ``score --json``)."""
        d = asdict(self)
        for key in ("note", "channel"):
            if d[key] is None:
                del d[key]
        return d


def score_arrays(detector: Detector, batch: Sequence[np.ndarray], *,
                 batch_size: int = 16) -> list[dict[str, float]]:
    """Score equal-length float32 windows in batches; one dict of scores per window."""
    out: list[dict[str, float]] = []
    for i in range(0, len(batch), batch_size):
        chunk = np.stack(batch[i:i + batch_size]).astype(np.float32, copy=False)
        s = detector.score(torch.from_numpy(chunk))
        for j in range(chunk.shape[0]):
            out.append({"raw": float(s.raw[j]), "llr": float(s.llr[j]),
                        "spoof_probability": float(s.spoof_probability[j]),
                        "bona_fide_logit": float(s.bona_fide_logit[j])})
    return out


def pipeline_windows(samples: np.ndarray, rate: int, vad: VADConfig,
                     windows: WindowConfig, chunk_s: float = 1.0) -> list[SpeechWindow]:
    """Cut a whole signal into speech windows exactly as a live channel would."""
    pipe = ChannelPipeline(rate, vad, windows)
    step = max(1, int(rate * chunk_s))
    out: list[SpeechWindow] = []
    for i in range(0, samples.shape[0], step):
        out.extend(pipe.push(samples[i:i + step]))
    out.extend(pipe.finish())
    return out


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def score_file(detector: Detector, path: str | Path, *, mode: ScoreMode = "windows",
               vad: VADConfig | None = None, windows: WindowConfig | None = None,
               channel: ChannelSelect = "mix", aggregation: Aggregation = "mean",
               batch_size: int = 16, official_samples: int | None = None,
               transmit: Callable[[np.ndarray, int], np.ndarray] | None = None,
               allow_silence: bool = False) -> FileScore:
    """Score one audio file (any format and rate soundfile/sox/ffmpeg can read).

    ``allow_silence``: a digitally silent channel gets no score instead of an AudioError (one
    channel of a stereo recording whose party never spoke).

    ``official_samples`` is the crop of ``mode="4s"``: by default the bundle's
    ``metadata.source.official_crop_samples`` (converted checkpoints) or 64,600.
    ``transmit`` (``mode="windows"``), a ``(samples, rate) -> samples`` transmission channel
    applied to the whole recording first, e.g. a codec (``protocol_scoring.codec_channel``).
    """
    if official_samples is None:
        source = detector.metadata.get("source") or {}
        official_samples = int(source.get("official_crop_samples") or OFFICIAL_SAMPLES)
    vad = vad or VADConfig()
    windows = windows or WindowConfig()
    calibrated = detector.calibration.fitted
    if mode == "windows":
        clip = load_audio(path, sample_rate=None, channel=channel, allow_silence=allow_silence)
        samples = clip.samples
        if transmit is not None and samples.size:
            samples = transmit(samples, clip.sample_rate)
        cut = pipeline_windows(samples, clip.sample_rate, vad, windows)
        speech = cut[-1].speech_total_s if cut else 0.0
        result = FileScore(file=str(path), model_id=detector.model_id, mode=mode,
                           duration_s=_round(clip.duration_s), speech_s=speech,
                           spoof_probability=None, llr=None, calibrated=calibrated)
        if not cut:
            result.note = (f"no score: less than {windows.min_speech_s:g} s of speech detected")
            return result
        scores = score_arrays(detector, [w.samples for w in cut], batch_size=batch_size)
        result.windows = [
            WindowScore(start_s=w.start_s, end_s=w.end_s, speech_s=w.speech_s,
                        **{k: _round(v) for k, v in s.items()})
            for w, s in zip(cut, scores, strict=True)
        ]
        llr = aggregate_llrs([s["llr"] for s in scores], aggregation)
        result.llr = _round(llr)
        result.spoof_probability = _round(detector.calibration.probability(llr))
        return result
    if transmit is not None:
        raise AudioError("a transmission channel applies to mode 'windows' only")
    clip = load_audio(path, sample_rate=16000, channel=channel, allow_silence=allow_silence)
    x = clip.samples
    if mode == "4s":
        x = pad_by_repetition(x, official_samples)
    elif mode == "full":
        if clip.duration_s > MAX_FULL_SECONDS:
            raise AudioError(f"{path}: {clip.duration_s:.0f} s is too long for --mode full "
                             f"(limit {MAX_FULL_SECONDS:.0f} s); use --mode windows")
    else:
        raise AudioError(f"unknown scoring mode {mode!r}")
    s = score_arrays(detector, [x], batch_size=1)[0]
    end = len(x) / 16000 if mode == "full" else min(clip.duration_s, official_samples / 16000)
    win = WindowScore(start_s=0.0, end_s=_round(end), speech_s=_round(end),
                      **{k: _round(v) for k, v in s.items()})
    return FileScore(file=str(path), model_id=detector.model_id, mode=mode,
                     duration_s=_round(clip.duration_s), speech_s=_round(clip.duration_s),
                     spoof_probability=win.spoof_probability, llr=win.llr,
                     calibrated=calibrated, windows=[win])


def score_files(detector: Detector, paths: Iterable[str | Path],
                **kwargs: Any) -> Iterable[FileScore | AudioError]:
    """Score several files; a file that fails yields its :class:`AudioError` instead."""
    for p in paths:
        try:
            yield score_file(detector, p, **kwargs)
        except AudioError as exc:
            yield exc
