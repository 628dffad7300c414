"""Reading, validating and resampling audio files.

Every model in this project works on 16 kHz mono float32 samples in [-1, 1]. Files are read with
soundfile (WAV, FLAC, OGG, MP3 and the other libsndfile formats); formats libsndfile does not
read (GSM, M4A, Opus, AMR...) are decoded with ``sox`` or ``ffmpeg`` when installed. Resampling
uses soxr, the SoX resampler library.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from nes2net_stream.errors import AudioError, DependencyError

MODEL_SAMPLE_RATE = 16_000
#: Shortest audio accepted for scoring, in seconds (one webrtcvad frame is 30 ms).
MIN_DURATION_S = 0.1
#: Longest file read at once, in seconds: longer files must be split or streamed.
MAX_DURATION_S = 4 * 3600.0
#: Peak level below which a file is treated as digital silence (about -90 dBFS).
SILENCE_PEAK = 3e-5

ChannelSelect = Literal["mix"] | int


@dataclass(frozen=True, slots=True)
class AudioClip:
    """Mono float32 audio at :attr:`sample_rate` plus what the source file was."""

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return len(self.samples) / float(self.sample_rate)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample mono float32 audio with soxr (high quality); a no-op when rates match."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if rate_in == rate_out:
        return x
    if rate_in <= 0 or rate_out <= 0:
        raise AudioError(f"invalid sample rate {rate_in} -> {rate_out}")
    return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def _decode_external(path: Path) -> tuple[np.ndarray, int]:
    """Decode with sox or ffmpeg to 16-bit WAV on a pipe; returns (frames x channels, rate)."""
    import io

    commands = []
    if shutil.which("sox"):
        commands.append(["sox", "-q", str(path), "-t", "wav", "-e", "signed-integer",
                         "-b", "16", "-"])
    if shutil.which("ffmpeg"):
        commands.append(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "wav",
                         "-acodec", "pcm_s16le", "-"])
    if not commands:
        raise DependencyError(
            f"cannot decode {path.name}: soundfile does not read this format and neither sox nor "
            "ffmpeg is installed (Debian: apt-get install sox libsox-fmt-all ffmpeg)"
        )
    last_error = ""
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=600)
        if proc.returncode == 0 and proc.stdout:
            data, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
            return data, int(rate)
        last_error = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        last_error = last_error[0]
    raise AudioError(f"cannot decode {path}: {last_error or 'unknown format'}")


def _read_any(path: Path) -> tuple[np.ndarray, int]:
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return _decode_external(path)
    if info.duration > MAX_DURATION_S:
        raise AudioError(f"{path}: {info.duration:.0f} s is longer than the {MAX_DURATION_S:.0f} s "
                         "limit for one file; stream it instead")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"cannot read {path}: {exc}") from exc
    return data, int(rate)


def select_channel(frames: np.ndarray, channel: ChannelSelect) -> np.ndarray:
    """Pick one channel of (frames x channels) audio, or average them with ``"mix"``."""
    n = frames.shape[1]
    if channel == "mix":
        return frames.mean(axis=1) if n > 1 else frames[:, 0]
    if not isinstance(channel, int) or not 0 <= channel < n:
        raise AudioError(f"channel {channel!r} does not exist: the audio has {n} channel(s)")
    return frames[:, channel]


def validate_samples(samples: np.ndarray, sample_rate: int, *, name: str = "audio",
                     min_duration_s: float = MIN_DURATION_S, allow_silence: bool = False) -> None:
    """Raise :class:`AudioError` for empty, too short, non-finite or silent audio."""
    if samples.size == 0:
        raise AudioError(f"{name}: no audio samples")
    if not np.all(np.isfinite(samples)):
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError(f"{name}: {bad} samples are NaN or infinite")
    duration = samples.size / float(sample_rate)
    if duration < min_duration_s:
        raise AudioError(f"{name}: {duration:.3f} s of audio is shorter than the "
                         f"{min_duration_s:.2f} s minimum")
    if not allow_silence and float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioError(f"{name}: the audio is silent (peak below -90 dBFS)")


def _read_file(p: Path) -> tuple[np.ndarray, int]:
    """(frames x channels, rate) of an existing, non-empty audio file."""
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if not p.is_file():
        raise AudioError(f"not a file: {p}")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: the file is empty")
    frames, rate = _read_any(p)
    if rate <= 0:
        raise AudioError(f"{p}: invalid sample rate {rate}")
    return frames, rate


def load_audio(path: str | Path, *, sample_rate: int | None = MODEL_SAMPLE_RATE,
               channel: ChannelSelect = "mix", allow_silence: bool = False) -> AudioClip:
    """Read an audio file as validated mono float32 at ``sample_rate``.

    Args:
        path: any format soundfile, sox or ffmpeg can decode.
        sample_rate: output rate (the file is resampled with soxr); ``None`` keeps the
            file's own rate.
        channel: ``"mix"`` averages all channels, an integer picks one (0-based).
        allow_silence: accept digitally silent files instead of raising.

    Raises:
        AudioError: the file is missing, unreadable, empty, too short, silent or non-finite.
    """
    frames, rate = _read_file(Path(path))
    mono = select_channel(frames, channel)
    validate_samples(mono, rate, name=str(path), allow_silence=allow_silence)
    mono = np.clip(mono, -1.0, 1.0)
    out_rate = rate if sample_rate is None else sample_rate
    return AudioClip(samples=resample(mono, rate, out_rate), sample_rate=out_rate,
                     source_rate=rate, source_channels=frames.shape[1])


def channel_count(path: str | Path) -> int:
    """How many channels an audio file has (AudioError as :func:`load_audio`)."""
    try:
        return int(sf.info(str(path)).channels)  # from the header, where soundfile reads it
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return _read_file(Path(path))[0].shape[1]


def load_audio_channels(path: str | Path, *, sample_rate: int = MODEL_SAMPLE_RATE,
                        channels: int | None = None) -> np.ndarray:
    """Read an audio file as (frames x channels) float32 at ``sample_rate``, channels kept.

    The mix is validated as :func:`load_audio` validates audio; a silent channel is allowed (a
    party who never spoke). ``channels``, when given, is the count the file must have.

    Raises:
        AudioError: as :func:`load_audio`, or the file has another number of channels.
    """
    frames, rate = _read_file(Path(path))
    if channels is not None and frames.shape[1] != channels:
        raise AudioError(f"{path}: {frames.shape[1]} channel(s), {channels} expected")
    validate_samples(select_channel(frames, "mix"), rate, name=str(path))
    frames = np.clip(frames, -1.0, 1.0)
    return np.stack([resample(frames[:, i], rate, sample_rate)
                     for i in range(frames.shape[1])], axis=1)


def write_audio(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float audio as 16-bit PCM (format from the suffix: .wav or .flac)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(p), np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), sample_rate,
             subtype="PCM_16")
    return p


def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float [-1, 1] to int16 with rounding and clipping."""
    return np.clip(np.round(np.asarray(samples) * 32767.0), -32768, 32767).astype(np.int16)


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 samples to float32 in [-1, 1)."""
    return np.asarray(pcm, dtype=np.float32) / 32768.0
