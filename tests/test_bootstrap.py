"""Bootstrap confidence intervals and paired comparisons of CM score sets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nes2net_stream.cli import main
from nes2net_stream.data.protocols import Trial, write_protocol
from nes2net_stream.errors import ConfigError, DataError
from nes2net_stream.evaluation.bootstrap import (
    BootstrapError,
    _Clusters,
    bootstrap_metrics,
    compare_systems,
    resolve_unit,
)
from nes2net_stream.evaluation.metrics import evaluate
from nes2net_stream.evaluation.report import evaluate_score_file, format_report
from nes2net_stream.evaluation.scorefiles import write_scores


def _population(rng, *, speakers=10, per_speaker=20, gap=2.0, tau=1.0, sigma=1.0):
    """Scores with a random per-speaker offset (sd ``tau``) on top of trial noise (``sigma``).

    Bona fide scores centre on ``gap``, spoof scores on 0, so the population EER is
    ``Phi(-gap / (2 sqrt(tau^2 + sigma^2)))``.
    """
    trials, scores = [], {}
    for key, centre in (("bonafide", gap), ("spoof", 0.0)):
        for k in range(speakers):
            offset = rng.normal(0.0, tau)
            for j in range(per_speaker):
                utt = f"{key}-{k}-{j}"
                trials.append(Trial(f"{key[0].upper()}{k}", utt, "-" if key == "bonafide"
                                    else "A01", key))
                scores[utt] = float(centre + offset + rng.normal(0.0, sigma))
    return trials, scores


def _true_eer(gap, tau, sigma):
    return 0.5 * math.erfc(gap / (2 * math.sqrt(tau**2 + sigma**2)) / math.sqrt(2))


def test_intervals_hold_the_estimate_and_repeat_with_the_seed():
    trials, scores = _population(np.random.default_rng(0))
    a = bootstrap_metrics(scores, trials, n_resamples=300, seed=5)
    b = bootstrap_metrics(scores, trials, n_resamples=300, seed=5)
    c = bootstrap_metrics(scores, trials, n_resamples=300, seed=6)
    assert a == b and a != c
    point = evaluate([scores[t.utterance] for t in trials if not t.is_spoof],
                     [scores[t.utterance] for t in trials if t.is_spoof])
    assert a.intervals["eer"].estimate == point.eer
    assert a.intervals["min_dcf"].estimate == pytest.approx(point.min_dcf)
    assert a.intervals["act_dcf"].estimate == pytest.approx(point.act_dcf)
    assert a.intervals["cllr"].estimate == pytest.approx(point.cllr)
    for iv in a.intervals.values():
        assert iv.low <= iv.estimate <= iv.high and iv.low < iv.high
    assert a.unit == "speaker" and a.clusters == {"bonafide": 10, "spoof": 10}
    assert json.loads(json.dumps(a.to_dict()))["intervals"]["eer"]["low"] == a.intervals[
        "eer"].low


@pytest.mark.parametrize("keys", [list("aabacccb"), ["x", "y", "x", "z"], list("abcdef")])
def test_a_draw_takes_whole_clusters(keys):
    clusters = _Clusters.of(keys)
    groups = {k: [i for i, key in enumerate(keys) if key == k] for k in dict.fromkeys(keys)}
    for seed in range(20):
        drawn = clusters.draw(np.random.default_rng(seed))
        picked = np.random.default_rng(seed).integers(len(groups), size=len(groups))
        names = list(groups)
        expected = [i for p in picked for i in groups[names[p]]]
        assert drawn.tolist() == expected


def test_separated_classes_have_a_zero_eer_interval():
    trials, scores = _population(np.random.default_rng(1), gap=40.0, tau=0.5)
    r = bootstrap_metrics(scores, trials, n_resamples=100)
    assert (r.intervals["eer"].low, r.intervals["eer"].high) == (0.0, 0.0)


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_coverage_of_the_population_eer(tau):
    """95 % intervals cover the true EER about 95 % of the time when the unit is right.

    With speaker effects (tau > 0) trial resampling pretends every trial is independent and
    under-covers; speaker resampling does not. Without them both cover.
    """
    gap, sigma, reps = 2.0, 1.0, 80
    truth = _true_eer(gap, tau, sigma)
    rng = np.random.default_rng(2)
    covered = {"speaker": 0, "trial": 0}
    for rep in range(reps):
        trials, scores = _population(rng, speakers=12, per_speaker=15, gap=gap, tau=tau)
        for unit in covered:
            iv = bootstrap_metrics(scores, trials, n_resamples=200, unit=unit,
                                   seed=rep).intervals["eer"]
            covered[unit] += iv.low <= truth <= iv.high
    speaker, trial = covered["speaker"] / reps, covered["trial"] / reps
    assert speaker >= 0.82, covered
    if tau:
        assert trial < 0.75 and speaker - trial > 0.15, covered
    else:
        assert trial >= 0.85, covered


def test_paired_comparison_of_a_system_with_itself_and_a_better_one():
    rng = np.random.default_rng(3)
    trials, a = _population(rng)
    same = compare_systems(a, dict(a), trials, n_resamples=200)
    for k, iv in same.difference.items():
        assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)
        assert same.p_b_better[k] == 0.0
    # B: the same trials with the classes pulled apart, plus a little noise of its own
    b = {t.utterance: a[t.utterance] + (1.0 if not t.is_spoof else -1.0)
         + rng.normal(0, 0.2) for t in trials}
    better = compare_systems(a, b, trials, n_resamples=300)
    assert better.difference["eer"].high < 0 and better.p_b_better["eer"] > 0.97
    assert better.b.intervals["eer"].estimate < better.a.intervals["eer"].estimate
    # pairing cancels the shared speaker effects: the difference is known far better than
    # if the two systems had been resampled independently
    def width(iv):
        return iv.high - iv.low

    unpaired = math.hypot(width(better.a.intervals["eer"]), width(better.b.intervals["eer"]))
    assert width(better.difference["eer"]) < 0.7 * unpaired


def test_resolve_unit():
    named = [Trial("S1", "u1", "-", "bonafide"), Trial("S2", "u2", "-", "bonafide"),
             Trial("V1", "u3", "A01", "spoof"), Trial("V2", "u4", "A01", "spoof")]
    two_column = [Trial("-", "u1", "-", "bonafide"), Trial("-", "u3", "-", "spoof")]
    assert resolve_unit(named) == "speaker"
    assert resolve_unit(named[:3] + [Trial("V1", "u4", "A01", "spoof")]) == "trial"
    assert resolve_unit(two_column) == "trial"
    assert resolve_unit(two_column, "speaker") == "speaker"
    with pytest.raises(ConfigError, match="unit"):
        resolve_unit(named, "utterance")


def test_bad_requests_are_refused():
    trials, scores = _population(np.random.default_rng(4), speakers=3, per_speaker=4)
    with pytest.raises(ConfigError, match="resamples"):
        bootstrap_metrics(scores, trials, n_resamples=5)
    with pytest.raises(ConfigError, match="level"):
        bootstrap_metrics(scores, trials, level=1.0)
    with pytest.raises(ConfigError, match="unit"):
        bootstrap_metrics(scores, trials, unit="call")  # type: ignore[arg-type]
    one_voice = [Trial("S", t.utterance, t.system, t.key) if not t.is_spoof else t
                 for t in trials]
    with pytest.raises(BootstrapError, match="at least 2 speakers of bona fide"):
        bootstrap_metrics(scores, one_voice)
    missing = dict(scores)
    missing.pop(trials[0].utterance)
    with pytest.raises(DataError, match="no score"):
        bootstrap_metrics(missing, trials)
    # hard decisions but one: a third of the resamples miss it and have 2 distinct values
    trials, _ = _population(np.random.default_rng(4), speakers=4, per_speaker=10)
    hard = {t.utterance: (1.0 if not t.is_spoof else 0.0) for t in trials}
    hard[trials[0].utterance] = 0.5
    with pytest.raises(BootstrapError, match="degenerate"):
        bootstrap_metrics(hard, trials, n_resamples=200, unit="trial")


def _files(tmp_path, seed=0, shift=0.0):
    trials, scores = _population(np.random.default_rng(seed), speakers=6, per_speaker=8)
    key = write_protocol(tmp_path / "key.txt", trials)
    a = write_scores(tmp_path / "a.txt", scores)
    b = write_scores(tmp_path / "b.txt", {t.utterance: s + (shift if not t.is_spoof else 0.0)
                                          for t, s in zip(trials, scores.values(), strict=True)})
    return key, a, b


def test_score_file_report_with_intervals_and_comparison(tmp_path):
    key, a, b = _files(tmp_path, shift=1.5)
    report = evaluate_score_file(a, key, bootstrap=200, compare_path=b)
    assert report["bootstrap"]["unit"] == "speaker"
    assert report["comparison"]["score_file"] == str(b)
    assert report["comparison"]["difference"]["eer"]["estimate"] < 0
    text = format_report(report)
    assert "95 % CI     by speaker (6 bona fide / 6 spoof clusters, 200 resamples)" in text
    assert "B - A       EER -" in text and "of resamples" in text
    assert "bootstrap" not in evaluate_score_file(a, key)
    with pytest.raises(ConfigError, match="needs bootstrap"):
        evaluate_score_file(a, key, compare_path=b)


def test_eval_command_writes_intervals(tmp_path, capsys):
    key, a, b = _files(tmp_path, shift=1.5)
    out = tmp_path / "ev"
    code = main(["eval", "--scores", str(a), "--key", str(key), "--compare", str(b),
                 "--bootstrap", "300", "--bootstrap-unit", "trial", "--confidence", "0.9",
                 "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["bootstrap"]["unit"] == "trial" and report["bootstrap"]["level"] == 0.9
    assert report["bootstrap"]["clusters"] == {"bonafide": 48, "spoof": 48}
    assert "90 % CI" in text and "B - A" in text
    assert main(["eval", "--scores", str(a), "--key", str(key), "--compare", str(b),
                 "--bootstrap", "0"]) == 2
    assert "--compare needs --bootstrap" in capsys.readouterr().err


def test_eval_command_reports_without_intervals_when_it_cannot_resample(tmp_path, capsys):
    key = write_protocol(tmp_path / "key.txt", [
        Trial("S", "u1", "-", "bonafide"), Trial("S", "u2", "-", "bonafide"),
        Trial("V", "u3", "A01", "spoof"), Trial("V", "u4", "A01", "spoof")])
    scores = write_scores(tmp_path / "s.txt", {"u1": 2.0, "u2": 1.0, "u3": 0.5, "u4": -1.0})
    code = main(["eval", "--scores", str(scores), "--key", str(key), "--bootstrap-unit",
                 "speaker", "--out", str(tmp_path / "ev")])
    captured = capsys.readouterr()
    assert code == 0
    assert "warning: no confidence intervals" in captured.err
    assert "EER" in captured.out
    assert "bootstrap" not in json.loads((tmp_path / "ev" / "metrics.json").read_text())
