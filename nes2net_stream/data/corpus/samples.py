"""The committed sample calls and test fixtures, and how to regenerate them.

The human side is the LibriVox reader of the pocketsphinx test data (speaker ``PS-LIBRIVOX``, an
eval speaker never used for training); the synthetic side is Piper's ``joe`` voice reading the
same transcripts. Both go through the same steps, so they differ only in who speaks.

Regenerate with ``python -m nes2net_stream.data.corpus.samples SAMPLES_DIR FIXTURES_DIR``.
Piper's sampling noise is not seeded by ONNX Runtime, so regenerated synthetic files differ
slightly from the committed ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nes2net_stream.audio.io import resample, write_audio
from nes2net_stream.data.corpus import dsp
from nes2net_stream.data.corpus.channel import ChannelParams, apply_channel
from nes2net_stream.data.corpus.sources import DATA_PACKAGES, package_folder
from nes2net_stream.data.corpus.synthesis import piper
from nes2net_stream.data.corpus.texts import read_sphinx_transcripts, sentence_case
from nes2net_stream.errors import DependencyError

#: LibriVox clips of the call, in reading order, and the one used for the short fixtures.
CALL_CLIPS = ("0880", "0890", "0920", "0930", "0870")
SHORT_CLIP = "0930"
CALL_MAX_S = 24.0
#: Pauses between the sentences of the call (seconds), the same for both sides.
CALL_PAUSES_S = (0.8, 0.6, 0.9, 0.7)
#: The call's channel: 300-3400 Hz, G.711 mu-law, quiet pink noise.
CALL_CHANNEL = ChannelParams(codec="mulaw", bitrate=None, low_hz=300.0, high_hz=3400.0,
                             level_db=-24.0, snr_db=40.0, noise_tilt=1.0)
PIPER_SETTINGS = {"length_scale": 1.0, "noise_scale": 0.667, "noise_w": 0.8}
_TEXT_FIXES = {"a more a amiable": "a more amiable"}


def _librivox() -> tuple[Path, dict[str, str]]:
    package, default, _ = DATA_PACKAGES[3]
    root = package_folder(package, default)
    if root is None:
        raise DependencyError(f"the LibriVox clips are missing: apt-get install {package}")
    folder = root / "librivox"
    return folder, read_sphinx_transcripts(folder / "transcription")


def _clip_id(suffix: str) -> str:
    return f"sense_and_sensibility_01_austen_64kb-{suffix}"


def _human(folder: Path, suffix: str) -> tuple[np.ndarray, int]:
    from nes2net_stream.audio.io import load_audio

    clip = load_audio(folder / f"{_clip_id(suffix)}.wav", sample_rate=16000)
    return dsp.trim(clip.samples, 16000), 16000


def _synthetic(text: str, duration_s: float) -> tuple[np.ndarray, int]:
    """Piper reading ``text``, slowed or sped up to last about ``duration_s`` seconds."""
    for wrong, right in _TEXT_FIXES.items():
        text = text.replace(wrong, right)
    settings = dict(PIPER_SETTINGS)
    y = np.zeros(0, dtype=np.float32)
    for _ in range(3):
        raw, rate = piper(sentence_case(text), settings, Path("."))
        y = dsp.trim(resample(raw, rate, 16000), 16000)
        ratio = duration_s / max(len(y) / 16000, 0.1)
        if abs(ratio - 1.0) < 0.05:
            break
        settings["length_scale"] = float(np.clip(settings["length_scale"] * ratio, 0.8, 1.5))
    return y, 16000


def _call(parts: list[np.ndarray], rate: int, rng: np.random.Generator) -> np.ndarray:
    lead = np.zeros(int(0.4 * rate), dtype=np.float32)
    pieces = [lead]
    for i, p in enumerate(parts):
        if i:
            pieces.append(np.zeros(int(CALL_PAUSES_S[i - 1] * rate), dtype=np.float32))
        pieces.append(p)
    pieces.append(lead)
    return apply_channel(np.concatenate(pieces), rate, CALL_CHANNEL, rng)


def build_sample_calls(out_dir: Path) -> dict[str, Path]:
    """Write ``human_call.wav`` and ``synthetic_call.wav`` (8 kHz, mu-law decoded, 16-bit).

    The human call joins LibriVox sentences (up to 24 s of speech and pauses); the synthetic
    call is Piper ``joe`` reading the same transcripts, its speaking rate set so that each
    sentence lasts about as long as the human one, with the same pauses and channel.
    """
    folder, texts = _librivox()
    human, synthetic, total = [], [], 0.4
    for suffix in CALL_CLIPS[: len(CALL_PAUSES_S) + 1]:
        x, _ = _human(folder, suffix)
        extra = len(x) / 16000 + (CALL_PAUSES_S[len(human) - 1] if human else 0.0)
        if total + extra > CALL_MAX_S:
            break
        human.append(x)
        synthetic.append(_synthetic(texts[_clip_id(suffix)], len(x) / 16000)[0])
        total += extra
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, parts in (("human_call", human), ("synthetic_call", synthetic)):
        y = _call(parts, 16000, np.random.default_rng(7))
        paths[name] = write_audio(out_dir / f"{name}.wav", y, 8000)
    return paths


def build_test_fixtures(out_dir: Path) -> dict[str, Path]:
    """Write ``human_short.wav`` and ``synthetic_short.wav`` (16 kHz, same sentence, 3-5 s)."""
    folder, texts = _librivox()
    pad = np.zeros(int(0.15 * 16000), dtype=np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    human = _human(folder, SHORT_CLIP)[0]
    synthetic = _synthetic(texts[_clip_id(SHORT_CLIP)], len(human) / 16000)[0]
    for name, x in (("human_short", human), ("synthetic_short", synthetic)):
        gain = 10.0 ** ((-24.0 - dsp.active_level_db(x, 16000)) / 20.0)
        y = np.concatenate([pad, np.clip(x * gain, -0.99, 0.99), pad])
        paths[name] = write_audio(out_dir / f"{name}.wav", y, 16000)
    return paths


def main() -> None:
    """Command-line entry: regenerate the sample calls and the test fixtures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples_dir", type=Path)
    parser.add_argument("fixtures_dir", type=Path)
    args = parser.parse_args()
    for path in [*build_sample_calls(args.samples_dir).values(),
                 *build_test_fixtures(args.fixtures_dir).values()]:
        print(path)


if __name__ == "__main__":
    main()
