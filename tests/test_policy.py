"""Running aggregation of window scores and the alert states built on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nes2net_stream.errors import ConfigError
from nes2net_stream.scoring.aggregate import AGGREGATIONS, RunningAggregate, aggregate_llrs
from nes2net_stream.service.policy import AlertConfig, ChannelPolicy


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("method", AGGREGATIONS)
def test_running_aggregate_equals_the_batch_aggregate(method, ties):
    rng = np.random.default_rng(7)
    llrs = rng.normal(0.0, 3.0, size=300)  # past the buffer's first doublings (64, 128)
    llrs = list(np.round(llrs, 0) if ties else llrs)  # many equal values: median's middle pair
    running = RunningAggregate(method, ema_alpha=0.25)
    assert running.value is None
    for n, llr in enumerate(llrs, start=1):
        value = running.add(llr)
        batch = aggregate_llrs(llrs[:n], method, ema_alpha=0.25)
        assert value == running.value and len(running) == n
        if method == "mean":  # a compensated running sum: the last bits may differ
            assert value == pytest.approx(batch, rel=1e-13, abs=1e-13)
        else:
            assert value == batch


def test_the_running_mean_stays_accurate_over_a_long_call():
    # 14,400 windows (4 hours at a 1 s hop) of large LLRs of both signs: no drift
    rng = np.random.default_rng(3)
    llrs = rng.normal(0.0, 30.0, size=14_400) + 1e3 * (rng.random(14_400) < 0.01)
    running = RunningAggregate("mean")
    for llr in llrs:
        running.add(llr)
    assert running.value == pytest.approx(math.fsum(llrs) / len(llrs), rel=1e-15, abs=1e-15)


def test_running_aggregate_rejects_what_the_batch_aggregate_rejects():
    with pytest.raises(ValueError, match="unknown aggregation"):
        RunningAggregate("mode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ema_alpha"):
        RunningAggregate("ema", ema_alpha=0.0)


def probability(llr: float) -> float:
    return 1.0 / (1.0 + math.exp(-llr))


def test_states_rise_at_thresholds_and_fall_only_past_the_hysteresis():
    cfg = AlertConfig(suspicious_threshold=0.5, spoof_threshold=0.8, hysteresis=0.1,
                      min_windows_for_spoof=2, min_windows_for_state=1, aggregation="max")
    pol = ChannelPolicy(cfg)
    assert pol.running_llr is None and pol.running_probability is None
    steps = []
    # logit values: max aggregation, so the running probability is that of the largest LLR
    for llr in (-2.0, 3.0):
        steps.append(pol.update(llr, probability(llr)))
    assert steps == [(None, "bona_fide"), ("bona_fide", "spoof")]
    assert pol.running_llr == 3.0
    assert pol.running_probability == pytest.approx(probability(3.0))
    assert pol.max_probability == pytest.approx(probability(3.0))


def test_one_window_cannot_raise_spoof_and_the_mean_can_step_down():
    cfg = AlertConfig(suspicious_threshold=0.5, spoof_threshold=0.8, hysteresis=0.1,
                      min_windows_for_spoof=2, min_windows_for_state=1)
    pol = ChannelPolicy(cfg)
    assert pol.update(4.0, probability(4.0)) == (None, "suspicious")  # one window: not spoof
    assert pol.update(4.0, probability(4.0)) == ("suspicious", "spoof")
    # mean of (4, 4, -3) = 1.67 -> p 0.84: still spoof
    assert pol.update(-3.0, probability(-3.0)) == ("spoof", "spoof")
    # mean 1.25 -> p 0.777: below 0.8 but above 0.8 - 0.1: hysteresis keeps spoof
    assert pol.update(0.0, 0.5) == ("spoof", "spoof")
    # mean 0.4 -> p 0.599: below 0.7, above 0.4: suspicious
    assert pol.update(-3.0, probability(-3.0)) == ("spoof", "suspicious")
    # mean -0.33 -> p 0.417: above 0.5 - 0.1, stays suspicious
    assert pol.update(-4.0, probability(-4.0)) == ("suspicious", "suspicious")
    # mean -1.0 -> p 0.269: bona fide
    assert pol.update(-5.0, probability(-5.0)) == ("suspicious", "bona_fide")
    assert pol.running_llr == pytest.approx(np.mean([4, 4, -3, 0, -3, -4, -5]))


def test_the_prior_shifts_the_running_probability():
    pol = ChannelPolicy(AlertConfig(spoof_prior=0.1))
    pol.update(0.0, 0.5)
    assert pol.running_probability == pytest.approx(0.1)


def test_the_policy_keeps_no_per_window_history():
    pol = ChannelPolicy(AlertConfig(aggregation="ema", ema_alpha=0.5))
    for llr in (1.0, 3.0, 4.0):
        pol.update(llr, probability(llr))
    assert pol.windows == 3 and pol.running_llr == 3.0  # ((1 + 3) / 2 + 4) / 2
    assert not any(isinstance(v, list) for v in vars(pol).values())


def test_invalid_alert_settings_fail_naming_the_key():
    with pytest.raises(ConfigError, match="hysteresis"):
        AlertConfig(hysteresis=0.6)
    with pytest.raises(ConfigError, match="min_windows_for_spoof"):
        AlertConfig(min_windows_for_spoof=0)
    with pytest.raises(ConfigError, match="min_windows_for_state"):
        AlertConfig(min_windows_for_state=0)


def test_no_state_until_enough_windows_so_an_odd_opening_window_raises_nothing():
    # the demo's human call: an opening window at p 0.70, then clearly bona fide windows
    pol = ChannelPolicy(AlertConfig(min_windows_for_state=2))
    assert pol.update(0.86, probability(0.86)) == (None, None)
    assert pol.running_probability == pytest.approx(probability(0.86))  # still reported
    assert pol.update(-2.83, probability(-2.83)) == (None, "bona_fide")
    # with one window of evidence, the same opening window raises an alert
    eager = ChannelPolicy(AlertConfig(min_windows_for_state=1))
    assert eager.update(0.86, probability(0.86)) == (None, "suspicious")


def test_a_synthetic_call_reaches_spoof_as_soon_as_it_has_a_state():
    pol = ChannelPolicy(AlertConfig(min_windows_for_state=2, min_windows_for_spoof=2))
    assert pol.update(2.63, probability(2.63)) == (None, None)
    assert pol.update(2.26, probability(2.26)) == (None, "spoof")
    # the state threshold counts windows: a later bound needs that many
    late = ChannelPolicy(AlertConfig(min_windows_for_state=3))
    assert [late.update(3.0, probability(3.0))[1] for _ in range(4)] == [
        None, None, "spoof", "spoof"]
