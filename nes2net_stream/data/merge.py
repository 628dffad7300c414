"""Merge splits of several ASVspoof-layout databases into one (``nes2net-stream data merge``).

Training on the demo corpus plus one's own recordings, or on more than one corpus, needs one
database: this writes the ASVspoof 2019 LA layout (protocol files and ``flac`` folders) whose
splits are the concatenation of the named source splits, with the audio as symbolic links (or
copies). Utterance ids must be unique across the sources. Bona fide speakers shared between
the output's splits are refused unless allowed: a speaker heard in training and evaluated on
gives an optimistic figure (the demo corpus is speaker-disjoint for that reason). Speakers can
be left out altogether (``exclude_speakers``: e.g. one kept for demos or a held-out check).
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf

from nes2net_stream.data.corpus.summary import split_summary
from nes2net_stream.data.protocols import (
    LA2019_PROTOCOLS,
    Trial,
    audio_path,
    database_split,
    read_protocol,
    write_protocol,
)
from nes2net_stream.errors import DataError

__all__ = ["SplitSource", "merge_databases", "parse_source"]


@dataclass(frozen=True, slots=True)
class SplitSource:
    """One split of a source database: ``root`` in the ASVspoof 2019 LA layout."""

    root: Path
    split: str

    def __str__(self) -> str:
        return f"{self.root}:{self.split}"


def parse_source(text: str, default_split: str) -> SplitSource:
    """``DB`` or ``DB:SPLIT`` (the split of the same name as the target by default)."""
    root, sep, split = text.rpartition(":")
    if not sep or split not in LA2019_PROTOCOLS:
        return SplitSource(Path(text), default_split)
    return SplitSource(Path(root), split)


def _shared_speakers(splits: Mapping[str, Sequence[Trial]]) -> list[str]:
    seen: dict[str, set[str]] = {}
    for split, trials in splits.items():
        for t in trials:
            if not t.is_spoof and t.speaker != "-":
                seen.setdefault(t.speaker, set()).add(split)
    return sorted(f"{spk} ({', '.join(sorted(where))})"
                  for spk, where in seen.items() if len(where) > 1)


def _write_summary(out: Path, merged: Mapping[str, Sequence[tuple[Trial, Path]]],
                   sources: Mapping[str, Sequence[SplitSource]]) -> None:
    """``corpus.json`` as the demo corpus writes it (counts, durations, speakers, systems)."""
    seeds = set()
    for parts in sources.values():
        for src in parts:
            try:
                seeds.add(json.loads((src.root / "corpus.json").read_text()).get("seed"))
            except (OSError, ValueError):
                seeds.add(None)
    splits = {}
    for split, rows in merged.items():
        seconds = {t.utterance: sf.info(str(path)).duration for t, path in rows}
        splits[split] = asdict(split_summary([t for t, _ in rows], seconds,
                                             defaultdict(lambda: "unknown")))
    summary = {"format": "merged", "sources": {k: [str(s) for s in v] for k, v in
                                                sources.items()}, "splits": splits}
    if len(seeds) == 1 and None not in seeds:
        summary["seed"] = seeds.pop()
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def merge_databases(out: Path, sources: Mapping[str, Sequence[SplitSource]], *,
                    copy: bool = False, allow_shared_speakers: bool = False,
                    exclude_speakers: Collection[str] = ()) -> dict[str, dict[str, int]]:
    """Write the merged database to ``out``; returns trials per split and class.

    Args:
        out: A new (or empty) folder.
        sources: Target split (``train``, ``dev``, ``eval``) -> the source splits it holds.
        copy: Copy the audio instead of linking to it (a database that outlives its sources).
        allow_shared_speakers: Accept bona fide speakers present in several target splits.
        exclude_speakers: Leave out every trial whose SPEAKER is one of these (bona fide
            speech and the spoofs made from or imitating it).

    Raises:
        DataError: A missing source, a duplicate utterance id, missing audio, a non-empty
            ``out``, bona fide speakers shared between splits (unless allowed), or an
            excluded speaker found in no source.
    """
    unknown = sorted(set(sources) - set(LA2019_PROTOCOLS))
    if unknown or not any(sources.values()):
        raise DataError(f"merge: give sources for train, dev and/or eval (got {unknown or 'none'})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"merge: output folder is not empty: {out}")
    merged: dict[str, list[tuple[Trial, Path]]] = {}
    owner: dict[str, SplitSource] = {}
    excluded = set(exclude_speakers)
    found: set[str] = set()
    for split, parts in sources.items():
        for src in parts:
            protocol, audio_dir = database_split(src.root, src.split)
            for trial in read_protocol(protocol):
                if trial.speaker in excluded:
                    found.add(trial.speaker)
                    continue
                if trial.utterance in owner:
                    raise DataError(f"merge: utterance id {trial.utterance!r} is in both "
                                    f"{owner[trial.utterance]} and {src}")
                owner[trial.utterance] = src
                merged.setdefault(split, []).append((trial, audio_path(audio_dir,
                                                                       trial.utterance)))
    if missing := sorted(excluded - found):
        raise DataError(f"merge: excluded speakers found in no source: {', '.join(missing)}")
    shared = _shared_speakers({s: [t for t, _ in rows] for s, rows in merged.items()})
    if shared and not allow_shared_speakers:
        raise DataError("merge: bona fide speakers in several splits (an optimistic "
                        f"evaluation): {', '.join(shared[:10])}; pass "
                        "--allow-shared-speakers if that is intended")
    _write_summary(out, merged, sources)
    counts: dict[str, dict[str, int]] = {}
    for split, rows in merged.items():
        folder = out / f"ASVspoof2019_LA_{split}" / "flac"
        folder.mkdir(parents=True, exist_ok=True)
        for trial, path in rows:
            target = folder / f"{trial.utterance}{path.suffix}"
            if copy:
                shutil.copyfile(path, target)
            else:
                target.symlink_to(path.resolve())
        write_protocol(out / "ASVspoof2019_LA_cm_protocols" / LA2019_PROTOCOLS[split],
                       [t for t, _ in rows])
        counts[split] = {"bonafide": sum(not t.is_spoof for t, _ in rows),
                         "spoof": sum(t.is_spoof for t, _ in rows)}
    return counts
