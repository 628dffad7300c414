"""Per-channel audio path: resample to 16 kHz, detect speech, cut speech-only windows.

The same :class:`ChannelPipeline` serves live calls (fed chunk by chunk as audio arrives) and
file scoring (fed the whole file), so a window scored while streaming is bit-identical to the
window that ``nes2net-stream score`` cuts from the same audio.
"""

from __future__ import annotations

import numpy as np
import soxr

from nes2net_stream.audio.io import float_to_pcm16
from nes2net_stream.audio.vad import SpeechDetector, VADConfig
from nes2net_stream.audio.windows import SpeechWindow, SpeechWindower, WindowConfig

MODEL_RATE = 16_000


class ChannelPipeline:
    """One audio channel: ``push`` float32 samples at ``input_rate``, get windows back."""

    def __init__(self, input_rate: int, vad: VADConfig, windows: WindowConfig):
        if input_rate <= 0:
            raise ValueError(f"invalid input sample rate {input_rate}")
        self.input_rate = input_rate
        self._resampler = (
            None if input_rate == MODEL_RATE
            else soxr.ResampleStream(input_rate, MODEL_RATE, 1, dtype="float32", quality="HQ")
        )
        self._vad = SpeechDetector(vad, MODEL_RATE)
        self._windower = SpeechWindower(windows, MODEL_RATE)
        self._frame = self._vad.frame_samples
        self._pending = np.zeros(0, dtype=np.float32)
        self._consumed = 0  # model-rate samples already framed
        self._input_samples = 0
        self._finished = False

    @property
    def speech_seconds(self) -> float:
        """Seconds of speech detected so far."""
        return self._windower.speech_seconds

    @property
    def duration_seconds(self) -> float:
        """Seconds of audio received so far (input clock)."""
        return self._input_samples / self.input_rate

    @property
    def windows_emitted(self) -> int:
        """Windows produced so far."""
        return self._windower.windows_emitted

    def push(self, samples: np.ndarray) -> list[SpeechWindow]:
        """Feed float32 mono samples in [-1, 1] at the input rate."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        x = np.asarray(samples, dtype=np.float32)
        self._input_samples += x.shape[0]
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=False)
        return self._frames(x)

    def advance(self, seconds: float) -> None:
        """Account for a gap in the input (audio paused or discarded by the provider).

        The stream clock moves on by ``seconds`` so later window times match the provider's
        position; the partial frame before the gap is dropped. Speech-only windows already
        skip silence, so a gap is treated like one.
        """
        if seconds <= 0 or self._finished:
            return
        self._pending = np.zeros(0, dtype=np.float32)
        self._consumed += int(round(seconds * MODEL_RATE))
        self._input_samples += int(round(seconds * self.input_rate))

    def finish(self) -> list[SpeechWindow]:
        """End of stream: flush the resampler and emit a final window if one is due."""
        if self._finished:
            return []
        self._finished = True
        out: list[SpeechWindow] = []
        if self._resampler is not None:
            out.extend(self._frames(self._resampler.resample_chunk(np.zeros(0, np.float32),
                                                                   last=True)))
        last = self._windower.finish()
        if last is not None:
            out.append(last)
        return out

    def _frames(self, x: np.ndarray) -> list[SpeechWindow]:
        buf = np.concatenate((self._pending, x)) if self._pending.size else x
        n_frames = buf.shape[0] // self._frame
        out: list[SpeechWindow] = []
        whole = buf[:n_frames * self._frame]
        pcm_all = float_to_pcm16(whole)
        for i in range(n_frames):
            frame = whole[i * self._frame:(i + 1) * self._frame]
            pcm = pcm_all[i * self._frame:(i + 1) * self._frame]
            time_s = self._consumed / MODEL_RATE
            self._consumed += self._frame
            window = self._windower.push(frame, self._vad.is_speech(pcm), time_s)
            if window is not None:
                out.append(window)
        self._pending = buf[n_frames * self._frame:].copy()
        return out
