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
def test_running_aggregate_equals_the_batch_aggregate_bit_for_bit(method, ties):
    rng = np.random.default_rng(7)
    llrs = rng.normal(0.0, 3.0, size=300)  # past the buffer's first doublings (64, 128)
    llrs = list(np.round(llrs, 0) if ties else llrs)  # many equal values: median's middle pair
    running = RunningAggregate(method, ema_alpha=0.25)
    assert running.value is None
    for n, llr in enumerate(llrs, start=1):
        value = running.add(llr)
        assert value == running.value == aggregate_llrs(llrs[:n], method, ema_alpha=0.25)
        assert len(running) == n


def test_running_aggregate_rejects_what_the_batch_aggregate_rejects():
    with pytest.raises(ValueError, match="unknown aggregation"):
        RunningAggregate("mode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ema_alpha"):
        RunningAggregate("ema", ema_alpha=0.0)


def probability(llr: float) -> float:
    return 1.0 / (1.0 + math.exp(-llr))


def test_states_rise_at_thresholds_and_fall_only_past_the_hysteresis():
    cfg = AlertConfig(suspicious_threshold=0.5, spoof_threshold=0.8, hysteresis=0.1,
                      min_windows_for_spoof=2, aggregation="max")
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
                      min_windows_for_spoof=2)
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


def test_a_policy_built_with_earlier_scores_continues_from_them():
    pol = ChannelPolicy(AlertConfig(aggregation="ema", ema_alpha=0.5), llrs=[1.0, 3.0])
    assert pol.running_llr == 2.0
    pol.update(4.0, probability(4.0))
    assert pol.running_llr == 3.0


def test_invalid_alert_settings_fail_naming_the_key():
    with pytest.raises(ConfigError, match="hysteresis"):
        AlertConfig(hysteresis=0.6)
    with pytest.raises(ConfigError, match="min_windows_for_spoof"):
        AlertConfig(min_windows_for_spoof=0)
