"""ASVspoof-style protocol files: reading and writing.

The ASVspoof 2019 LA layout has five space-separated columns per trial::

    SPEAKER  UTTERANCE  ENVIRONMENT  SYSTEM  KEY
    LA_0079  LA_T_1138215  -  -  bonafide
    LA_0079  LA_T_1271820  -  A01  spoof

ASVspoof 2021 keys add columns (codec, transmission, trim, phase) around the same fields, and
ASVspoof 5 keys have ten columns. The reader accepts all of them: the speaker is the first
column, the utterance the second, the key is the ``bonafide``/``spoof`` token and the system is
the token just before it (``-`` for bona fide trials). The demo corpus writes the 2019 layout and
puts the telephone channel it applied in the ENVIRONMENT column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nes2net_stream.errors import DataError

BONAFIDE = "bonafide"
SPOOF = "spoof"
_KEYS = (BONAFIDE, SPOOF)


@dataclass(frozen=True, slots=True)
class Trial:
    """One line of a protocol file."""

    speaker: str
    utterance: str
    system: str
    key: str
    environment: str = "-"

    @property
    def is_spoof(self) -> bool:
        """True for spoofed trials."""
        return self.key == SPOOF

    @property
    def label(self) -> int:
        """Class index in the official convention: 1 = bona fide, 0 = spoof."""
        return 0 if self.is_spoof else 1


def parse_line(line: str, *, where: str = "protocol") -> Trial | None:
    """Parse one protocol line; blank lines and ``#`` comments give ``None``."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    cols = text.split()
    key_idx = next((i for i, c in enumerate(cols) if c in _KEYS), None)
    if key_idx is None or len(cols) < 2:
        raise DataError(f"{where}: no 'bonafide' or 'spoof' key in line: {text!r}")
    if key_idx == 0:
        raise DataError(f"{where}: key found before the utterance id in line: {text!r}")
    if key_idx == 1:
        # two-column key files: UTTERANCE KEY
        return Trial(speaker="-", utterance=cols[0], system="-", key=cols[1])
    system = cols[key_idx - 1] if key_idx >= 3 else "-"
    environment = cols[2] if key_idx >= 4 else "-"
    return Trial(speaker=cols[0], utterance=cols[1], system=system, key=cols[key_idx],
                 environment=environment)


def read_protocol(path: str | Path) -> list[Trial]:
    """Read a protocol or key file in any of the supported ASVspoof layouts."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"protocol file not found: {p}")
    trials: list[Trial] = []
    seen: set[str] = set()
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if n == 1 and line.lower().startswith(("filename", "spk\t", "speaker")):
                continue  # header of the ASVspoof 5 tab-separated key files
            trial = parse_line(line, where=f"{p}:{n}")
            if trial is None:
                continue
            if trial.utterance in seen:
                raise DataError(f"{p}:{n}: duplicate utterance id {trial.utterance!r}")
            seen.add(trial.utterance)
            trials.append(trial)
    if not trials:
        raise DataError(f"protocol file has no trials: {p}")
    return trials


def format_trial(trial: Trial) -> str:
    """Format a trial as an ASVspoof 2019 LA protocol line."""
    return " ".join(
        (trial.speaker, trial.utterance, trial.environment or "-", trial.system or "-", trial.key)
    )


def write_protocol(path: str | Path, trials: Iterable[Trial]) -> Path:
    """Write trials in the ASVspoof 2019 LA layout."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for t in trials:
            if t.key not in _KEYS:
                raise DataError(f"invalid key {t.key!r} for {t.utterance}")
            fh.write(format_trial(t) + "\n")
    return p


def summarize(trials: Sequence[Trial]) -> dict[str, object]:
    """Counts per class, system and speaker, for reports and model cards."""
    systems: dict[str, int] = {}
    for t in trials:
        systems[t.system] = systems.get(t.system, 0) + 1
    return {
        "trials": len(trials),
        "bonafide": sum(not t.is_spoof for t in trials),
        "spoof": sum(t.is_spoof for t in trials),
        "speakers": sorted({t.speaker for t in trials}),
        "systems": dict(sorted(systems.items())),
    }


#: Protocol file names of the ASVspoof 2019 LA database, by split.
LA2019_PROTOCOLS = {
    "train": "ASVspoof2019.LA.cm.train.trn.txt",
    "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
    "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
}
AUDIO_SUFFIXES = (".flac", ".wav")


def database_split(root: str | Path, split: str) -> tuple[Path, Path]:
    """Protocol file and audio folder of one split of an ASVspoof 2019 LA layout database.

    The layout is ``ROOT/ASVspoof2019_LA_cm_protocols/<protocol>`` and
    ``ROOT/ASVspoof2019_LA_<split>/flac/``; the demo corpus uses the same layout. ``ROOT`` may
    also be the ``LA`` folder of the official distribution.
    """
    if split not in LA2019_PROTOCOLS:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(LA2019_PROTOCOLS)}")
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"database folder not found: {base}")
    if (base / "LA").is_dir() and not (base / "ASVspoof2019_LA_cm_protocols").is_dir():
        base = base / "LA"
    protocol = base / "ASVspoof2019_LA_cm_protocols" / LA2019_PROTOCOLS[split]
    audio = base / f"ASVspoof2019_LA_{split}" / "flac"
    if not protocol.is_file():
        raise DataError(f"{split} protocol not found: {protocol}")
    if not audio.is_dir():
        raise DataError(f"{split} audio folder not found: {audio}")
    return protocol, audio


def audio_path(audio_dir: str | Path, utterance: str) -> Path:
    """Path of an utterance's audio file (``.flac`` first, then ``.wav``)."""
    d = Path(audio_dir)
    for suffix in AUDIO_SUFFIXES:
        candidate = d / f"{utterance}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(f"audio for utterance {utterance!r} not found in {d}")
