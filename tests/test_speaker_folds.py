"""scripts/speaker_folds.py: the two folds of the "more training speakers" experiment."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nes2net_stream.data.protocols import LA2019_PROTOCOLS, Trial, read_protocol, write_protocol

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("speaker_folds",
                                               ROOT / "scripts" / "speaker_folds.py")
folds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(folds)


def _corpus(root: Path) -> dict[str, list[Trial]]:
    eval_speakers = [s for half in folds.FOLDS for s in half]
    trials = {
        "train": [Trial("ALLISON", "T1", "-", "bonafide"),
                  Trial("ESPEAK-f1", "T2", "A01", "spoof")],
        "dev": [Trial("PS-DHD", "D1", "-", "bonafide"), Trial("KAL", "D2", "A03", "spoof")],
        "eval": [],
    }
    n = 0
    for spk in eval_speakers:
        for system in ("-", "A05", "A06"):
            n += 1
            key = "bonafide" if system == "-" else "spoof"
            trials["eval"].append(Trial(spk, f"E{n}", system, key))
    for i, (speaker, system) in enumerate([("ESPEAK-f5", "A01"), ("ESPEAK-m4", "A01"),
                                           ("ESPEAK-robert", "A01")] * 3
                                          + [("JOE", "A04"), ("KAL", "A03"),
                                             ("ARCTIC-awb", "A07")] * 6):
        trials["eval"].append(Trial(speaker, f"S{i}", system, "spoof"))
    for split, ts in trials.items():
        write_protocol(root / "ASVspoof2019_LA_cm_protocols" / LA2019_PROTOCOLS[split], ts)
        audio = root / f"ASVspoof2019_LA_{split}" / "flac"
        audio.mkdir(parents=True)
        for t in ts:
            (audio / f"{t.utterance}.flac").write_bytes(t.utterance.encode())
    return trials


def _read(root: Path, split: str) -> list[Trial]:
    return read_protocol(root / "ASVspoof2019_LA_cm_protocols" / LA2019_PROTOCOLS[split])


def test_the_two_eval_halves_cover_eval_once_and_never_meet_their_training(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    held_out: list[Trial] = []
    for fold in (0, 1):
        out = tmp_path / f"fold{fold}"
        folds.build(tmp_path / "corpus", out, fold)
        train, dev, test = (_read(out, s) for s in ("train", "dev", "eval"))
        assert dev == corpus["dev"] and train[:len(corpus["train"])] == corpus["train"]
        added = train[len(corpus["train"]):]
        assert added and not {t.system for t in added} & {"A03", "A07"}  # never trained on
        # no real speaker (bona fide or WORLD source) and no espeak-ng voice on both sides
        voices = {t.speaker for t in added if t.system in ("-", "A05", "A06", "A01")}
        assert not voices & {t.speaker for t in test}
        assert set(folds.FOLDS[fold]) <= voices
        for t in [*train, *test]:  # every listed utterance has its audio, linked
            split = "train" if t in train else "eval"
            path = out / f"ASVspoof2019_LA_{split}" / "flac" / f"{t.utterance}.flac"
            assert path.is_symlink() and path.read_bytes() == t.utterance.encode()
        held_out += test
    assert sorted(t.utterance for t in held_out) == sorted(t.utterance for t in corpus["eval"])
