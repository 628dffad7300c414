"""`eval --channel`: every trial through a telephone codec before scoring."""

import json
import zlib

import numpy as np
import pytest

from nes2net_stream.audio.codecs import available_codecs, encode_decode
from nes2net_stream.audio.io import load_audio
from nes2net_stream.audio.windows import pad_by_repetition
from nes2net_stream.bundle import load_model
from nes2net_stream.cli import main
from nes2net_stream.data.protocols import audio_path, database_split, read_protocol
from nes2net_stream.errors import AudioError
from nes2net_stream.evaluation.protocol_scoring import codec_channel, loss_channel, score_trials
from nes2net_stream.scoring.files import OFFICIAL_SAMPLES, score_arrays


@pytest.fixture(scope="module")
def demo():
    return load_model("builtin:demo")


@pytest.fixture(scope="module")
def eval_split(toy_corpus):
    protocol, audio = database_split(toy_corpus, "eval")
    return read_protocol(protocol)[:6], audio


def test_a_codec_channel_scores_the_decoded_audio(demo, eval_split):
    trials, audio = eval_split
    got = score_trials(demo, trials, audio, channel=codec_channel("mulaw"), progress=False)
    clean = score_trials(demo, trials, audio, progress=False)
    decoded = [encode_decode(load_audio(audio_path(audio, t.utterance)).samples, 16000, "mulaw")
               for t in trials]
    expected = score_arrays(demo, [pad_by_repetition(x, OFFICIAL_SAMPLES) for x in decoded])
    for trial, want in zip(trials, expected, strict=True):
        assert got[trial.utterance] == pytest.approx(want["raw"], abs=1e-5)
    assert any(abs(got[t.utterance] - clean[t.utterance]) > 1e-4 for t in trials)


def test_the_channel_sees_whole_recordings_at_their_own_rate(demo, eval_split):
    trials, audio = eval_split
    seen: list[tuple[int, int]] = []

    def identity(x: np.ndarray, rate: int) -> np.ndarray:
        seen.append((x.size, rate))
        return x

    for mode in ("4s", "windows"):
        seen.clear()
        got = score_trials(demo, trials, audio, mode=mode, channel=identity, progress=False)
        assert got == score_trials(demo, trials, audio, mode=mode, progress=False)
        assert seen == [(40000, 16000)] * len(trials)  # 2.5 s files, before any crop


def test_eval_reports_the_channel(capsys, tmp_path, toy_corpus):
    codec = "amr_nb" if "amr_nb" in available_codecs() else "alaw"
    code = main(["eval", "--model", "builtin:demo", "--database", str(toy_corpus), "--split",
                 "eval", "--channel", f"{codec}:" + ("4750" if codec == "amr_nb" else "64000"),
                 "--out", str(tmp_path / "ev")])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["channel"].startswith(codec)
    assert metrics["metrics"]["n_bonafide"] == metrics["metrics"]["n_spoof"] == 12
    # scores made elsewhere (e.g. pooled over models): --channel labels their report
    key = database_split(toy_corpus, "eval")[0]
    base = ["eval", "--scores", str(tmp_path / "ev" / "scores.txt"), "--key", str(key),
            "--bootstrap", "0"]
    assert main([*base, "--channel", metrics["channel"], "--out", str(tmp_path / "pooled")]) == 0
    pooled = json.loads((tmp_path / "pooled" / "metrics.json").read_text())
    assert pooled["channel"] == metrics["channel"]
    assert pooled["metrics"]["eer"] == metrics["metrics"]["eer"]
    capsys.readouterr()
    assert main([*base, "--channel", "nope"]) == 2
    assert "unknown codec 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "message"), [
    ("nope", "unknown codec 'nope'"),
    ("mulaw:abc", "not a whole number"),
    ("mulaw:1234", "does not support bitrate 1234"),
])
def test_a_bad_channel_is_refused_before_scoring(capsys, toy_corpus, value, message):
    code = main(["eval", "--model", "builtin:demo", "--database", str(toy_corpus),
                 "--channel", value])
    err = capsys.readouterr().err
    assert code == 2 and "--channel" in err and message in err


def test_codec_channel_checks_its_codec():
    with pytest.raises(AudioError, match="valid codecs"):
        codec_channel("g999")


def test_a_loss_channel_loses_the_same_packets_after_the_codec():
    from nes2net_stream.audio.plc import lose_packets

    x = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    calls = []

    def codec(y, rate):
        calls.append(rate)
        return y * 0.5

    silent = loss_channel(0.1, fill="silence", then=codec)
    a, b = silent(x, 16000), silent(x, 16000)
    np.testing.assert_array_equal(a, b)  # the same losses in every run
    assert calls == [16000, 16000]
    packets = a.reshape(50, 320)
    dropped = [i for i in range(50) if not packets[i].any()]
    assert 1 <= len(dropped) <= 15 and 0 not in dropped
    kept = [i for i in range(50) if i not in dropped]
    np.testing.assert_array_equal(packets[kept], (x * 0.5).reshape(50, 320)[kept])
    concealed = loss_channel(0.1)(x, 16000)  # the same packets lost, concealed instead
    seed_rng = np.random.default_rng(zlib.crc32(x.tobytes()))
    np.testing.assert_array_equal(concealed, lose_packets(x, 320, 0.1, seed_rng))
    assert not np.array_equal(concealed[320 * dropped[0]:320 * (dropped[0] + 1)], 0)
    with pytest.raises(AudioError, match="outside"):
        loss_channel(1.0)
    with pytest.raises(AudioError, match="fill"):
        loss_channel(0.1, fill="noise")


def test_eval_reports_the_packet_loss(capsys, tmp_path, toy_corpus):
    args = ["eval", "--model", "builtin:demo", "--database", str(toy_corpus), "--split", "eval",
            "--bootstrap", "0"]
    results = {}
    for fill in ("conceal", "silence"):
        out = tmp_path / fill
        code = main([*args, "--packet-loss", "0.3", "--loss-fill", fill, "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        results[fill] = json.loads((out / "metrics.json").read_text())
        assert results[fill]["packet_loss"] == {"rate": 0.3, "packet_ms": 20, "fill": fill}
        assert "channel" not in results[fill]
    clean = tmp_path / "clean"
    assert main([*args, "--out", str(clean)]) == 0
    scores = [(tmp_path / d / "scores.txt").read_text() for d in ("conceal", "silence", "clean")]
    assert len(set(scores)) == 3
    assert "packet_loss" not in json.loads((clean / "metrics.json").read_text())
    capsys.readouterr()
    assert main([*args, "--packet-loss", "0.9"]) == 2
    assert "--packet-loss" in capsys.readouterr().err
