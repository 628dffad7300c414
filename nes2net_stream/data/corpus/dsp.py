"""Signal helpers shared by both classes: silence trimming, splitting at pauses, packing.

Every clip, real or synthetic, goes through the same functions so that the amount of leading
and trailing silence, the pause lengths and the utterance lengths carry no class information.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import butter, sosfilt

FRAME_S = 0.01
#: Frames this far below the loudest frame (dB) count as silence...
TRIM_RANGE_DB = 40.0
#: ...and so do frames below this absolute level (dBFS).
TRIM_FLOOR_DB = -60.0
#: Silence kept around the trimmed speech (seconds).
TRIM_MARGIN_S = 0.03
#: Utterances are packed to a target length drawn from this range (seconds)...
UTT_MIN_S, UTT_MAX_S = 2.0, 8.0
#: ...but an utterance made of a single short clip may be this short (seconds).
UTT_FLOOR_S = 1.0
#: Pauses inserted between concatenated clips (seconds).
PAUSE_RANGE_S = (0.1, 0.6)
#: Long recordings are cut into clips at most this long (seconds).
CLIP_MAX_S = 7.5


def frame_db(x: np.ndarray, rate: int) -> np.ndarray:
    """Level of each 10 ms frame in dBFS (RMS)."""
    n = max(1, int(rate * FRAME_S))
    frames = len(x) // n
    if frames == 0:
        return np.full(1, -120.0)
    f = np.asarray(x[: frames * n], dtype=np.float64).reshape(frames, n)
    return 10.0 * np.log10(np.mean(f * f, axis=1) + 1e-12)


def speech_band(x: np.ndarray, rate: int) -> np.ndarray:
    """Band-pass ``x`` to 200-3800 Hz for silence decisions.

    Hum and hiss outside the telephone band, which the channel removes later, then do not count
    as speech when trimming.
    """
    sos = butter(4, [200.0, min(3800.0, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")
    return sosfilt(sos, np.asarray(x, dtype=np.float64))


def _active(db: np.ndarray) -> np.ndarray:
    return db > max(float(db.max()) - TRIM_RANGE_DB, TRIM_FLOOR_DB)


def trim_bounds(x: np.ndarray, rate: int) -> tuple[int, int] | None:
    """Sample range of ``x`` without leading and trailing silence; None when all silent.

    Silence is judged in the telephone band (:func:`speech_band`); an empty recording (one
    ships in a Debian sounds package) counts as silent.
    """
    if len(x) < int(rate * FRAME_S):
        return None
    db = frame_db(speech_band(x, rate), rate)
    active = np.flatnonzero(_active(db))
    if active.size == 0 or db.max() <= TRIM_FLOOR_DB:
        return None
    n = int(rate * FRAME_S)
    margin = int(rate * TRIM_MARGIN_S)
    start = max(0, int(active[0]) * n - margin)
    end = min(len(x), (int(active[-1]) + 1) * n + margin)
    return start, end


def trim(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` without leading and trailing silence (empty when all silent)."""
    bounds = trim_bounds(x, rate)
    return x[:0] if bounds is None else x[bounds[0]:bounds[1]]


#: Frames within this many dB of the 95th-percentile frame count as speech for the level.
LEVEL_RANGE_DB = 20.0


def active_level_db(x: np.ndarray, rate: int) -> float:
    """Speech level in dBFS: the power mean of the frames within 20 dB of the loud ones.

    The reference is the 95th-percentile frame level, so a noise floor (which noisy real
    recordings have and clean synthetic ones lack) does not lower the measured level.
    """
    db = frame_db(x, rate)
    ref = float(np.percentile(db, 95))
    act = db[(db > ref - LEVEL_RANGE_DB) & (db > TRIM_FLOOR_DB - 30.0)]
    if act.size == 0:
        return -120.0
    return float(10.0 * np.log10(np.mean(10.0 ** (act / 10.0)) + 1e-12))


def split_at_pauses(x: np.ndarray, rate: int, rng: np.random.Generator,
                    max_s: float = CLIP_MAX_S) -> list[tuple[int, int]]:
    """Cut trimmed speech into clips at most ``max_s`` long, at pauses where possible.

    Each clip aims at a random length between 2.5 s and ``max_s``; the cut goes in the middle of
    the longest pause (run of silent frames) before that length, or at the quietest frame when
    there is no pause.
    """
    n = int(rate * FRAME_S)
    db = frame_db(speech_band(x, rate), rate)
    silent = ~_active(db)
    total = len(db)
    cuts, start = [], 0
    max_frames = int(max_s / FRAME_S)
    while total - start > max_frames:
        goal = start + int(rng.uniform(2.5, max_s) / FRAME_S)
        lo, hi = start + int(1.5 / FRAME_S), min(goal, start + max_frames)
        best, best_len, run = -1, 0, 0
        for i in range(lo, hi):
            run = run + 1 if silent[i] else 0
            if run >= best_len and run > 0:
                best, best_len = i - run // 2, run
        cut = best if best_len >= 5 else lo + int(np.argmin(db[lo:hi]))
        cuts.append(cut)
        start = cut
    bounds = [0, *cuts, total]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        seg = (a * n, len(x) if b == total else b * n)
        tb = trim_bounds(x[seg[0]:seg[1]], rate)
        if tb is not None:
            out.append((seg[0] + tb[0], seg[0] + tb[1]))
    return out


def pack(durations: Sequence[float], rng: np.random.Generator) -> list[list[int]]:
    """Group consecutive clips into utterances of a random target length (2-8 s).

    Clips are taken while the utterance is shorter than its target; a clip that would push it
    over 8 s starts the next one. The last group is dropped when shorter than 1 s. The same rule
    packs bona fide and spoof clips.

    Returns:
        Lists of clip indices, in order.
    """
    groups: list[list[int]] = []
    cur: list[int] = []
    total = 0.0
    target = rng.uniform(UTT_MIN_S, UTT_MAX_S)
    pause = float(np.mean(PAUSE_RANGE_S))
    for i, d in enumerate(durations):
        if cur and total + pause + d > UTT_MAX_S:
            groups.append(cur)
            cur, total, target = [], 0.0, rng.uniform(UTT_MIN_S, UTT_MAX_S)
        total += (pause if cur else 0.0) + d
        cur.append(i)
        if total >= target:
            groups.append(cur)
            cur, total, target = [], 0.0, rng.uniform(UTT_MIN_S, UTT_MAX_S)
    if cur and total >= UTT_FLOOR_S:
        groups.append(cur)
    return groups


def concatenate(clips: Sequence[np.ndarray], rate: int, rng: np.random.Generator) -> np.ndarray:
    """Join clips with random pauses of digital silence (noise is added later by the channel)."""
    parts: list[np.ndarray] = []
    for i, c in enumerate(clips):
        if i:
            parts.append(np.zeros(int(rng.uniform(*PAUSE_RANGE_S) * rate), dtype=np.float32))
        parts.append(np.asarray(c, dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
