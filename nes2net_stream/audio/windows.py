"""Speech-only sliding windows.

Frames that the VAD marks as speech are appended to a per-channel speech stream (silence is
dropped). Every ``hop_s`` of new speech, once ``window_s`` of speech has accumulated, the last
``window_s`` of the speech stream becomes a window to score. When the stream ends, a final
window covers the speech since the last one (if at least ``min_new_speech_s``), and a call that
never reached a full window is still scored once if it holds at least ``min_speech_s`` of
speech; windows shorter than ``window_s`` are padded by repeating them, as the official
Nes2Net scripts do for short inputs.

Memory is bounded: only the last ``window_s`` of speech is kept.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from nes2net_stream.errors import ConfigError


@dataclass(frozen=True)
class WindowConfig:
    """Sliding-window settings (seconds of speech).

    Attributes:
        window_s: window length scored by the model.
        hop_s: new speech between consecutive windows.
        min_speech_s: a call shorter than one window is scored if it has this much speech.
        min_new_speech_s: at the end of a stream, speech since the last window that is worth a
            final window.
    """

    window_s: float = 4.0
    hop_s: float = 1.0
    min_speech_s: float = 1.0
    min_new_speech_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0.5 <= self.window_s <= 30.0:
            raise ConfigError(f"windows.window_s: must be 0.5..30, got {self.window_s}")
        if not 0.1 <= self.hop_s <= self.window_s:
            raise ConfigError(f"windows.hop_s: must be 0.1..window_s, got {self.hop_s}")
        if not 0.1 <= self.min_speech_s <= self.window_s:
            raise ConfigError(f"windows.min_speech_s: must be 0.1..window_s, got "
                              f"{self.min_speech_s}")
        if not 0.0 <= self.min_new_speech_s <= self.window_s:
            raise ConfigError(f"windows.min_new_speech_s: must be 0..window_s, got "
                              f"{self.min_new_speech_s}")


@dataclass(frozen=True)
class SpeechWindow:
    """One window of speech to score.

    Attributes:
        index: 0-based window number within the channel.
        samples: float32 samples at the model rate, exactly ``window_s`` long (padded by
            repetition when ``speech_s`` is shorter).
        start_s / end_s: stream time (seconds since the channel started) of the window's first
            and last speech sample; silence dropped in between is not counted in ``speech_s``.
        speech_s: seconds of real speech in the window.
        speech_total_s: speech seconds of the channel up to the end of this window.
        final: emitted when the stream ended.
        stream_end: speech samples of the channel up to the end of this window (the window
            is the stream's samples ``[stream_end - window, stream_end)`` unless padded).
    """

    index: int
    samples: np.ndarray
    start_s: float
    end_s: float
    speech_s: float
    speech_total_s: float
    final: bool = False
    stream_end: int = 0

    @property
    def padded(self) -> bool:
        """True when the window was filled by repetition."""
        return self.speech_s * 16000 + 0.5 < len(self.samples)


def pad_by_repetition(samples: np.ndarray, length: int) -> np.ndarray:
    """Tile ``samples`` up to ``length`` (or crop), like the official ``pad``."""
    n = samples.shape[0]
    if n == 0:
        raise ValueError("cannot pad an empty signal")
    if n >= length:
        return samples[:length]
    reps = length // n + 1
    return np.tile(samples, reps)[:length]


class SpeechWindower:
    """Turns a stream of (frame, is_speech, time) into :class:`SpeechWindow` objects."""

    def __init__(self, cfg: WindowConfig, sample_rate: int = 16000):
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.window_samples = int(round(cfg.window_s * sample_rate))
        self.hop_samples = int(round(cfg.hop_s * sample_rate))
        self._frames: deque[tuple[np.ndarray, float]] = deque()  # (samples, start time)
        self._buffered = 0
        self._speech_total = 0
        self._since_emit = 0
        self._emitted = 0

    @property
    def speech_seconds(self) -> float:
        """Speech seen so far on this channel."""
        return self._speech_total / self.sample_rate

    @property
    def windows_emitted(self) -> int:
        """Number of windows produced so far."""
        return self._emitted

    def push(self, frame: np.ndarray, is_speech: bool, time_s: float) -> SpeechWindow | None:
        """Add one analysis frame starting at ``time_s``; return a window when one is due."""
        if not is_speech:
            return None
        n = frame.shape[0]
        self._frames.append((frame, time_s))
        self._buffered += n
        self._speech_total += n
        self._since_emit += n
        while self._buffered - self._frames[0][0].shape[0] >= self.window_samples:
            old, _ = self._frames.popleft()
            self._buffered -= old.shape[0]
        if self._buffered >= self.window_samples and (
            self._emitted == 0 or self._since_emit >= self.hop_samples
        ):
            return self._emit(final=False)
        return None

    def finish(self) -> SpeechWindow | None:
        """End of stream: a last window over unscored speech, if there is enough of it."""
        if self._speech_total == 0:
            return None
        if self._emitted == 0:
            if self._speech_total < self.cfg.min_speech_s * self.sample_rate:
                return None
            return self._emit(final=True)
        if self._since_emit >= max(1, int(self.cfg.min_new_speech_s * self.sample_rate)):
            return self._emit(final=True)
        return None

    def _emit(self, *, final: bool) -> SpeechWindow:
        samples = np.concatenate([f for f, _ in self._frames])
        take = min(self.window_samples, samples.shape[0])
        skip = samples.shape[0] - take
        samples = samples[skip:]
        # locate the stream time of the first kept sample
        first_time = self._frames[0][1]
        start_s = first_time + skip / self.sample_rate
        last_frame, last_time = self._frames[-1]
        end_s = last_time + last_frame.shape[0] / self.sample_rate
        window = SpeechWindow(
            index=self._emitted,
            samples=pad_by_repetition(samples, self.window_samples).astype(np.float32, copy=True),
            start_s=round(start_s, 4),
            end_s=round(end_s, 4),
            speech_s=round(take / self.sample_rate, 4),
            speech_total_s=round(self._speech_total / self.sample_rate, 4),
            final=final,
            stream_end=self._speech_total,
        )
        self._emitted += 1
        self._since_emit = 0
        return window
