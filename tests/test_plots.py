"""PNG plots, and the score-file report that writes them."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from matplotlib import _pylab_helpers
from matplotlib.image import imread

from nes2net_stream.data.protocols import Trial, write_protocol
from nes2net_stream.errors import DataError
from nes2net_stream.evaluation.metrics import CostModel, compute_eer, evaluate, min_dcf
from nes2net_stream.evaluation.plots import plot_det, plot_histograms
from nes2net_stream.evaluation.report import (
    evaluate_score_file,
    format_report,
    per_speaker,
    per_system_eer,
)
from nes2net_stream.evaluation.scorefiles import write_scores

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _scores(seed=0, n=400):
    rng = np.random.default_rng(seed)
    return rng.normal(2.0, 1.0, n), rng.normal(0.0, 1.2, n)


def _assert_drawn(path):
    pixels = imread(path)
    # something other than the white background was drawn, in more than one colour
    assert pixels[..., :3].min() < 0.5
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20


def test_det_plot_is_a_png_of_the_requested_size(tmp_path):
    bona, spoof = _scores()
    out = plot_det(bona, spoof, tmp_path / "a" / "det.png", title="test")
    assert out == tmp_path / "a" / "det.png"
    assert _png_size(out) == (600, 600)
    _assert_drawn(out)
    big = plot_det(bona, spoof, tmp_path / "det2.png", figsize=(4.0, 3.0), dpi=150)
    assert _png_size(big) == (600, 450)
    assert _pylab_helpers.Gcf.get_num_fig_managers() == 0  # nothing left open


def test_det_plot_of_a_poor_system(tmp_path):
    rng = np.random.default_rng(1)
    bona, spoof = rng.normal(0, 1, 50), rng.normal(0.5, 1, 50)  # EER above 40 %
    assert compute_eer(bona, spoof)[0] > 0.4
    out = plot_det(bona, spoof, tmp_path / "det.png")
    assert _png_size(out) == (600, 600)


def test_histogram_plot_with_and_without_threshold(tmp_path):
    bona, spoof = _scores(2)
    a = plot_histograms(bona, spoof, tmp_path / "h1.png", threshold=1.0)
    b = plot_histograms(bona, spoof, tmp_path / "h2.png")
    assert _png_size(a) == _png_size(b) == (700, 400)
    _assert_drawn(a)
    assert a.read_bytes() != b.read_bytes()  # the threshold line is drawn
    assert _pylab_helpers.Gcf.get_num_fig_managers() == 0


def test_histogram_of_heavy_tailed_scores_caps_the_bins(tmp_path):
    rng = np.random.default_rng(3)
    bona, spoof = rng.standard_cauchy(20_000), rng.standard_cauchy(20_000) - 2
    out = plot_histograms(bona, spoof, tmp_path / "h.png", dpi=50)
    assert _png_size(out) == (350, 200)


def test_plots_reject_bad_scores(tmp_path):
    with pytest.raises(DataError, match="no spoof scores"):
        plot_det([1.0, 2.0, 3.0], [], tmp_path / "det.png")
    with pytest.raises(DataError, match="NaN"):
        plot_histograms([1.0, float("nan")], [0.0], tmp_path / "h.png")
    assert not list(tmp_path.iterdir())


def _corpus(tmp_path):
    rng = np.random.default_rng(4)
    trials, scores = [], {}
    for i in range(60):
        trials.append(Trial(f"S{i % 5}", f"B_{i:04d}", "-", "bonafide"))
        scores[f"B_{i:04d}"] = float(rng.normal(2.0, 1.0))
    for system, mean in (("A01", -2.0), ("A02", 1.5)):
        for i in range(40):
            trials.append(Trial(f"S{i % 5}", f"{system}_{i:04d}", system, "spoof"))
            scores[f"{system}_{i:04d}"] = float(rng.normal(mean, 1.0))
    key = write_protocol(tmp_path / "key.txt", trials)
    return trials, scores, key


def test_per_system_eer_separates_easy_and_hard_attacks(tmp_path):
    trials, scores, _ = _corpus(tmp_path)
    result = per_system_eer(scores, trials)
    assert list(result) == ["A01", "A02"]
    bona = [scores[t.utterance] for t in trials if not t.is_spoof]
    a02 = [scores[t.utterance] for t in trials if t.system == "A02"]
    assert result["A02"] == compute_eer(bona, a02)[0]
    assert result["A01"] < 0.1 < result["A02"]


def test_per_speaker_finds_the_flagged_speaker_and_the_missed_voice(tmp_path):
    trials, scores, key = _corpus(tmp_path)
    # one genuine speaker sounds "synthetic" to the detector, one attack voice passes
    for t in trials:
        if t.speaker == "S3" and not t.is_spoof:
            scores[t.utterance] = -3.0
        if t.speaker == "S1" and t.system == "A01":
            scores[t.utterance] = 5.0
    result = per_speaker(scores, trials, threshold=0.5)
    bona, spoof = result["bonafide"], result["spoof"]
    assert list(bona) == ["S0", "S1", "S2", "S3", "S4"] and bona["S3"]["trials"] == 12
    assert bona["S3"]["false_alarm_rate"] == 1.0 and bona["S3"]["mean_score"] == -3.0
    assert all(bona[s]["false_alarm_rate"] < 0.5 for s in ("S0", "S1", "S2", "S4"))
    expected = np.mean([scores[t.utterance] >= 0.5 for t in trials
                        if t.is_spoof and t.speaker == "S1"])
    assert spoof["S1"]["miss_rate"] == pytest.approx(expected) and expected >= 0.5
    assert spoof["S1"]["system"] == "mixed" and spoof["S1"]["trials"] == 16
    # in the report, at the EER threshold, worst first
    score_file = write_scores(tmp_path / "scores.txt", scores)
    report = evaluate_score_file(score_file, key)
    assert report["per_speaker"] == per_speaker(scores, trials,
                                                report["metrics"]["eer_threshold"])
    text = format_report(report)
    assert "flagged genuine speakers: S3 100 % of 12" in text
    assert "missed spoof voices: S1" in text
    with pytest.raises(DataError, match="no score"):
        per_speaker({}, trials, threshold=0.0)


def test_evaluate_score_file_with_plots(tmp_path):
    trials, scores, key = _corpus(tmp_path)
    score_file = write_scores(tmp_path / "scores.tsv", {**scores, "extra": 0.0},
                              layout="asvspoof5")
    result = evaluate_score_file(score_file, key, plots_dir=tmp_path / "plots")
    bona = [scores[t.utterance] for t in trials if not t.is_spoof]
    spoof = [scores[t.utterance] for t in trials if t.is_spoof]
    assert result["metrics"] == evaluate(bona, spoof).to_dict()
    assert result["layout"] == "asvspoof5"
    assert result["extra_scores"] == 1
    assert result["costs"] == {"p_spoof": 0.05, "c_miss": 1.0, "c_fa": 10.0}
    assert set(result["per_system_eer"]) == {"A01", "A02"}
    assert _png_size(tmp_path / "plots" / "det.png") == (600, 600)
    assert _png_size(tmp_path / "plots" / "hist.png") == (700, 400)
    assert result["plots"] == {"det": str(tmp_path / "plots" / "det.png"),
                               "hist": str(tmp_path / "plots" / "hist.png")}
    json.dumps(result)  # JSON-ready


def test_evaluate_score_file_custom_costs_and_no_plots(tmp_path):
    trials, scores, key = _corpus(tmp_path)
    score_file = write_scores(tmp_path / "scores.txt", scores)
    default = evaluate_score_file(score_file, key)
    costs = CostModel(p_spoof=0.5, c_fa=1.0)
    custom = evaluate_score_file(score_file, key, costs=costs)
    assert default["plots"] == {} and default["layout"] == "2021"
    assert not (tmp_path / "det.png").exists()
    assert custom["costs"] == {"p_spoof": 0.5, "c_miss": 1.0, "c_fa": 1.0}
    assert custom["metrics"]["eer"] == default["metrics"]["eer"]
    bona = [scores[t.utterance] for t in trials if not t.is_spoof]
    spoof = [scores[t.utterance] for t in trials if t.is_spoof]
    assert custom["metrics"]["min_dcf"] == min_dcf(bona, spoof, costs)[0]
    assert custom["metrics"]["act_dcf_threshold"] == pytest.approx(0.0)  # -ln(1) for beta = 1


def test_evaluate_score_file_errors(tmp_path):
    _, scores, key = _corpus(tmp_path)
    del scores["A02_0003"]
    score_file = write_scores(tmp_path / "scores.txt", scores)
    with pytest.raises(DataError, match="1 of 140 key trials have no score: A02_0003"):
        evaluate_score_file(score_file, key)
    with pytest.raises(DataError, match="protocol file not found"):
        evaluate_score_file(score_file, tmp_path / "nokey.txt")
    (tmp_path / "file").write_text("x")
    scores["A02_0003"] = 0.0
    write_scores(score_file, scores)
    with pytest.raises(DataError, match="plots folder is a file"):
        evaluate_score_file(score_file, key, plots_dir=tmp_path / "file")


def test_format_report(tmp_path):
    _, scores, key = _corpus(tmp_path)
    result = evaluate_score_file(write_scores(tmp_path / "s.txt", {**scores, "x": 1.0}), key)
    text = format_report(result)
    m = result["metrics"]
    assert f"{100 * m['eer']:7.3f} %" in text
    assert f"{m['min_dcf']:9.4f}" in text
    assert "60 bona fide, 80 spoof" in text
    assert "Pspoof=0.05, Cmiss=1, Cfa=10" in text
    assert "A01" in text and "A02" in text
    assert "1 scores not in the key were ignored" in text
    # a bare Metrics dictionary works too
    assert format_report(m).splitlines()[0] == "trials      60 bona fide, 80 spoof"
    with pytest.raises(DataError, match="missing metric 'cllr'"):
        format_report({k: v for k, v in m.items() if k != "cllr"})
