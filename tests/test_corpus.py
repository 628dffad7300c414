"""Tests of the offline demo corpus builder (nes2net_stream.data.corpus)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nes2net_stream.data.corpus import (
    build_demo_corpus,
    check_requirements,
    dsp,
    plan_demo_corpus,
)
from nes2net_stream.data.corpus.channel import (
    EVAL_ONLY_CODECS,
    LEVEL_RANGE_DB,
    NOISE_PROBABILITY,
    ChannelParams,
    apply_channel,
    draw_channel,
    draw_channels,
)
from nes2net_stream.data.corpus.requirements import PROGRAMS
from nes2net_stream.data.corpus.sources import SPEAKERS
from nes2net_stream.data.corpus.systems import (
    ESPEAK_VARIANTS,
    EVAL_ONLY_SYSTEM,
    SYSTEMS,
    draw_voice,
)
from nes2net_stream.data.corpus.texts import clean_transcript, prompt_words
from nes2net_stream.data.protocols import (
    LA2019_PROTOCOLS,
    audio_path,
    database_split,
    format_trial,
    read_protocol,
)
from nes2net_stream.errors import DataError, DependencyError

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "dev", "eval")
PROBLEMS = check_requirements()
needs_packages = pytest.mark.skipif(bool(PROBLEMS), reason="; ".join(PROBLEMS))


@pytest.fixture(scope="module")
def quick_corpus(tmp_path_factory: pytest.TempPathFactory):
    if PROBLEMS:
        pytest.skip("; ".join(PROBLEMS))
    out = tmp_path_factory.mktemp("demo") / "corpus"
    summary = build_demo_corpus(out, seed=0, quick=True, jobs=2, progress=False)
    trials = {s: read_protocol(database_split(out, s)[0]) for s in SPLITS}
    return out, summary, trials


# ----------------------------------------------------------------------------- end to end

@pytest.mark.corpus
@needs_packages
def test_quick_build_writes_the_la2019_layout(quick_corpus) -> None:
    out, summary, trials = quick_corpus
    for split in SPLITS:
        assert (out / "ASVspoof2019_LA_cm_protocols" / LA2019_PROTOCOLS[split]).is_file()
        assert trials[split][0].utterance.startswith(f"DEMO_{split[0].upper()}_")
        assert summary.splits[split].utterances == len(trials[split])
        assert 10 <= len(trials[split]) <= 80
    data = json.loads((out / "corpus.json").read_text())
    assert data["seed"] == 0 and data["quick"] is True
    assert data["splits"]["train"]["bonafide"] == summary.splits["train"].bonafide
    assert "python:pyworld" in data["versions"]
    licences = (out / "LICENSES.md").read_text()
    assert "CC-BY-SA-3.0" in licences and "Armelle" in licences
    assert summary.build_seconds < 120


@pytest.mark.corpus
@needs_packages
def test_splits_are_speaker_disjoint(quick_corpus) -> None:
    _, _, trials = quick_corpus
    bona = {s: {t.speaker for t in trials[s] if not t.is_spoof} for s in SPLITS}
    assert not bona["train"] & bona["dev"]
    assert not bona["train"] & bona["eval"]
    assert not bona["dev"] & bona["eval"]
    assert {"ALLISON", "ARMELLE"} <= bona["train"]
    assert {SPEAKERS[s].sex for s in bona["eval"]} >= {"F", "M"}
    # multi-voice systems use split-specific voices; WORLD uses the split's own speakers
    for split in SPLITS:
        for t in trials[split]:
            if t.system in ("A05", "A06"):
                assert t.speaker in bona[split]
            if t.system == "A01":
                assert t.speaker.removeprefix("ESPEAK-") in ESPEAK_VARIANTS[split]


@pytest.mark.corpus
@needs_packages
def test_eval_only_system_and_codecs(quick_corpus) -> None:
    _, _, trials = quick_corpus
    systems = {s: {t.system for t in trials[s]} for s in SPLITS}
    assert EVAL_ONLY_SYSTEM in systems["eval"]
    assert EVAL_ONLY_SYSTEM not in systems["train"] | systems["dev"]
    unseen = {c for c, _, _ in EVAL_ONLY_CODECS}
    for split in ("train", "dev"):
        assert {t.environment for t in trials[split]} <= {"mulaw", "alaw", "gsm"}
    assert any(t.environment.split("-")[0] in unseen for t in trials["eval"])


@pytest.mark.corpus
@needs_packages
def test_every_split_has_both_classes(quick_corpus) -> None:
    _, summary, trials = quick_corpus
    for split in SPLITS:
        keys = {t.key for t in trials[split]}
        assert keys == {"bonafide", "spoof"}
        assert summary.splits[split].bonafide_seconds > 10
        assert summary.splits[split].spoof_seconds > 10
        assert {t.system for t in trials[split] if not t.is_spoof} == {"-"}


@pytest.mark.corpus
@needs_packages
def test_audio_files_exist_and_are_8khz_speech(quick_corpus) -> None:
    out, summary, trials = quick_corpus
    for split in SPLITS:
        _, folder = database_split(out, split)
        total = 0.0
        for t in trials[split]:
            path = audio_path(folder, t.utterance)
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
            x, _ = sf.read(str(path), dtype="float32")
            assert 0.5 <= len(x) / 8000 <= dsp.UTT_MAX_S + 0.5
            assert np.max(np.abs(x)) > 0.01, f"{path.name} is silent"
            total += len(x) / 8000
        s = summary.splits[split]
        assert total == pytest.approx(s.bonafide_seconds + s.spoof_seconds, abs=1.0)


@pytest.mark.corpus
@needs_packages
def test_rebuild_reproduces_every_audio_file(quick_corpus, tmp_path: Path) -> None:
    out, _, _ = quick_corpus
    sums = (out / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    audio = sorted(p for p in out.rglob("*.flac"))
    assert len(sums) == len(audio) > 0
    for line in sums:  # sha256sum -c format, paths relative to the corpus folder
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    data = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    again = tmp_path / "again"
    build_demo_corpus(again, seed=0, quick=True, jobs=1, progress=False)
    assert (again / "SHA256SUMS").read_text(encoding="utf-8").splitlines() == sums
    assert json.loads((again / "corpus.json").read_text())["audio_sha256"] == data["audio_sha256"]


@pytest.mark.corpus
@needs_packages
def test_same_seed_gives_the_same_protocol(quick_corpus, tmp_path: Path) -> None:
    out, _, trials = quick_corpus
    again = plan_demo_corpus(out, seed=0, quick=True, jobs=1)
    for split in SPLITS:
        assert [format_trial(t) for t in again[split]] == [format_trial(t) for t in trials[split]]
    other = plan_demo_corpus(tmp_path, seed=1, quick=True, jobs=1)
    assert [format_trial(t) for t in other["train"]] != [
        format_trial(t) for t in trials["train"]]


@pytest.mark.corpus
@needs_packages
def test_missing_program_is_reported_with_its_install_command(tmp_path: Path,
                                                              monkeypatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for program, _ in PROGRAMS:
        if program != "espeak-ng":
            os.symlink(shutil.which(program), bindir / program)
    monkeypatch.setenv("PATH", str(bindir))
    problems = check_requirements()
    assert problems == ["espeak-ng is not installed: apt-get install espeak-ng"]
    with pytest.raises(DependencyError, match="espeak-ng is not installed"):
        build_demo_corpus(tmp_path / "out", quick=True, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.corpus
@needs_packages
def test_refuses_a_folder_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        build_demo_corpus(tmp_path, quick=True, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- building blocks

def test_prompt_names_become_words() -> None:
    assert prompt_words("all-circuits-busy-now") == "all circuits busy now"
    assert prompt_words("vm-pls-try-again") == "voicemail please try again"
    assert prompt_words("phonetic/b_p") == "bravo"
    assert clean_transcript("press * then # [beep]") == "press star then pound"


def test_trim_removes_leading_and_trailing_silence() -> None:
    rate = 8000
    tone = 0.3 * np.sin(2 * np.pi * 500 * np.arange(rate) / rate).astype(np.float32)
    x = np.concatenate([np.zeros(rate), tone, np.zeros(2 * rate)]).astype(np.float32)
    y = dsp.trim(x, rate)
    assert len(y) / rate == pytest.approx(1.0 + 2 * dsp.TRIM_MARGIN_S, abs=0.02)
    assert len(dsp.trim(np.zeros(rate, dtype=np.float32), rate)) == 0
    # an empty recording (one ships in a Debian sounds package) or one shorter than a frame
    assert dsp.trim_bounds(np.zeros(0, dtype=np.float32), rate) is None
    assert dsp.trim_bounds(tone[:40], rate) is None


def test_pack_makes_2_to_8_second_utterances() -> None:
    rng = np.random.default_rng(0)
    durations = list(rng.uniform(0.3, 4.0, size=400))
    groups = dsp.pack(durations, rng)
    flat = [i for g in groups for i in g]
    assert flat == list(range(len(flat)))  # consecutive clips, none reused
    assert len(flat) >= len(durations) - 1  # only a last short group may be dropped
    lengths = [sum(durations[i] for i in g) + 0.35 * (len(g) - 1) for g in groups]
    assert max(lengths) <= dsp.UTT_MAX_S
    assert np.mean([length >= dsp.UTT_MIN_S for length in lengths]) > 0.95
    assert 3.5 < np.mean(lengths) < 6.5


def test_channel_distribution_keeps_unseen_codecs_for_eval() -> None:
    rng = np.random.default_rng(1)
    train = {draw_channel("train", rng).codec for _ in range(500)}
    evals = [draw_channel("eval", rng).codec for _ in range(500)]
    assert train == {"mulaw", "alaw", "gsm"}
    unseen = {c for c, _, _ in EVAL_ONLY_CODECS}
    assert unseen <= set(evals)
    assert 0.4 < np.mean([c in unseen for c in evals]) < 0.6


def test_stratified_channels_give_each_class_the_same_mix() -> None:
    draws = [draw_channels("eval", n, np.random.default_rng(n)) for n in (40, 120)]
    for channels in draws:
        n = len(channels)
        share = Counter(c.codec for c in channels)
        assert share["mulaw"] == share["alaw"] == share["gsm"] == round(n / 6)
        levels = np.sort([c.level_db for c in channels])
        bins = np.floor((levels - LEVEL_RANGE_DB[0]) / np.ptp(LEVEL_RANGE_DB) * n)
        assert np.array_equal(bins, np.arange(n))  # one level in each of n equal bins
        assert sum(c.snr_db is not None for c in channels) == round(NOISE_PROBABILITY * n)


def test_channel_outputs_8khz_at_the_drawn_level() -> None:
    rate = 16000
    t = np.arange(2 * rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    params = ChannelParams("alaw", None, 300.0, 3400.0, -26.0, None, 1.0)
    y = apply_channel(x, rate, params, np.random.default_rng(0))
    assert len(y) == 2 * 8000 and y.dtype == np.float32
    assert dsp.active_level_db(y, 8000) == pytest.approx(-26.0, abs=1.0)
    assert params.environment == "alaw"
    assert ChannelParams("g726", 32000, 300, 3400, -26, None, 1).environment == "g726-32k"


def test_voices_are_split_disjoint_and_eval_only_system_is_eval_only() -> None:
    assert not set(ESPEAK_VARIANTS["train"]) & set(ESPEAK_VARIANTS["eval"])
    assert not set(ESPEAK_VARIANTS["dev"]) & set(ESPEAK_VARIANTS["eval"])
    assert set(SYSTEMS[EVAL_ONLY_SYSTEM].weights) == {"eval"}
    for split in SPLITS:
        total = sum(s.weights.get(split, 0.0) for s in SYSTEMS.values())
        assert total == pytest.approx(1.0)
    speaker, params = draw_voice("A06", "train", "en", np.random.default_rng(0), ("ALLISON",))
    assert speaker == "ALLISON" and params["f0_ratio"] != 1.0 and params["warp"] != 1.0


def test_world_conversion_shifts_f0() -> None:
    pyworld = pytest.importorskip("pyworld")
    from nes2net_stream.data.corpus.synthesis import world

    rate = 16000
    t = np.arange(rate) / rate
    f0 = 120.0
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 20)).astype(np.float32) * 0.1
    copy, copy_rate = world(x, rate, {"f0_method": "dio"})
    conv, _ = world(x, rate, {"f0_method": "dio", "f0_ratio": 1.5, "f0_range": 1.0, "warp": 1.1})
    assert len(copy) == len(conv) == len(x) and copy_rate == rate
    narrow, narrow_rate = world(x[::2], 8000, {"f0_method": "dio"})  # analysed at 16 kHz
    assert narrow_rate == 16000 and len(narrow) == len(x)

    def median_f0(y: np.ndarray) -> float:
        est, _ = pyworld.dio(y.astype(np.float64), rate)
        return float(np.median(est[est > 0]))

    assert median_f0(copy) == pytest.approx(f0, rel=0.05)
    assert median_f0(conv) == pytest.approx(1.5 * f0, rel=0.05)


# ----------------------------------------------------------------------------- committed audio

def test_committed_samples_and_fixtures() -> None:
    samples = ROOT / "nes2net_stream" / "assets" / "samples"
    fixtures = ROOT / "tests" / "fixtures"
    total = 0
    for folder, names, rate, (lo, hi) in (
            (samples, ("human_call", "synthetic_call"), 8000, (15.0, 25.0)),
            (fixtures, ("human_short", "synthetic_short"), 16000, (3.0, 5.0))):
        assert (folder / "LICENSES.md").is_file()
        for name in names:
            path = folder / f"{name}.wav"
            info = sf.info(str(path))
            assert (info.samplerate, info.channels, info.subtype) == (rate, 1, "PCM_16")
            assert lo <= info.duration <= hi
            x, _ = sf.read(str(path), dtype="float32")
            assert np.max(np.abs(x)) > 0.05
            total += path.stat().st_size
    assert total < 1.5e6


def test_rebuild_replaces_only_the_corpus_files(tmp_path: Path) -> None:
    from nes2net_stream.data.corpus.builder import prepare_out_dir

    (tmp_path / "corpus.json").write_text("{}")
    (tmp_path / "ASVspoof2019_LA_train" / "flac").mkdir(parents=True)
    (tmp_path / "ASVspoof2019_LA_train" / "flac" / "old.flac").write_bytes(b"x")
    (tmp_path / "README.txt").write_text("kept")
    prepare_out_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.txt"]


def test_parallel_map_keeps_order_and_reports_progress(capsys) -> None:
    from nes2net_stream.data.corpus.builder import map_jobs

    assert map_jobs(abs, [-3, 2, -1], 1, "testing", True) == [3, 2, 1]
    assert map_jobs(abs, list(range(-6, 0)), 2, "testing", False) == [6, 5, 4, 3, 2, 1]
    assert "testing" in capsys.readouterr().err
