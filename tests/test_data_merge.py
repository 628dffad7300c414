"""``nes2net-stream data merge``: one database from splits of several."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nes2net_stream.cli import main
from nes2net_stream.data.merge import SplitSource, merge_databases, parse_source
from nes2net_stream.data.protocols import LA2019_PROTOCOLS, read_protocol
from nes2net_stream.errors import DataError
from nes2net_stream.training.dataset import load_split


def _protocol(root, split):
    return read_protocol(root / "ASVspoof2019_LA_cm_protocols" / LA2019_PROTOCOLS[split])


def test_parse_source():
    assert parse_source("corpus/demo", "train") == SplitSource(Path("corpus/demo"), "train")
    assert parse_source("my:calls:eval", "train").split == "eval"
    assert str(parse_source("my:calls", "dev")) == "my:calls:dev"  # not a split name: a path


def test_merged_database_trains_like_any_other(toy_corpus, tmp_path, capsys):
    out = tmp_path / "merged"
    code = main(["data", "merge", str(out), "--train", str(toy_corpus),
                 "--train", f"{toy_corpus}:eval", "--dev", str(toy_corpus),
                 "--allow-shared-speakers"])
    assert code == 0
    assert "train: 24 bona fide, 24 spoof" in capsys.readouterr().out
    train = _protocol(out, "train")
    assert [t.utterance for t in train] == [t.utterance for t in
                                            _protocol(toy_corpus, "train")
                                            + _protocol(toy_corpus, "eval")]
    assert _protocol(out, "dev") == _protocol(toy_corpus, "dev")
    assert not (out / "ASVspoof2019_LA_eval").exists()  # no source, no split
    link = out / "ASVspoof2019_LA_train" / "flac" / f"{train[-1].utterance}.flac"
    assert link.is_symlink()
    # a corpus.json like the demo corpus's (what the model-card script reads)
    summary = json.loads((out / "corpus.json").read_text())
    train_summary = summary["splits"]["train"]
    assert (train_summary["bonafide"], train_summary["spoof"]) == (24, 24)
    assert train_summary["bonafide_seconds"] == pytest.approx(24 * 2.5, abs=0.5)
    assert train_summary["bonafide_speakers"] == ["S0", "S1", "S2"]
    assert train_summary["systems"] == {"A01": 24} and set(summary["splits"]) == {"train", "dev"}
    # the trainer's loader reads it (audio decoded through the links)
    trials, audio_dir = load_split(out, "train")
    assert len(trials) == 48 and audio_dir == out / "ASVspoof2019_LA_train" / "flac"


def test_merge_refuses_what_would_mislead(toy_corpus, tmp_path):
    # the toy corpus has the same speakers in every split: training on them and evaluating
    # on them is refused unless asked for
    with pytest.raises(DataError, match=r"optimistic evaluation\): S0 \(eval, train\)"):
        merge_databases(tmp_path / "a", {"train": [SplitSource(toy_corpus, "train")],
                                         "eval": [SplitSource(toy_corpus, "eval")]})
    with pytest.raises(DataError, match="is in both"):
        merge_databases(tmp_path / "b", {"train": [SplitSource(toy_corpus, "train")],
                                         "dev": [SplitSource(toy_corpus, "train")]},
                        allow_shared_speakers=True)
    with pytest.raises(DataError, match="train protocol not found|database folder not found"):
        merge_databases(tmp_path / "c", {"train": [SplitSource(tmp_path / "nothing", "train")]})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        merge_databases(tmp_path / "d", {"train": [SplitSource(toy_corpus, "train")]})
    with pytest.raises(DataError, match="give sources"):
        merge_databases(tmp_path / "e", {})


def test_copied_audio_outlives_the_source(toy_corpus, tmp_path):
    counts = merge_databases(tmp_path / "copy", {"dev": [SplitSource(toy_corpus, "dev")]},
                             copy=True)
    assert counts == {"dev": {"bonafide": 12, "spoof": 12}}
    files = list((tmp_path / "copy" / "ASVspoof2019_LA_dev" / "flac").iterdir())
    assert len(files) == 24 and not any(f.is_symlink() for f in files)


def test_an_excluded_speaker_is_left_out_of_every_split(toy_corpus, tmp_path, capsys):
    out = tmp_path / "held-out"
    # without S0 (in every split of the toy corpus), S1 and S2 are still shared: allowed here
    assert main(["data", "merge", str(out), "--train", str(toy_corpus), "--dev",
                 str(toy_corpus), "--exclude-speaker", "S0", "--allow-shared-speakers"]) == 0
    want = [t for t in _protocol(toy_corpus, "train") if t.speaker != "S0"]
    assert _protocol(out, "train") == want and len(want) < len(_protocol(toy_corpus, "train"))
    assert all(t.speaker != "S0" for t in _protocol(out, "dev"))
    assert json.loads((out / "corpus.json").read_text())["splits"]["train"][
        "bonafide_speakers"] == ["S1", "S2"]
    # a speaker found nowhere is a typo, not a no-op
    capsys.readouterr()
    assert main(["data", "merge", str(tmp_path / "typo"), "--train", str(toy_corpus),
                 "--exclude-speaker", "S9"]) != 0
    assert "excluded speakers found in no source: S9" in capsys.readouterr().err
