"""Call-length recordings built from a protocol's utterances, for call-level alert evaluation.

Anti-spoofing corpora hold utterances of a few seconds; the service's alert policy acts over
a whole call. :func:`build_calls` joins consecutive utterances of one speaker, one system and
one key (bona fide or spoof) into recordings of at least ``call_s`` seconds, with a short
silence between them, and writes them as a database in the ASVspoof 2019 LA layout (one
protocol line per call), so ``eval-alerts`` (and ``score``) read them like any other
database. Every utterance goes into at most one call, so calls of a split share no audio;
``calls.json`` lists each call's utterances and the source's ``LICENSES.md`` is copied along.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from nes2net_stream.audio.io import load_audio, write_audio
from nes2net_stream.data.protocols import (
    LA2019_PROTOCOLS,
    Trial,
    audio_path,
    database_split,
    read_protocol,
    write_protocol,
)
from nes2net_stream.errors import DataError

CALL_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class CallPlan:
    """One call to write: its protocol line and the utterances it joins, in order."""

    trial: Trial
    utterances: tuple[str, ...]


@dataclass
class CallsReport:
    """What :func:`build_calls` wrote."""

    out_dir: Path
    split: str
    calls: int = 0
    bonafide: int = 0
    spoof: int = 0
    seconds: float = 0.0
    utterances_used: int = 0
    utterances_left_out: int = 0
    members: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON form (``calls.json``)."""
        return {"split": self.split, "calls": self.calls, "bonafide": self.bonafide,
                "spoof": self.spoof, "seconds": round(self.seconds, 3),
                "utterances_used": self.utterances_used,
                "utterances_left_out": self.utterances_left_out, "members": self.members}


def plan_calls(trials: Sequence[Trial], durations: dict[str, float], *, call_s: float,
               min_call_s: float, split: str) -> tuple[list[CallPlan], int]:
    """Group consecutive utterances of one (speaker, system, key) into calls.

    A group's utterances are taken in protocol order until they reach ``call_s`` seconds; a
    remainder shorter than ``min_call_s`` joins the group's previous call, or is left out when
    the group has none. Returns the plans and the number of utterances left out.
    """
    if not 0 < min_call_s <= call_s:
        raise DataError("calls: need 0 < min_call_s <= call_s")
    groups: dict[tuple[str, str, str], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.speaker, t.system, t.key), []).append(t)
    plans: list[CallPlan] = []
    left_out = 0
    for (speaker, system, key), members in groups.items():
        calls: list[list[Trial]] = []
        current: list[Trial] = []
        seconds = 0.0
        for t in members:
            current.append(t)
            seconds += durations[t.utterance]
            if seconds >= call_s:
                calls.append(current)
                current, seconds = [], 0.0
        if current and seconds >= min_call_s:
            calls.append(current)
        elif current and calls:
            calls[-1].extend(current)
        else:
            left_out += len(current)
        for group in calls:
            envs = {t.environment for t in group}
            env = envs.pop() if len(envs) == 1 else "mixed"
            call_id = f"CALL_{split[0].upper()}_{len(plans) + 1:05d}"
            plans.append(CallPlan(Trial(speaker=speaker, utterance=call_id, system=system,
                                        key=key, environment=env),
                                  tuple(t.utterance for t in group)))
    return plans, left_out


def _duration_s(path: Path) -> float:
    """Length of an audio file from its header (decoding it only when soundfile cannot)."""
    try:
        return float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError):
        clip = load_audio(path, sample_rate=None, allow_silence=True)
        return clip.duration_s


def build_calls(database: str | Path, out_dir: str | Path, *, split: str = "eval",
                call_s: float = 20.0, min_call_s: float = 8.0,
                gap_s: float = 0.5) -> CallsReport:
    """Write call-length recordings of one split of ``database`` as a database in ``out_dir``.

    Raises:
        DataError: a missing split or audio file, bad lengths, or an ``out_dir`` that already
            holds a calls database.
    """
    if gap_s < 0:
        raise DataError("calls: gap_s must be >= 0")
    protocol, audio_dir = database_split(database, split)
    out = Path(out_dir)
    out_protocol = out / "ASVspoof2019_LA_cm_protocols" / LA2019_PROTOCOLS[split]
    if out_protocol.exists():
        raise DataError(f"{out_protocol} exists: choose an empty output folder")
    trials = read_protocol(protocol)
    paths = {t.utterance: audio_path(audio_dir, t.utterance) for t in trials}
    durations = {u: _duration_s(p) for u, p in paths.items()}  # headers only: any split size
    plans, left_out = plan_calls(trials, durations, call_s=call_s, min_call_s=min_call_s,
                                 split=split)
    if not plans:
        raise DataError(f"no call of {min_call_s:g} s or more can be built from {protocol}")
    flac = out / f"ASVspoof2019_LA_{split}" / "flac"
    flac.mkdir(parents=True, exist_ok=True)
    gap = np.zeros(int(round(gap_s * CALL_SAMPLE_RATE)), dtype=np.float32)
    report = CallsReport(out_dir=out, split=split, utterances_left_out=left_out)
    for plan in plans:
        parts: list[np.ndarray] = []
        for i, utt in enumerate(plan.utterances):
            if i:
                parts.append(gap)
            parts.append(load_audio(paths[utt], sample_rate=CALL_SAMPLE_RATE,
                                    allow_silence=True).samples)
        samples = np.concatenate(parts)
        write_audio(flac / f"{plan.trial.utterance}.flac", samples, CALL_SAMPLE_RATE)
        report.calls += 1
        report.bonafide += not plan.trial.is_spoof
        report.spoof += plan.trial.is_spoof
        report.seconds += samples.shape[0] / CALL_SAMPLE_RATE
        report.utterances_used += len(plan.utterances)
        report.members[plan.trial.utterance] = list(plan.utterances)
    write_protocol(out_protocol, [p.trial for p in plans])
    licences = Path(database) / "LICENSES.md"
    if licences.is_file():  # the calls are derived works of the same recordings
        (out / "LICENSES.md").write_text(licences.read_text(encoding="utf-8"), encoding="utf-8")
    (out / "calls.json").write_text(json.dumps(
        {**report.to_dict(), "source": {"split": split, "call_s": call_s,
                                        "min_call_s": min_call_s, "gap_s": gap_s}},
        indent=2) + "\n", encoding="utf-8")
    return report
