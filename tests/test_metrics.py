"""Metrics against hand-computed values and brute-force reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from nes2net_stream.errors import ConfigError, DataError
from nes2net_stream.evaluation.metrics import (
    CostModel,
    Metrics,
    act_dcf,
    cllr,
    compute_eer,
    det_curve,
    evaluate,
    min_cllr,
    min_dcf,
)

# A small score set (higher = more bona fide), sorted with classes:
#   -3 (s)  -2 (s)  -1 (b)  -0.5 (s)  1 (b)  1.5 (s)  2 (b)  3 (b)
BONA = [-1.0, 1.0, 2.0, 3.0]
SPOOF = [-3.0, -2.0, -0.5, 1.5]
# Rejecting scores <= t, with frr = #bona <= t / 4 and far = #spoof > t / 4:
#   t      -3.001  -3    -2    -1    -0.5  1     1.5   2     3
#   frr     0      0     0     1/4   1/4   2/4   2/4   3/4   1
#   far     1      3/4   2/4   2/4   1/4   1/4   0     0     0
HAND_THR = [-3.001, -3.0, -2.0, -1.0, -0.5, 1.0, 1.5, 2.0, 3.0]
HAND_FRR = [0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 1.0]
HAND_FAR = [1.0, 0.75, 0.5, 0.5, 0.25, 0.25, 0, 0, 0]


def test_det_curve_by_hand():
    frr, far, thr = det_curve(BONA, SPOOF)
    np.testing.assert_allclose(frr, HAND_FRR)
    np.testing.assert_allclose(far, HAND_FAR)
    np.testing.assert_allclose(thr, HAND_THR)


def test_eer_by_hand():
    # |frr - far| is 0 only at t = -0.5 (frr = far = 1/4), so EER = 25 % at threshold -0.5
    eer, thr = compute_eer(BONA, SPOOF)
    assert eer == pytest.approx(0.25)
    assert thr == pytest.approx(-0.5)


def test_min_dcf_by_hand():
    # Cmiss (1 - Pspoof) = 0.95, Cfa Pspoof = 10 * 0.05 = 0.5, normaliser min(0.95, 0.5) = 0.5
    # so DCF_norm = (0.95 frr + 0.5 far) / 0.5 = 1.9 frr + far at each threshold:
    #   t:    -3.001  -3    -2   -1     -0.5   1     1.5   2      3
    #   DCF:   1      0.75  0.5  0.975  0.725  1.2   0.95  1.425  1.9
    value, thr = min_dcf(BONA, SPOOF, CostModel())
    assert value == pytest.approx(0.5)
    assert thr == pytest.approx(-2.0)


def test_act_dcf_by_hand():
    # beta = 1 * 0.95 / (10 * 0.05) = 1.9, threshold = -ln(1.9) = -0.64185...
    # misses: bona < -0.642 -> {-1}: 1/4; false accepts: spoof >= -0.642 -> {-0.5, 1.5}: 2/4
    # actDCF = (0.95 * 1/4 + 0.5 * 2/4) / 0.5 = (0.2375 + 0.25) / 0.5 = 0.975
    value, thr = act_dcf(BONA, SPOOF, CostModel())
    assert thr == pytest.approx(-math.log(1.9))
    assert value == pytest.approx(0.975)


def test_cllr_by_hand():
    ln3, ln7 = math.log(3), math.log(7)
    bona = [ln3, ln3, 0.0, -ln3]
    spoof = [-ln3, -ln3, -ln7, ln3]
    # bona fide cost log2(1 + e^-llr): log2(4/3) twice, log2(2) = 1, log2(4) = 2
    #   mean = (2 (2 - log2 3) + 1 + 2) / 4 = (7 - 2 log2 3) / 4
    # spoof cost log2(1 + e^llr): log2(4/3) twice, log2(8/7) = 3 - log2 7, log2(4) = 2
    #   mean = (2 (2 - log2 3) + 3 - log2 7 + 2) / 4 = (9 - 2 log2 3 - log2 7) / 4
    expected = 0.5 * ((7 - 2 * math.log2(3)) / 4 + (9 - 2 * math.log2(3) - math.log2(7)) / 4)
    assert cllr(bona, spoof) == pytest.approx(expected, rel=1e-12)
    # all-zero LLRs (no information) cost exactly 1 bit
    assert cllr([0.0, 0.0], [0.0]) == pytest.approx(1.0)


def test_min_cllr_by_hand():
    # labels in score order: s s b s b s b b -> PAV posteriors 0 0 .5 .5 .5 .5 1 1
    # (the violators "b s" and "b s" are pooled to 0.5); prior odds 4/4 = 1, so the LLRs are
    # -inf -inf 0 0 0 0 +inf +inf. Bona fide costs: 1, 1, 0, 0 (mean 0.5); spoof: 0, 0, 1, 1.
    assert min_cllr(BONA, SPOOF) == pytest.approx(0.5)


def test_evaluate_matches_the_parts():
    m = evaluate(BONA, SPOOF)
    assert isinstance(m, Metrics)
    assert (m.eer, m.eer_threshold) == pytest.approx((0.25, -0.5))
    assert (m.min_dcf, m.min_dcf_threshold) == pytest.approx((0.5, -2.0))
    assert m.act_dcf == pytest.approx(0.975)
    assert m.cllr == pytest.approx(cllr(BONA, SPOOF))
    assert m.min_cllr == pytest.approx(0.5)
    assert (m.n_bonafide, m.n_spoof) == (4, 4)
    d = m.to_dict()
    assert d["eer"] == pytest.approx(0.25) and d["n_spoof"] == 4
    assert set(d) >= {"eer", "eer_threshold", "min_dcf", "act_dcf", "cllr", "n_bonafide",
                      "n_spoof"}


def _brute_force_det(bona, spoof):
    """Error counts at every threshold, one comparison loop per candidate."""
    cands = [-np.inf, *sorted(set(bona.tolist()) | set(spoof.tolist()))]
    n_rej = np.array([sum(1 for x in bona if x <= t) for t in cands])
    n_acc = np.array([sum(1 for x in spoof if x > t) for t in cands])
    return n_rej, n_acc, np.array(cands)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_and_min_dcf_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    # rounded to create ties between and within classes
    bona = np.round(rng.normal(1.0, 1.0, 300), 1)
    spoof = np.round(rng.normal(-0.5, 1.3, 450), 1)
    n_rej, n_acc, cands = _brute_force_det(bona, spoof)
    # first threshold where |n_rej / Nb - n_acc / Ns| is smallest (exact: cross-multiplied)
    gaps = [abs(r * spoof.size - a * bona.size) for r, a in zip(n_rej, n_acc, strict=True)]
    i = gaps.index(min(gaps))
    frr, far = n_rej / bona.size, n_acc / spoof.size
    eer, thr = compute_eer(bona, spoof)
    assert i > 0
    assert eer == pytest.approx((frr[i] + far[i]) / 2)
    assert thr == cands[i]
    dcf = (0.95 * frr + 0.5 * far) / 0.5
    assert min_dcf(bona, spoof)[0] == pytest.approx(dcf.min())
    costs = CostModel(p_spoof=0.3, c_miss=2.0, c_fa=1.0)
    dcf = (2.0 * 0.7 * frr + 1.0 * 0.3 * far) / min(1.4, 0.3)
    assert min_dcf(bona, spoof, costs)[0] == pytest.approx(dcf.min())


def test_results_do_not_depend_on_trial_order():
    rng = np.random.default_rng(3)
    bona = np.round(rng.normal(1.0, 1.0, 200), 1)
    spoof = np.round(rng.normal(0.0, 1.0, 200), 1)
    a = evaluate(bona, spoof)
    b = evaluate(rng.permutation(bona), rng.permutation(spoof))
    assert a == b


def test_eer_of_gaussian_scores_matches_theory():
    rng = np.random.default_rng(4)
    d = 2.0  # unit-variance Gaussians d apart: EER = Phi(-d / 2) at the midpoint
    eer, thr = compute_eer(rng.normal(d, 1, 50_000), rng.normal(0, 1, 50_000))
    assert eer == pytest.approx(norm.cdf(-d / 2), abs=0.005)
    assert thr == pytest.approx(d / 2, abs=0.05)


def test_det_curve_is_monotonic_and_spans_0_to_1():
    rng = np.random.default_rng(5)
    frr, far, thr = det_curve(rng.normal(1, 1, 500), rng.normal(0, 1, 700))
    assert np.all(np.diff(frr) >= 0) and np.all(np.diff(far) <= 0)
    assert np.all(np.diff(thr) > 0)
    assert (frr[0], far[0], frr[-1], far[-1]) == (0.0, 1.0, 1.0, 0.0)


def test_perfect_and_inverted_systems():
    assert compute_eer([3.0, 4.0], [0.0, 1.0])[0] == 0.0
    assert min_dcf([3.0, 4.0], [0.0, 1.0])[0] == 0.0
    assert compute_eer([0.0, 1.0], [3.0, 4.0])[0] == 1.0
    assert act_dcf([50.0, 60.0], [-50.0, -60.0])[0] == 0.0
    assert min_cllr([3.0, 4.0], [0.0, 1.0]) == 0.0
    # a useless system cannot cost more than the best trivial decision
    assert min_dcf([0.0, 1.0], [3.0, 4.0])[0] == pytest.approx(1.0)


def test_min_cllr_bounds_and_invariance():
    rng = np.random.default_rng(6)
    bona, spoof = rng.normal(1.5, 1, 2000), rng.normal(-1.5, 1, 2000)
    # these are exact LLRs for N(+-1.5, 1): llr = 3 x, so rescale them
    llr_b, llr_s = 3 * bona, 3 * spoof
    assert min_cllr(bona, spoof) <= cllr(llr_b, llr_s) + 1e-12
    assert min_cllr(bona, spoof) == pytest.approx(min_cllr(np.exp(bona), np.exp(spoof)))
    assert 0.0 < min_cllr(bona, spoof) < 1.0


def test_cllr_is_stable_for_extreme_llrs():
    value = cllr([1e6, 800.0, -800.0], [-1e6, -800.0, 800.0])
    # the two wrong-sided +-800 LLRs cost 800 / ln 2 bits each; the rest cost 0
    assert value == pytest.approx(0.5 * (800 / 3 + 800 / 3) / math.log(2))


def test_cost_model():
    c = CostModel()
    assert (c.p_spoof, c.c_miss, c.c_fa) == (0.05, 1.0, 10.0)
    assert c.beta == pytest.approx(1.9)
    assert c.bayes_threshold == pytest.approx(-math.log(1.9))
    assert c.normalizer == pytest.approx(0.5)
    assert float(c.dcf(0.0, 1.0)) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="p_spoof"):
        CostModel(p_spoof=1.0)
    with pytest.raises(ConfigError, match="c_fa"):
        CostModel(c_fa=-1.0)
    with pytest.raises(ConfigError, match="c_miss"):
        CostModel(c_miss=float("nan"))


@pytest.mark.parametrize(
    ("bona", "spoof", "message"),
    [
        ([], [1.0, 2.0, 3.0], "no bona fide scores"),
        ([1.0, 2.0, 3.0], [], "no spoof scores"),
        ([1.0, float("nan"), 2.0], [0.0], "1 of 3 bona fide scores are NaN or infinite"),
        ([1.0, 2.0], [0.0, float("inf")], "1 of 2 spoof scores are NaN or infinite"),
        ([1.0, 1.0, 1.0], [0.0, 0.0], "fewer than 3 distinct"),
        (["a", "b"], [0.0], "not numbers"),
    ],
)
def test_invalid_scores_raise_data_error(bona, spoof, message):
    for fn in (det_curve, compute_eer, min_dcf, evaluate):
        with pytest.raises(DataError, match=message):
            fn(bona, spoof)


def test_llr_metrics_accept_few_distinct_values_but_not_nan():
    assert act_dcf([1.0], [-1.0])[0] == 0.0
    with pytest.raises(DataError, match="NaN"):
        cllr([float("nan")], [0.0])
    with pytest.raises(DataError, match="no spoof"):
        act_dcf([1.0], [])
