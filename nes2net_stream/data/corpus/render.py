"""Work done in the worker processes: analysing recordings and rendering utterances.

A job carries everything it needs (paths, settings, a seed), so results depend only on the job
and not on which process runs it or in which order.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from nes2net_stream.audio.io import resample, write_audio
from nes2net_stream.data.corpus import dsp
from nes2net_stream.data.corpus.channel import ChannelParams, apply_channel
from nes2net_stream.data.corpus.sources import Recording, read_recording
from nes2net_stream.data.corpus.synthesis import TTS_ENGINES, WORLD_SYSTEMS, world
from nes2net_stream.errors import AudioError

#: A piece of a recording: (recording, first sample, end sample).
Clip = tuple[Recording, int, int]


@dataclass(frozen=True, slots=True)
class AnalyseJob:
    """Find the speech clips of one recording."""

    recording: Recording
    seed: int


@dataclass(frozen=True, slots=True)
class Analysis:
    """Clips of one recording: sample ranges at ``rate``."""

    rate: int
    clips: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class UtteranceJob:
    """Render one utterance into a FLAC file."""

    utterance: str
    out_path: Path
    system: str  # "-" for bona fide
    channel: ChannelParams
    seed: int
    clips: tuple[Clip, ...] = ()  # bona fide, or the sources of WORLD spoofs
    texts: tuple[str, ...] = ()  # candidate texts of TTS spoofs
    params: dict[str, Any] = field(default_factory=dict)
    target_s: float = 0.0  # spoofs: packing target


@lru_cache(maxsize=32)
def _read(rec: Recording) -> tuple[np.ndarray, int]:
    return read_recording(rec)


def analyse(job: AnalyseJob) -> Analysis:
    """Trim a recording and cut it into clips of at most 7.5 s at pauses."""
    x, rate = _read(job.recording)
    bounds = dsp.trim_bounds(x, rate)
    if bounds is None:
        return Analysis(rate, ())
    start, end = bounds
    if (end - start) / rate <= dsp.CLIP_MAX_S:
        clips = [(start, end)] if (end - start) / rate >= 0.15 else []
        return Analysis(rate, tuple(clips))
    rng = np.random.default_rng(job.seed)
    parts = dsp.split_at_pauses(x[start:end], rate, rng)
    return Analysis(rate, tuple((start + a, start + b) for a, b in parts
                                if (b - a) / rate >= 0.15))


def _stream(job: UtteranceJob, workdir: Path) -> Iterator[tuple[np.ndarray, int]]:
    if job.system == "-":
        for rec, a, b in job.clips:
            x, rate = _read(rec)
            yield x[a:b], rate
    elif job.system in WORLD_SYSTEMS:
        for rec, a, b in job.clips:
            x, rate = _read(rec)
            pad = int(0.05 * rate)  # analysis context around the clip
            lo, hi = max(0, a - pad), min(len(x), b + pad)
            y, out_rate = world(x[lo:hi], rate, job.params)
            yield dsp.trim(y, out_rate), out_rate
    else:
        engine = TTS_ENGINES[job.system]
        failure: AudioError | None = None
        produced = False
        params = {**job.params, "seed": job.seed}  # noise of stochastic engines (Piper)
        for text in job.texts:
            try:
                y, rate = engine(text, params, workdir)
            except AudioError as exc:  # one unreadable text: take the next one
                failure = exc
                continue
            y = dsp.trim(y, rate)
            if len(y) >= int(0.1 * rate):
                produced = True
                yield y, rate
        if not produced and failure is not None:
            raise AudioError(f"{job.utterance}: system {job.system} failed on every text; "
                             f"last error: {failure}")


def _collect(job: UtteranceJob, workdir: Path) -> tuple[list[np.ndarray], int]:
    """Clips of a bona fide utterance, or spoof clips packed as close as possible to the target.

    Spoof targets are drawn from the lengths of the split's bona fide utterances, so both
    classes end up with the same length distribution.
    """
    clips: list[np.ndarray] = []
    rate = 0
    total = 0.0
    pause = float(np.mean(dsp.PAUSE_RANGE_S))
    for y, r in _stream(job, workdir):
        if rate == 0:
            rate = r
        elif r != rate:
            y = resample(y, r, rate)
        d = len(y) / rate
        if job.system == "-":
            clips.append(y)
            continue
        if d > dsp.UTT_MAX_S:
            continue  # a sentence longer than any utterance: take the next text
        grown = total + pause + d
        if clips and (grown > dsp.UTT_MAX_S or abs(grown - job.target_s) >= job.target_s - total):
            break  # the next clip would not bring the length closer to the target
        clips.append(y)
        total = grown if len(clips) > 1 else d
        if total >= job.target_s:
            break
    return clips, rate


def render(job: UtteranceJob) -> tuple[str, float, str]:
    """Build one utterance, pass it through its channel and write it as 8 kHz FLAC.

    Returns:
        The utterance id, its duration in seconds and the SHA-256 of the written file.

    Raises:
        AudioError: no usable audio, or a synthesiser or codec failed.
    """
    rng = np.random.default_rng(job.seed)
    with tempfile.TemporaryDirectory(prefix="nes2net-corpus-") as tmp:
        clips, rate = _collect(job, Path(tmp))
    if not clips:
        raise AudioError(f"{job.utterance}: system {job.system} produced no usable audio")
    x = dsp.trim(dsp.concatenate(clips, rate, rng), rate)
    y = apply_channel(x, rate, job.channel, rng)
    write_audio(job.out_path, y, 8000)
    digest = hashlib.sha256(job.out_path.read_bytes()).hexdigest()
    return job.utterance, len(y) / 8000.0, digest
