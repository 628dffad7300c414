"""Speech detection with webrtcvad plus onset/hangover smoothing.

webrtcvad classifies 10, 20 or 30 ms frames of 16-bit mono PCM at 8/16/32/48 kHz. Single-frame
decisions flicker; the smoother requires ``onset_frames`` consecutive speech frames to start a
speech run and keeps it open for ``hangover_ms`` after the last speech frame so word endings and
short pauses stay inside the speech stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import webrtcvad

from nes2net_stream.audio.io import float_to_pcm16
from nes2net_stream.errors import ConfigError

VAD_RATES = (8000, 16000, 32000, 48000)
VAD_FRAME_MS = (10, 20, 30)


@dataclass(frozen=True)
class VADConfig:
    """Speech-detection settings.

    Attributes:
        enabled: when false every frame counts as speech.
        aggressiveness: webrtcvad mode 0 (least) to 3 (most aggressive filtering of non-speech).
        frame_ms: analysis frame, 10, 20 or 30 ms.
        hangover_ms: speech is kept this long after the last speech frame.
        onset_frames: consecutive speech frames needed to start a speech run.
    """

    enabled: bool = True
    aggressiveness: int = 2
    frame_ms: int = 30
    hangover_ms: int = 300
    onset_frames: int = 2

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"vad.aggressiveness: must be 0..3, got {self.aggressiveness}")
        if self.frame_ms not in VAD_FRAME_MS:
            raise ConfigError(f"vad.frame_ms: must be one of {VAD_FRAME_MS}, got {self.frame_ms}")
        if not 0 <= self.hangover_ms <= 5000:
            raise ConfigError(f"vad.hangover_ms: must be 0..5000, got {self.hangover_ms}")
        if not 1 <= self.onset_frames <= 50:
            raise ConfigError(f"vad.onset_frames: must be 1..50, got {self.onset_frames}")


class SpeechDetector:
    """Stateful frame classifier: ``is_speech(frame)`` with onset and hangover smoothing."""

    def __init__(self, cfg: VADConfig, sample_rate: int = 16000):
        if sample_rate not in VAD_RATES:
            raise ConfigError(f"VAD sample rate must be one of {VAD_RATES}, got {sample_rate}")
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * cfg.frame_ms // 1000
        self._vad = webrtcvad.Vad(cfg.aggressiveness) if cfg.enabled else None
        self._hang_frames = cfg.hangover_ms // cfg.frame_ms
        self._run = 0
        self._since_speech = self._hang_frames + 1
        self._active = False

    def reset(self) -> None:
        """Forget the smoothing state (start of a new stream)."""
        self._run = 0
        self._since_speech = self._hang_frames + 1
        self._active = False

    def is_speech(self, frame: np.ndarray) -> bool:
        """Classify one frame of int16 samples (exactly ``frame_samples`` long)."""
        if self._vad is None:
            return True
        if frame.shape[0] != self.frame_samples:
            raise ValueError(f"VAD frame must have {self.frame_samples} samples, "
                             f"got {frame.shape[0]}")
        raw = self._vad.is_speech(np.ascontiguousarray(frame, dtype=np.int16).tobytes(),
                                  self.sample_rate)
        return self.smooth(raw)

    def smooth(self, raw: bool) -> bool:
        """Apply onset and hangover smoothing to one raw frame decision."""
        if raw:
            self._run += 1
            if self._run >= self.cfg.onset_frames:
                self._active = True
                self._since_speech = 0
        else:
            self._run = 0
            self._since_speech += 1
            if self._since_speech > self._hang_frames:
                self._active = False
        return self._active


def speech_stream(samples: np.ndarray, cfg: VADConfig, sample_rate: int = 16000) -> np.ndarray:
    """The frames of a whole signal that a live channel keeps as speech, joined.

    This is the stream live windows are cut from (silence dropped, the partial last frame
    too), so a model trained on it sees what the service will score.
    """
    detector = SpeechDetector(cfg, sample_rate)
    n = detector.frame_samples
    x = np.asarray(samples, dtype=np.float32)
    frames = x[: (x.shape[0] // n) * n].reshape(-1, n)
    pcm = float_to_pcm16(frames)
    keep = np.fromiter((detector.is_speech(f) for f in pcm), dtype=bool, count=len(pcm))
    return np.ascontiguousarray(frames[keep].reshape(-1))
