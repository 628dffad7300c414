"""Two-fold split of a demo corpus's eval speakers, for "does training on more speakers help?".

Writes a derived database (same ASVspoof 2019 LA layout, audio as symlinks) whose train split
is the corpus's train split plus one half of eval, and whose eval split is the other half:

* bona fide trials and the WORLD systems (A05, A06, whose SPEAKER is the real speaker they
  were made from) go with their speaker's half (``FOLDS`` below, chosen so that both halves
  mix sexes and sources);
* espeak-ng (A01) goes by voice variant, alternating over the sorted variants, so no variant is
  both trained on and tested;
* Piper (A04, one voice, already in train) goes by a hash of the utterance id;
* A03 and A07 (never in train) stay out of training and are split by the same hash, so the
  two folds' eval halves together hold every eval trial exactly once.

Usage: ``python scripts/speaker_folds.py CORPUS OUT FOLD`` with FOLD 0 or 1. Scores of the two
folds' models on their own eval halves concatenate into one score file over the full eval key.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from nes2net_stream.data.protocols import (
    LA2019_PROTOCOLS,
    Trial,
    database_split,
    read_protocol,
    write_protocol,
)

#: Eval speakers of the seed-0 demo corpus, in two halves (sex: F F M M / F F mixed M).
FOLDS = (
    ("ALSA", "C2-FORIG", "ARCTIC-AWB", "C2-CROSS"),
    ("ARCTIC-SLT", "C2-MMT1", "C2-SPEECH16K", "PS-LIBRIVOX"),
)
SPEAKER_SYSTEMS = ("-", "A05", "A06")
NEVER_TRAINED = ("A03", "A07")


def _hash_half(utterance: str) -> int:
    return hashlib.sha256(utterance.encode()).digest()[0] & 1


def fold_of(trial: Trial, variants: list[str]) -> int:
    """Which half (0 or 1) an eval trial belongs to."""
    if trial.system in SPEAKER_SYSTEMS:
        for half, speakers in enumerate(FOLDS):
            if trial.speaker in speakers:
                return half
        raise SystemExit(f"eval speaker {trial.speaker!r} is in neither fold; update FOLDS")
    if trial.system == "A01":
        return variants.index(trial.speaker) % 2
    return _hash_half(trial.utterance)


def _link_all(src_dir: Path, dst_dir: Path, utterances: list[str]) -> None:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for utt in utterances:
        src = src_dir / f"{utt}.flac"
        (dst_dir / src.name).symlink_to(src.resolve())


def build(corpus: Path, out: Path, fold: int) -> None:
    """Write the derived database for ``fold`` (its eval half is trained on)."""
    if out.exists():
        shutil.rmtree(out)
    protocols = out / "ASVspoof2019_LA_cm_protocols"
    splits = {s: database_split(corpus, s) for s in LA2019_PROTOCOLS}
    trials = {s: read_protocol(p) for s, (p, _) in splits.items()}
    variants = sorted({t.speaker for t in trials["eval"] if t.system == "A01"})
    added = [t for t in trials["eval"]
             if t.system not in NEVER_TRAINED and fold_of(t, variants) == fold]
    held_out = [t for t in trials["eval"] if fold_of(t, variants) != fold]
    parts = {"train": (trials["train"], added), "dev": (trials["dev"], []),
             "eval": ([], held_out)}
    for split, (own, from_eval) in parts.items():
        audio = out / f"ASVspoof2019_LA_{split}" / "flac"
        _link_all(splits[split][1], audio, [t.utterance for t in own])
        _link_all(splits["eval"][1], audio, [t.utterance for t in from_eval])
        write_protocol(protocols / LA2019_PROTOCOLS[split], [*own, *from_eval])
    print(f"fold {fold}: train +{len(added)} eval trials "
          f"({sum(not t.is_spoof for t in added)} bona fide), eval half {len(held_out)} trials")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[3] not in ("0", "1"):
        raise SystemExit(__doc__)
    build(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
