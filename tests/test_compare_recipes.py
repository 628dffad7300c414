"""Ranking two recipes from several runs each: a two-stage (speakers, runs) paired bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_bootstrap import _population

from nes2net_stream.cli import main
from nes2net_stream.data.protocols import write_protocol
from nes2net_stream.errors import ConfigError
from nes2net_stream.evaluation.bootstrap import compare_recipes, compare_systems
from nes2net_stream.evaluation.metrics import evaluate
from nes2net_stream.evaluation.scorefiles import write_scores


def _run(trials, base, rng, shift=0.0, noise=0.3):
    """One training run: the base scores, bona fide moved by ``shift``, plus run noise."""
    return {t.utterance: base[t.utterance] + (0.0 if t.is_spoof else shift)
            + rng.normal(0.0, noise) for t in trials}


def _width(iv):
    return iv.high - iv.low


def test_one_run_per_side_is_the_paired_comparison():
    rng = np.random.default_rng(1)
    trials, base = _population(rng, speakers=8, per_speaker=10)
    a, b = _run(trials, base, rng), _run(trials, base, rng, shift=1.0)
    recipes = compare_recipes([a], [b], trials, n_resamples=200, seed=3)
    systems = compare_systems(a, b, trials, n_resamples=200, seed=3)
    assert recipes.difference == systems.difference
    assert recipes.p_b_better == systems.p_b_better
    assert recipes.a.intervals == systems.a.intervals


def test_means_over_runs_and_the_spread_between_runs():
    rng = np.random.default_rng(2)
    trials, base = _population(rng, speakers=8, per_speaker=10, tau=0.5)
    runs_a = [_run(trials, base, rng) for _ in range(3)]
    steady = [_run(trials, base, rng, shift=1.5) for _ in range(3)]
    erratic = [_run(trials, base, rng, shift=s) for s in (4.0, 1.5, -1.0)]  # same mean shift
    kw = {"n_resamples": 400, "seed": 0}
    better = compare_recipes(runs_a, steady, trials, **kw)
    # the point estimate is the mean over runs of each run's metric
    eers = [evaluate([r[t.utterance] for t in trials if not t.is_spoof],
                     [r[t.utterance] for t in trials if t.is_spoof]).eer for r in runs_a]
    assert better.a.intervals["eer"].estimate == pytest.approx(np.mean(eers))
    assert [r["eer"] for r in better.runs["a"]] == pytest.approx(eers)
    # a recipe better in every run: the whole interval is below 0
    assert better.difference["eer"].high < 0 and better.p_b_better["eer"] > 0.95
    # the same mean effect with runs that disagree: a wider, less certain comparison
    unsure = compare_recipes(runs_a, erratic, trials, **kw)
    assert _width(unsure.difference["eer"]) > 1.5 * _width(better.difference["eer"])
    assert unsure.p_b_better["eer"] < better.p_b_better["eer"]
    assert _width(unsure.b.intervals["eer"]) > _width(better.b.intervals["eer"])


def test_a_side_without_runs_is_refused():
    trials, base = _population(np.random.default_rng(0))
    with pytest.raises(ConfigError, match="at least one run"):
        compare_recipes([], [base], trials)


def test_compare_command(tmp_path, capsys):
    rng = np.random.default_rng(4)
    trials, base = _population(rng, speakers=6, per_speaker=8)
    key = write_protocol(tmp_path / "key.txt", trials)
    files = {f"{side}{i}": write_scores(tmp_path / f"{side}{i}.txt",
                                        _run(trials, base, rng, shift=1.5 if side == "b" else 0))
             for side in "ab" for i in range(2)}
    out = tmp_path / "cmp" / "comparison.json"
    code = main(["compare", "--key", str(key), "-a", str(files["a0"]), "-a", str(files["a1"]),
                 "-b", str(files["b0"]), "-b", str(files["b1"]), "--bootstrap", "200",
                 "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    assert report["score_files"]["b"] == [str(files["b0"]), str(files["b1"])]
    assert len(report["runs"]["a"]) == 2 and report["a"]["unit"] == "speaker"
    assert report["difference"]["eer"]["estimate"] < 0
    assert "A per run   EER" in text and "B mean" in text and "B - A       EER -" in text
    assert "and by run, 200 resamples" in text
