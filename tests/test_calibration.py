"""Prior-weighted logistic-regression calibration on synthetic Gaussian scores."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest

from nes2net_stream.errors import DataError
from nes2net_stream.evaluation.calibration import AffineCalibration, fit_affine_calibration
from nes2net_stream.evaluation.metrics import act_dcf, cllr

# Positive ~ N(M1, SD^2), negative ~ N(M0, SD^2): the log-likelihood ratio is exactly affine,
#   llr(x) = (M1 - M0) / SD^2 * x - (M1^2 - M0^2) / (2 SD^2)
M1, M0, SD = 2.0, -1.0, 1.5
TRUE_SCALE = (M1 - M0) / SD**2  # 4/3
TRUE_OFFSET = -(M1**2 - M0**2) / (2 * SD**2)  # -2/3


def _gaussian(n_pos: int, n_neg: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate((rng.normal(M1, SD, n_pos), rng.normal(M0, SD, n_neg)))
    y = np.concatenate((np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)))
    return x, y


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "prior"),
    [(20_000, 20_000, 0.5), (5_000, 40_000, 0.5), (20_000, 20_000, 0.05), (20_000, 5_000, 0.9)],
)
def test_recovers_the_exact_gaussian_llr(n_pos, n_neg, prior):
    x, y = _gaussian(n_pos, n_neg, seed=n_pos + n_neg)
    cal = fit_affine_calibration(x, y, prior=prior)
    # the LLR does not depend on the prior or the class counts: any prior recovers it
    assert cal.scale == pytest.approx(TRUE_SCALE, rel=0.05)
    assert cal.offset == pytest.approx(TRUE_OFFSET, abs=0.08)
    assert (cal.prior, cal.n_positive, cal.n_negative) == (prior, n_pos, n_neg)


def test_recovers_the_map_from_shifted_and_scaled_raw_scores():
    x, y = _gaussian(20_000, 20_000, seed=7)
    raw = 25.0 * x + 300.0  # raw = 25 x + 300, so llr = TRUE_SCALE (raw - 300) / 25 + ...
    cal = fit_affine_calibration(raw, y)
    assert cal.scale == pytest.approx(TRUE_SCALE / 25.0, rel=0.05)
    probe_x = np.array([-2.0, 0.0, 1.0, 3.0])
    np.testing.assert_allclose(cal.apply(25.0 * probe_x + 300.0),
                               TRUE_SCALE * probe_x + TRUE_OFFSET, atol=0.15)


def test_improves_cllr_and_act_dcf_of_miscalibrated_scores():
    x, y = _gaussian(10_000, 10_000, seed=8)
    llr = TRUE_SCALE * x + TRUE_OFFSET
    bad = 3.0 * llr + 5.0  # over-confident and shifted towards bona fide
    pos = y == 1
    before_cllr = cllr(bad[pos], bad[~pos])
    before_dcf = act_dcf(bad[pos], bad[~pos])[0]
    cal = fit_affine_calibration(bad, y)
    fixed = cal.apply(bad)
    after_cllr = cllr(fixed[pos], fixed[~pos])
    after_dcf = act_dcf(fixed[pos], fixed[~pos])[0]
    assert before_cllr > 1.0  # worse than no information at all
    assert after_cllr < before_cllr - 0.5
    assert after_cllr == pytest.approx(cllr(llr[pos], llr[~pos]), abs=0.01)  # as good as truth
    assert after_dcf < before_dcf
    assert cal.scale == pytest.approx(1 / 3, rel=0.05)
    assert cal.offset == pytest.approx(-5 / 3, abs=0.1)


def test_fast_and_warning_free_on_large_extreme_scores():
    x, y = _gaussian(50_000, 50_000, seed=9)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        start = time.perf_counter()
        cal = fit_affine_calibration(1e6 * x, y)
        elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    assert cal.scale * 1e6 == pytest.approx(TRUE_SCALE, rel=0.05)


def test_separable_scores_give_a_finite_map_and_l2_shrinks_it():
    scores, labels = [0.0, 1.0, 2.0, 10.0, 11.0, 12.0], [0, 0, 0, 1, 1, 1]
    plain = fit_affine_calibration(scores, labels)
    ridge = fit_affine_calibration(scores, labels, l2=0.01)
    assert math.isfinite(plain.scale) and plain.scale > 0
    assert 0 < ridge.scale < plain.scale
    # the decision boundary llr = 0 lies between the classes for both
    for cal in (plain, ridge):
        assert 2.0 < -cal.offset / cal.scale < 10.0


def test_apply_keeps_shape_and_returns_float_for_scalars():
    cal = AffineCalibration(scale=2.0, offset=-1.0)
    assert cal.apply(3.0) == 5.0 and isinstance(cal.apply(3.0), float)
    out = cal.apply([[0.0, 1.0], [2.0, 3.0]])
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[-1.0, 1.0], [3.0, 5.0]])


def test_dict_round_trip_through_json():
    cal = AffineCalibration(scale=0.123, offset=-4.5, prior=0.05, n_positive=10, n_negative=90)
    again = AffineCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    # integers are accepted for float fields; counts default to 0
    assert AffineCalibration.from_dict({"scale": 1, "offset": 0, "prior": 0.5}).n_positive == 0


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"offset": 0.0, "prior": 0.5}, "'scale'"),
        ({"scale": "1.0", "offset": 0.0, "prior": 0.5}, "'scale'"),
        ({"scale": True, "offset": 0.0, "prior": 0.5}, "'scale'"),
        ({"scale": 1.0, "offset": float("nan"), "prior": 0.5}, "'offset'"),
        ({"scale": 1.0, "offset": 0.0, "prior": 1.5}, "'prior'"),
        ({"scale": 1.0, "offset": 0.0, "prior": 0.5, "n_positive": -1}, "'n_positive'"),
        ({"scale": 1.0, "offset": 0.0, "prior": 0.5, "n_negative": 2.5}, "'n_negative'"),
    ],
)
def test_from_dict_names_the_bad_key(data, key):
    with pytest.raises(DataError, match=key):
        AffineCalibration.from_dict(data)


def test_from_dict_rejects_non_mappings():
    with pytest.raises(DataError, match="mapping"):
        AffineCalibration.from_dict([1.0, 0.0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scores", "labels", "kwargs", "message"),
    [
        ([1.0, 2.0, 3.0], [1, 1, 1], {}, "both classes.*3 positive and 0 negative"),
        ([1.0, 2.0], [0, 0], {}, "0 positive and 2 negative"),
        ([], [], {}, "0 positive and 0 negative"),
        ([1.0, float("nan"), 3.0], [1, 0, 1], {}, "1 of 3 scores are NaN"),
        ([1.0, float("inf")], [1, 0], {}, "NaN or infinite"),
        ([1.0, 2.0], [1, 2], {}, "labels must be 0"),
        ([1.0, 2.0], ["spoof", "bonafide"], {}, "labels must be 0"),
        ([1.0, 2.0, 3.0], [1, 0], {}, "3 scores but 2 labels"),
        ([1.0, 2.0], [1, 0], {"prior": 0.0}, "prior"),
        ([1.0, 2.0], [1, 0], {"l2": -1.0}, "l2"),
    ],
)
def test_degenerate_input_raises_data_error(scores, labels, kwargs, message):
    with pytest.raises(DataError, match=message):
        fit_affine_calibration(scores, labels, **kwargs)


def test_boolean_labels_are_accepted():
    x, y = _gaussian(2000, 2000, seed=10)
    a = fit_affine_calibration(x, y)
    b = fit_affine_calibration(x, y.astype(bool))
    assert a == b
