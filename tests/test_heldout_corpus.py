"""The held-out corpus (`data build-heldout`): new speakers, languages and synthesisers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nes2net_stream.cli import main
from nes2net_stream.data.corpus import heldout
from nes2net_stream.data.corpus.heldout import (
    SYSTEMS,
    build_heldout_corpus,
    check_heldout_requirements,
)
from nes2net_stream.data.corpus.sources import SPEAKERS as DEMO_SPEAKERS
from nes2net_stream.data.corpus.synthesis import festival_voice
from nes2net_stream.data.protocols import audio_path, database_split, read_protocol
from nes2net_stream.errors import AudioError, DataError, DependencyError

PROBLEMS = check_heldout_requirements()
pytestmark = [pytest.mark.corpus,
              pytest.mark.skipif(bool(PROBLEMS), reason="; ".join(PROBLEMS))]


@pytest.fixture(scope="module")
def quick_heldout(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("heldout") / "corpus"
    data = build_heldout_corpus(out, seed=0, quick=True, jobs=2, progress=False)
    return out, data, read_protocol(database_split(out, "eval")[0])


def test_quick_build_is_an_eval_database_of_unseen_voices(quick_heldout) -> None:
    out, data, trials = quick_heldout
    assert sorted(p.name for p in (out / "ASVspoof2019_LA_cm_protocols").iterdir()) == [
        "ASVspoof2019.LA.cm.eval.trl.txt"]
    bona = [t for t in trials if not t.is_spoof]
    speakers = {t.speaker for t in bona}
    assert speakers == {s.id for s in heldout.SPEAKERS}
    assert not speakers & set(DEMO_SPEAKERS)  # no voice the demo corpus trains or tests on
    assert len(bona) == heldout.QUICK_PER_SPEAKER * len(speakers)
    assert len(trials) - len(bona) == round(heldout.SPOOF_PER_BONAFIDE * len(bona))
    assert {t.system for t in trials if t.is_spoof} == set(SYSTEMS)
    split = data["splits"]["eval"]
    assert set(split["languages"]) >= {"es", "fr", "it", "ru"}
    assert {k for k, v in split["languages"].items() if v["bonafide"]} == {"es", "fr", "it", "ru"}
    # WORLD spoofs resynthesise the held-out speakers themselves
    assert {t.speaker for t in trials if t.system in ("H05", "H06")} <= speakers
    assert json.loads((out / "corpus.json").read_text())["kind"] == "heldout"
    licences = (out / "LICENSES.md").read_text(encoding="utf-8")
    assert "June Wallack" in licences and "CC-BY-3.0" in licences


def test_every_utterance_is_8khz_speech(quick_heldout) -> None:
    out, _, trials = quick_heldout
    folder = database_split(out, "eval")[1]
    for t in trials:
        path = audio_path(folder, t.utterance)
        info = sf.info(str(path))
        assert (info.samplerate, info.channels) == (8000, 1)
        x, _ = sf.read(str(path), dtype="float32")
        assert 0.5 <= len(x) / 8000 <= 9.0, t
        assert np.max(np.abs(x)) > 0.01, f"{path.name} ({t.system}) is silent"


def test_same_seed_reproduces_the_audio(quick_heldout, tmp_path: Path) -> None:
    out, data, _ = quick_heldout
    again = build_heldout_corpus(tmp_path / "again", seed=0, quick=True, jobs=1,
                                 progress=False)
    assert again["audio_sha256"] == data["audio_sha256"]
    assert ((tmp_path / "again" / "SHA256SUMS").read_text()
            == (out / "SHA256SUMS").read_text())


def test_the_bundled_model_scores_it(quick_heldout, tmp_path: Path, capsys) -> None:
    out, _, trials = quick_heldout
    code = main(["eval", "--model", "builtin:demo", "--database", str(out), "--split", "eval",
                 "--bootstrap", "0", "--out", str(tmp_path / "ev")])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert metrics["n_bonafide"] + metrics["n_spoof"] == len(trials)
    assert 0.0 <= metrics["eer"] <= 1.0


@pytest.mark.parametrize(("voice", "encoding", "text"), [
    ("lp_diphone", "latin-1", "Il suo codice è quattro cinque sette."),
    ("msu_ru_nsh_clunits", "utf-8", "Ваш код подтверждения четыре пять."),
])
def test_festival_voices_read_their_own_text_encoding(tmp_path: Path, voice, encoding,
                                                       text) -> None:
    x, rate = festival_voice(text, {"voice": voice, "encoding": encoding, "stretch": 1.0},
                             tmp_path)
    assert rate == 16000
    assert 1.0 < len(x) / rate < 6.0
    # the other encoding makes the lexicon spell out bytes or fail: clearly different audio
    wrong = "utf-8" if encoding == "latin-1" else "koi8-r"
    try:
        y, _ = festival_voice(text, {"voice": voice, "encoding": wrong, "stretch": 1.0},
                              tmp_path)
    except AudioError:
        return
    assert abs(len(y) - len(x)) > 0.1 * rate


def test_an_unknown_festival_voice_is_an_audio_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no_such_voice"):
        festival_voice("hello", {"voice": "no_such_voice", "stretch": 1.0}, tmp_path)


def test_missing_voices_are_listed_with_their_packages(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(heldout, "package_folder", lambda package, default: None)
    problems = heldout.check_heldout_requirements()
    assert "bona fide voice JUNE is missing: apt-get install asterisk-core-sounds-fr-wav" in (
        problems)
    assert len([p for p in problems if p.startswith("bona fide voice")]) == 5
    with pytest.raises(DependencyError, match="5 problem"):
        build_heldout_corpus(tmp_path / "out", quick=True, progress=False)
    assert not (tmp_path / "out").exists()


def test_the_command_line_builds_it(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "nes2net_stream", "data", "build-heldout",
                           str(tmp_path / "h"), "--quick", "--per-speaker", "1",
                           "--no-progress"], capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "5 bona fide (5 speakers), 10 spoof" in proc.stdout


def test_a_partial_build_holds_only_the_chosen_voices_and_systems(tmp_path: Path) -> None:
    data = build_heldout_corpus(tmp_path / "part", seed=1, quick=True, jobs=1,
                                speakers=("CARLO", "JULY"), systems=("H01", "H05"),
                                channel="train", progress=False)
    trials = read_protocol(database_split(tmp_path / "part", "eval")[0])
    assert {t.speaker for t in trials if not t.is_spoof} == {"CARLO", "JULY"}
    assert {t.system for t in trials if t.is_spoof} == {"H01", "H05"}
    assert {t.speaker for t in trials if t.system == "H05"} <= {"CARLO", "JULY"}
    assert {t.environment for t in trials} <= {"mulaw", "alaw", "gsm"}  # the train channel
    langs = dict(line.split() for line in
                 (tmp_path / "part" / heldout.LANGUAGES).read_text().splitlines())
    assert set(langs) == {t.utterance for t in trials}
    assert set(langs.values()) == {"it", "es"}  # espeak-ng speaks the voices' languages
    assert data["only_speakers"] == ["CARLO", "JULY"] and data["channel"] == "train"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"speakers": ("NOBODY",)}, "unknown held-out speaker"),
    ({"systems": ("A01",)}, "unknown held-out system"),
    ({"channel": "dev"}, "channel must be"),
])
def test_bad_partial_builds_are_refused_before_any_work(tmp_path: Path, kwargs, message) -> None:
    with pytest.raises(DataError, match=message):
        build_heldout_corpus(tmp_path / "x", quick=True, progress=False, **kwargs)
    assert not (tmp_path / "x").exists()
