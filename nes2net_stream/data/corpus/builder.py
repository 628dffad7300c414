"""``build_demo_corpus``: the whole build, from installed packages to an ASVspoof 2019 LA tree."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

import numpy as np

from nes2net_stream.data.corpus.licenses import write_licenses
from nes2net_stream.data.corpus.plan import (
    SPLITS,
    PlannedUtterance,
    plan_split,
    speaker_clips,
    stable_seed,
)
from nes2net_stream.data.corpus.render import AnalyseJob, analyse, render
from nes2net_stream.data.corpus.requirements import require
from nes2net_stream.data.corpus.sources import Recording, find_recordings
from nes2net_stream.data.corpus.summary import CorpusSummary, collect_versions, split_summary
from nes2net_stream.data.corpus.texts import english_pool, french_pool
from nes2net_stream.data.protocols import LA2019_PROTOCOLS, Trial, write_protocol
from nes2net_stream.errors import DataError

#: Recordings per speaker kept by a quick build.
QUICK_RECORDINGS = 4
#: Checksums of every audio file of a build, ``sha256sum -c`` format.
CHECKSUMS = "SHA256SUMS"
_OWNED = ("ASVspoof2019_LA_train", "ASVspoof2019_LA_dev", "ASVspoof2019_LA_eval",
          "ASVspoof2019_LA_cm_protocols", "corpus.json", "LICENSES.md", CHECKSUMS,
          "languages.txt")

T = TypeVar("T")
R = TypeVar("R")


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir``, or empty the corpus files of an earlier build in it.

    Raises:
        DataError: it is a file, or a non-empty folder that holds no corpus.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output path exists and is not a folder: {out_dir}")
    if out_dir.is_dir():
        entries = {p.name for p in out_dir.iterdir()}
        if entries and "corpus.json" not in entries:
            raise DataError(f"{out_dir} is not empty and holds no demo corpus; choose an empty "
                            "or new folder")
        for name in _OWNED:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _quick_subset(recordings: Sequence[Recording], seed: int) -> list[Recording]:
    by_speaker: dict[str, list[Recording]] = {}
    for rec in recordings:
        by_speaker.setdefault(rec.speaker, []).append(rec)
    keep: set[str] = set()
    for spk, recs in by_speaker.items():
        rng = np.random.default_rng(stable_seed(seed, "quick", spk))
        keep.update(recs[i].key for i in rng.permutation(len(recs))[:QUICK_RECORDINGS])
    return [r for r in recordings if r.key in keep]


def _context() -> multiprocessing.context.BaseContext:
    """``spawn`` (clean workers), or ``fork`` when the main script cannot be re-imported."""
    import sys

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is not None and not Path(main_file).is_file():
        return multiprocessing.get_context("fork")  # e.g. a script read from stdin
    return multiprocessing.get_context("spawn")


def map_jobs(fn: Callable[[T], R], items: Sequence[T], jobs: int, desc: str,
         progress: bool) -> list[R]:
    """``[fn(x) for x in items]`` over ``jobs`` processes, in order, with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="item", disable=not progress, leave=False)
    out: list[R] = []
    try:
        if jobs <= 1:
            for r in map(fn, items):
                out.append(r)
                bar.update()
            return out
        ctx = _context()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            try:
                for r in pool.map(fn, items, chunksize=1):
                    out.append(r)
                    bar.update()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return out
    except BrokenProcessPool as exc:
        raise DataError(
            f"a worker process died while {desc} ({exc}); workers are started with 'spawn', so "
            "a script calling build_demo_corpus must do so under "
            "'if __name__ == \"__main__\":', or pass jobs=1") from exc
    finally:
        bar.close()


def _plan(out_dir: Path, seed: int, quick: bool, jobs: int,
          progress: bool) -> tuple[list[Recording], list[str], list[PlannedUtterance]]:
    recordings, notes = find_recordings()
    if quick:
        recordings = _quick_subset(recordings, seed)
    analyses = map_jobs(analyse, [AnalyseJob(r, stable_seed(seed, "analyse", r.key))
                              for r in recordings], jobs, "analysing recordings", progress)
    clips = speaker_clips(recordings, analyses)
    pools = {"en": english_pool([r.text for r in recordings if r.source == "R1" and r.text],
                                [r.text for r in recordings if r.source == "R4" and r.text]),
             "fr": french_pool()}
    planned = [p for split in SPLITS
               for p in plan_split(split, clips, pools, out_dir, seed, quick)]
    return recordings, notes, planned


def plan_demo_corpus(out_dir: Path, *, seed: int = 0, quick: bool = False,
                     jobs: int = 2) -> dict[str, list[Trial]]:
    """The protocol trials :func:`build_demo_corpus` would write, without rendering audio.

    Raises:
        DependencyError: programs, packages or recordings are missing (all listed at once).
    """
    require()
    planned = _plan(Path(out_dir), seed, quick, max(1, jobs), False)[2]
    return {split: [p.trial for p in planned if p.split == split] for split in SPLITS}


def write_checksums(out_dir: Path, digests: dict[Path, str]) -> str:
    """Write ``SHA256SUMS`` (``sha256sum -c`` format, sorted paths); return its own SHA-256.

    Two builds with the same seed and package versions give the same file, so comparing the
    one digest in ``corpus.json`` tells whether a rebuild reproduced every utterance.
    """
    lines = sorted(f"{digest}  {path.relative_to(out_dir).as_posix()}\n"
                   for path, digest in digests.items())
    text = "".join(lines)
    (out_dir / CHECKSUMS).write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def build_demo_corpus(out_dir: Path, *, seed: int = 0, quick: bool = False, jobs: int = 2,
                      progress: bool = True) -> CorpusSummary:
    """Build the labelled bona fide / spoof demo corpus in the ASVspoof 2019 LA layout.

    Args:
        out_dir: output folder; created, or replaced when it holds an earlier demo corpus.
        seed: seed of every random choice; the same seed gives the same protocol files.
        quick: build a tiny corpus (a few dozen utterances per split) for tests.
        jobs: worker processes for analysis, synthesis and the channel.
        progress: show progress bars on stderr.

    Returns:
        Counts and durations per split, also written to ``out_dir/corpus.json``.

    Raises:
        DependencyError: programs, packages or recordings are missing (all listed at once).
        DataError: ``out_dir`` is not empty and holds something else.
        AudioError: a synthesiser or codec failed.
    """
    started = time.monotonic()
    require()
    if jobs < 1:
        raise DataError(f"jobs must be at least 1, got {jobs}")
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir)
    recordings, notes, planned = _plan(out_dir, seed, quick, jobs, progress)
    rendered = map_jobs(render, [p.job for p in planned], jobs, "rendering utterances", progress)
    seconds = {utt: sec for utt, sec, _ in rendered}
    sums = write_checksums(out_dir, {p.job.out_path: digest
                                     for p, (_, _, digest) in zip(planned, rendered, strict=True)})
    protocol_dir = out_dir / "ASVspoof2019_LA_cm_protocols"
    splits = {}
    for split in SPLITS:
        trials = [p.trial for p in planned if p.split == split]
        write_protocol(protocol_dir / LA2019_PROTOCOLS[split], trials)
        splits[split] = split_summary(trials, seconds, {p.trial.utterance: p.lang
                                                        for p in planned if p.split == split})
    write_licenses(out_dir / "LICENSES.md", {r.source for r in recordings})
    summary = CorpusSummary(out_dir=out_dir, seed=seed, quick=quick,
                            build_seconds=round(time.monotonic() - started, 1), splits=splits,
                            notes=tuple(notes), versions=collect_versions())
    data = summary.to_dict()
    data["precoded_spoofs"] = {split: sum(1 for p in planned if p.split == split
                                          and p.job.channel.precode) for split in SPLITS}
    data["audio_sha256"] = sums
    data["format"] = {"audio": "FLAC, 8 kHz, mono, 16-bit PCM",
                      "protocol": "SPEAKER UTTERANCE CODEC SYSTEM KEY (ASVspoof 2019 LA)"}
    (out_dir / "corpus.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return summary
