"""Telephone channel simulation: encode and decode audio with speech and audio codecs.

:func:`encode_decode` passes mono float audio through one codec and returns it at the same
sample rate and length, time-aligned with the input. G.711 (mu-law, A-law) and plain 8 kHz PCM
run in-process; GSM and AMR-NB run through ``sox``; the other codecs run through ``ffmpeg``. The
external tools are chained with pipes (no temporary files) and bounded by a timeout.

Each codec's delay (look-ahead, filter bank, encoder priming) was measured by cross-correlation
on speech recordings and is removed from the output, so the output lines up with the input
within about a millisecond (codec2, a vocoder that does not keep the waveform, within a few
milliseconds of its energy envelope).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import numpy as np

from nes2net_stream.audio.g711 import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode
from nes2net_stream.audio.io import float_to_pcm16, pcm16_to_float, resample
from nes2net_stream.errors import AudioError, DependencyError

Tool = Literal["internal", "sox", "ffmpeg"]

#: Seconds an external codec may run on top of :data:`TIMEOUT_PER_AUDIO_S` per audio second.
TIMEOUT_BASE_S = 20.0
#: Extra timeout allowed per second of audio.
TIMEOUT_PER_AUDIO_S = 2.0
#: Silence appended before encoding (seconds) so codec look-ahead flushes the real signal.
_TAIL_S = 0.1


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """One supported codec and how it runs.

    Attributes:
        name: the key in :data:`CODECS`.
        description: what the codec is, in a few words.
        sample_rate: the rate the codec runs at; audio is resampled to it and back.
        bitrates: the bitrates accepted by :func:`encode_decode`, in bit/s.
        default_bitrate: the bitrate used when none is given.
        tool: ``"internal"`` (numpy), ``"sox"`` or ``"ffmpeg"``.
        encoder: the ffmpeg encoder, the sox file type, or the internal codec name.
        container: the ffmpeg muxer/demuxer carrying the stream through the pipe.
        delay: codec delay in samples at :attr:`sample_rate`, removed from the output.
        package: the Debian package that provides the tool and encoder.
    """

    name: str
    description: str
    sample_rate: int
    bitrates: tuple[int, ...]
    default_bitrate: int
    tool: Tool
    encoder: str
    container: str = ""
    delay: int = 0
    package: str = ""


_OPUS_RATES = (6000, 8000, 12000, 16000, 24000)

#: Every supported codec by name. Delays are in samples at the codec's own rate.
CODECS: dict[str, CodecSpec] = {spec.name: spec for spec in (
    CodecSpec("pcm", "8 kHz 16-bit linear PCM (narrowband resampling only)", 8000,
              (128000,), 128000, "internal", "pcm"),
    CodecSpec("mulaw", "G.711 mu-law, 8 kHz", 8000, (64000,), 64000, "internal", "mulaw"),
    CodecSpec("alaw", "G.711 A-law, 8 kHz", 8000, (64000,), 64000, "internal", "alaw"),
    CodecSpec("gsm", "GSM 06.10 full rate, 8 kHz", 8000, (13000,), 13000, "sox", "gsm",
              package="sox (or ffmpeg)"),
    CodecSpec("amr_nb", "3GPP AMR narrowband (mobile telephony), 8 kHz", 8000,
              (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200), 12200, "sox", "amr-nb",
              delay=40, package="sox libsox-fmt-all"),
    CodecSpec("g726", "G.726 ADPCM, 8 kHz", 8000, (16000, 24000, 32000, 40000), 32000,
              "ffmpeg", "g726", "g726", package="ffmpeg"),
    CodecSpec("g722", "G.722 wideband ADPCM (HD voice), 16 kHz", 16000, (64000,), 64000,
              "ffmpeg", "g722", "g722", delay=22, package="ffmpeg"),
    CodecSpec("g723_1", "G.723.1 MP-MLQ, 8 kHz", 8000, (6300,), 6300, "ffmpeg", "g723_1",
              "g723_1", delay=60, package="ffmpeg"),
    CodecSpec("opus", "Opus VoIP mode, wideband 16 kHz", 16000, _OPUS_RATES, 16000, "ffmpeg",
              "libopus", "ogg", package="ffmpeg"),
    CodecSpec("opus_nb", "Opus VoIP mode, narrowband 8 kHz", 8000, _OPUS_RATES, 12000,
              "ffmpeg", "libopus", "ogg", delay=1, package="ffmpeg"),
    CodecSpec("speex", "Speex narrowband, 8 kHz", 8000, (5950, 8000, 11000, 15000), 8000,
              "ffmpeg", "libspeex", "ogg", delay=80, package="ffmpeg"),
    CodecSpec("speex_wb", "Speex wideband, 16 kHz", 16000, (12800, 16800, 23800), 16800,
              "ffmpeg", "libspeex", "ogg", delay=223, package="ffmpeg"),
    CodecSpec("mp3", "MP3 (LAME), 16 kHz, low bitrates", 16000, (8000, 16000, 24000, 32000),
              16000, "ffmpeg", "libmp3lame", "mp3", delay=1105, package="ffmpeg"),
    CodecSpec("codec2", "Codec 2 low-bitrate vocoder, 8 kHz", 8000, (3200, 2400, 1600, 1300),
              3200, "ffmpeg", "libcodec2", "codec2", delay=160, package="ffmpeg"),
    CodecSpec("aac", "AAC-LC (ffmpeg native encoder), 16 kHz", 16000, (16000, 24000, 32000),
              24000, "ffmpeg", "aac", "adts", delay=1024, package="ffmpeg"),
    CodecSpec("vorbis", "Ogg Vorbis, 16 kHz", 16000, (16000, 24000, 32000), 24000, "ffmpeg",
              "libvorbis", "ogg", package="ffmpeg"),
)}


#: GSM through ffmpeg's libgsm, used when sox is missing (same bitstream, no delay either).
_GSM_FFMPEG = replace(CODECS["gsm"], tool="ffmpeg", encoder="libgsm", container="gsm",
                      package="ffmpeg")


def get_codec(codec: str, bitrate: int | None = None) -> tuple[CodecSpec, int]:
    """Look up a codec and check the bitrate.

    Returns:
        The codec's spec and the bitrate to use (its default when ``bitrate`` is None).

    Raises:
        AudioError: unknown codec name or a bitrate the codec does not support.
    """
    spec = CODECS.get(codec)
    if spec is None:
        raise AudioError(f"unknown codec {codec!r}; valid codecs: {', '.join(CODECS)}")
    if bitrate is None:
        return spec, spec.default_bitrate
    if bitrate not in spec.bitrates:
        valid = ", ".join(str(b) for b in spec.bitrates)
        raise AudioError(f"codec {codec!r} does not support bitrate {bitrate!r} bit/s; "
                         f"valid bitrates: {valid}")
    return spec, int(bitrate)


def _which(tool: str, spec: CodecSpec) -> str:
    path = shutil.which(tool)
    if path is None:
        raise DependencyError(f"codec {spec.name!r} needs {tool}, which is not installed "
                              f"(Debian: apt-get install {spec.package})")
    return path


# ----------------------------------------------------------------------------- internal codecs

def _internal(pcm: np.ndarray, spec: CodecSpec) -> np.ndarray:
    if spec.encoder == "mulaw":
        return mulaw_decode(mulaw_encode(pcm))
    if spec.encoder == "alaw":
        return alaw_decode(alaw_encode(pcm))
    return pcm


# ----------------------------------------------------------------------------- external tools

def _sox_commands(spec: CodecSpec, bitrate: int) -> list[list[str]]:
    sox = _which("sox", spec)
    raw = ["-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-r", str(spec.sample_rate)]
    enc_opts = ["-C", str(spec.bitrates.index(bitrate))] if spec.encoder == "amr-nb" else []
    out = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r",
           str(spec.sample_rate)]
    return [[sox, "-q", "-V1", *raw, "-", *enc_opts, "-t", spec.encoder, "-"],
            [sox, "-q", "-V1", "-t", spec.encoder, "-", *out, "-"]]


def _ffmpeg_commands(spec: CodecSpec, bitrate: int) -> list[list[str]]:
    ffmpeg = _which("ffmpeg", spec)
    base = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error"]
    rate = str(spec.sample_rate)
    enc_opts = ["-b:a", str(bitrate)]
    dec_opts: list[str] = []
    if spec.encoder == "libcodec2":
        enc_opts = ["-mode", str(bitrate)]
    elif spec.encoder == "libopus":
        enc_opts += ["-application", "voip"]
    elif spec.encoder == "g726":
        dec_opts = ["-code_size", str(bitrate // spec.sample_rate), "-sample_rate", rate]
    elif spec.encoder in ("libgsm", "g722"):
        enc_opts = []
    encode = [*base, "-f", "s16le", "-ar", rate, "-ac", "1", "-i", "pipe:0", "-c:a", spec.encoder,
              *enc_opts, "-f", spec.container, "pipe:1"]
    demuxer = "aac" if spec.container == "adts" else spec.container
    decode = [*base, *dec_opts, "-f", demuxer, "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar",
              rate, "pipe:1"]
    return [encode, decode]


def _last_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


_MISSING_ENCODER = ("unknown encoder", "encoder not found", "no handler for",
                    "unknown input format", "unknown format", "could not find", "failed to open",
                    "cannot load", "unable to load", "compiled without")


def _run_pipeline(commands: list[list[str]], data: bytes, spec: CodecSpec,
                  timeout: float) -> bytes:
    """Run ``encoder | decoder`` with ``data`` on the first stdin; return the last stdout."""
    try:
        first = subprocess.Popen(commands[0], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
    except OSError as exc:
        raise DependencyError(f"codec {spec.name!r}: cannot start {commands[0][0]} ({exc}); "
                              f"Debian: apt-get install {spec.package}") from exc
    try:
        second = subprocess.Popen(commands[1], stdin=first.stdout, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
    except OSError as exc:
        first.kill()
        first.wait()
        raise DependencyError(f"codec {spec.name!r}: cannot start {commands[1][0]} ({exc}); "
                              f"Debian: apt-get install {spec.package}") from exc
    assert first.stdout is not None and first.stdin is not None
    first.stdout.close()  # the second process owns the read end now

    def feed() -> None:
        try:
            first.stdin.write(data)  # type: ignore[union-attr]
            first.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        out, err2 = second.communicate(timeout=timeout)
        err1 = first.stderr.read() if first.stderr else b""  # type: ignore[union-attr]
        first.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        for proc in (first, second):
            proc.kill()
            proc.wait()
        raise AudioError(f"codec {spec.name!r} timed out after {timeout:.0f} s") from exc
    finally:
        writer.join(timeout=1.0)
        if first.stderr:
            first.stderr.close()
    for proc, err in ((first, err1), (second, err2)):
        if proc.returncode != 0:
            message = _last_line(err)
            tool = os.path.basename(proc.args[0])  # type: ignore[index]
            if any(key in message.lower() for key in _MISSING_ENCODER):
                raise DependencyError(
                    f"codec {spec.name!r}: {tool} cannot run {spec.encoder} ({message}); install "
                    f"a build with it (Debian: apt-get install {spec.package})")
            raise AudioError(f"codec {spec.name!r}: {tool} failed: {message}")
    return out


# ----------------------------------------------------------------------------- public API

def _fit(y: np.ndarray, start: int, length: int) -> np.ndarray:
    """``y[start:start + length]``, zero-padded at the end when ``y`` is too short."""
    out = np.zeros(length, dtype=np.float32)
    part = y[start:start + length]
    out[:len(part)] = part
    return out


def encode_decode(samples: np.ndarray, sample_rate: int, codec: str, *,
                  bitrate: int | None = None) -> np.ndarray:
    """Pass audio through a codec (encode then decode) as a telephone channel would.

    Args:
        samples: mono float audio in [-1, 1] (values outside are clipped).
        sample_rate: rate of ``samples``; audio is resampled to the codec's rate and back.
        codec: a key of :data:`CODECS`.
        bitrate: bit/s, one of the codec's :attr:`CodecSpec.bitrates`; None for its default.

    Returns:
        float32 audio in [-1, 1] at ``sample_rate`` with the same length as ``samples``, the
        codec's delay removed so that it lines up with the input.

    Raises:
        AudioError: unknown codec or bitrate, invalid audio, or the codec failed.
        DependencyError: the external tool (sox, ffmpeg) or its encoder is not installed.
    """
    spec, rate_bits = get_codec(codec, bitrate)
    x = np.asarray(samples)
    if x.ndim != 1:
        raise AudioError(f"encode_decode needs mono 1-D audio, got shape {x.shape}")
    if x.size == 0:
        raise AudioError("encode_decode: no audio samples")
    if not np.all(np.isfinite(x)):
        raise AudioError("encode_decode: the audio contains NaN or infinite samples")
    if int(sample_rate) <= 0:
        raise AudioError(f"encode_decode: invalid sample rate {sample_rate}")
    if spec.name == "gsm" and shutil.which("sox") is None and shutil.which("ffmpeg"):
        spec = _GSM_FFMPEG
    native = resample(x.astype(np.float32, copy=False), int(sample_rate), spec.sample_rate)
    n = len(native)
    if spec.tool == "internal":
        y = pcm16_to_float(_internal(float_to_pcm16(native), spec))
    else:
        tail = spec.delay + int(_TAIL_S * spec.sample_rate)
        pcm = float_to_pcm16(np.concatenate([native, np.zeros(tail, dtype=np.float32)]))
        build = _sox_commands if spec.tool == "sox" else _ffmpeg_commands
        timeout = TIMEOUT_BASE_S + TIMEOUT_PER_AUDIO_S * n / spec.sample_rate
        raw = _run_pipeline(build(spec, rate_bits), pcm.astype("<i2").tobytes(), spec, timeout)
        decoded = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4")
        y = np.nan_to_num(decoded, nan=0.0, posinf=1.0, neginf=-1.0)
    y = _fit(np.clip(y, -1.0, 1.0), spec.delay, n)
    back = resample(y, spec.sample_rate, int(sample_rate))
    return np.clip(_fit(back, 0, len(x)), -1.0, 1.0)


@lru_cache(maxsize=8)
def _available(path_env: str | None) -> tuple[str, ...]:
    t = np.arange(4000, dtype=np.float32) / 8000.0
    probe = (0.3 * np.sin(2 * np.pi * 300 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    works = []
    for name in CODECS:
        try:
            y = encode_decode(probe, 8000, name)
        except (AudioError, DependencyError):
            continue
        if np.all(np.isfinite(y)):
            works.append(name)
    return tuple(works)


def available_codecs() -> list[str]:
    """Codecs that run on this machine (checked once per ``PATH`` by a short round trip)."""
    return list(_available(os.environ.get("PATH")))
