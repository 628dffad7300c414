"""Alert policy: a running score per call channel and states with hysteresis.

The running score aggregates the window LLRs seen so far (mean by default) and is turned into
a running spoof probability. States move up (bona_fide -> suspicious -> spoof) when the running
probability reaches a threshold and move down only when it falls below that threshold minus
the hysteresis, so a score hovering at a threshold does not flap. A channel has no state
until ``min_windows_for_state`` windows are scored, so one odd opening window can neither raise
an alert nor vouch for the caller; ``spoof`` additionally needs ``min_windows_for_spoof``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nes2net_stream.errors import ConfigError
from nes2net_stream.scoring.aggregate import Aggregation, RunningAggregate, llr_probability

_LEVEL = {"bona_fide": 0, "suspicious": 1, "spoof": 2}
_STATES = ("bona_fide", "suspicious", "spoof")


@dataclass(frozen=True)
class AlertConfig:
    """Thresholds on the running spoof probability.

    Attributes:
        suspicious_threshold: running probability at which a call becomes ``suspicious``.
        spoof_threshold: running probability at which it becomes ``spoof``.
        hysteresis: how far below a threshold the probability must fall to step back down.
        min_windows_for_spoof: windows needed before ``spoof`` can be reached.
        min_windows_for_state: windows needed before the channel has any state (``None``
            until then, so the first state event already rests on that many windows).
        aggregation: how window LLRs combine into the running score.
        ema_alpha: weight of the newest window for ``ema``.
        spoof_prior: prior used to turn the running LLR into a probability.
    """

    suspicious_threshold: float = 0.5
    spoof_threshold: float = 0.8
    hysteresis: float = 0.1
    min_windows_for_spoof: int = 2
    min_windows_for_state: int = 2
    aggregation: Aggregation = "mean"
    ema_alpha: float = 0.3
    spoof_prior: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.suspicious_threshold <= self.spoof_threshold < 1.0:
            raise ConfigError("alerts: need 0 < suspicious_threshold <= spoof_threshold < 1")
        if not 0.0 <= self.hysteresis < self.suspicious_threshold:
            raise ConfigError("alerts.hysteresis: must be >= 0 and below suspicious_threshold")
        if self.min_windows_for_spoof < 1:
            raise ConfigError("alerts.min_windows_for_spoof: must be >= 1")
        if self.min_windows_for_state < 1:
            raise ConfigError("alerts.min_windows_for_state: must be >= 1")


@dataclass
class ChannelPolicy:
    """Running score and state of one scored channel of one call."""

    cfg: AlertConfig
    state: str | None = None
    max_probability: float = 0.0
    _running: RunningAggregate = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._running = RunningAggregate(self.cfg.aggregation, self.cfg.ema_alpha)

    @property
    def windows(self) -> int:
        """Window scores seen so far."""
        return len(self._running)

    @property
    def running_llr(self) -> float | None:
        """Aggregate of the window LLRs so far (kept up to date by :meth:`update`)."""
        return self._running.value

    @property
    def running_probability(self) -> float | None:
        """Running spoof probability."""
        llr = self.running_llr
        if llr is None:
            return None
        prior = self.cfg.spoof_prior
        return llr_probability(llr, prior)

    def update(self, llr: float, probability: float) -> tuple[str | None, str | None]:
        """Add a window score; return (previous state, new state); ``None`` = no state yet."""
        self._running.add(llr)
        self.max_probability = max(self.max_probability, float(probability))
        previous = self.state
        if self.windows >= self.cfg.min_windows_for_state:
            self.state = self._next_state(self.running_probability or 0.0)
        return previous, self.state

    def _next_state(self, p: float) -> str:
        c = self.cfg
        target = "bona_fide"
        if p >= c.suspicious_threshold:
            target = "suspicious"
        if p >= c.spoof_threshold and self.windows >= c.min_windows_for_spoof:
            target = "spoof"
        current = self.state
        if current is None or _LEVEL[target] >= _LEVEL[current]:
            return target
        # stepping down: only below the current state's threshold minus the hysteresis
        floor = c.spoof_threshold if current == "spoof" else c.suspicious_threshold
        if p >= floor - c.hysteresis:
            return current
        down = _STATES[_LEVEL[current] - 1]
        if down == "suspicious" and p < c.suspicious_threshold - c.hysteresis:
            return "bona_fide"
        return down
