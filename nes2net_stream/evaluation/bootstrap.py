"""Bootstrap confidence intervals for CM metrics, and paired comparisons of two systems.

Small evaluation sets give noisy metrics: with 50 bona fide trials one trial moves the EER by
a point. Trials of one speaker are not independent either (same voice, same microphone, same
recording session), so by default whole speakers are resampled (a cluster bootstrap [1]):
bona fide and spoofed trials are resampled separately, each class by its ``Trial.speaker``
(the voice of a spoofed trial), with replacement, as many clusters as the class has. Intervals
are percentile intervals of the resampled metrics.

A paired comparison scores two systems on the same resamples, so what the two score sets
share (hard speakers, easy systems) cancels out of the difference. Comparing two training
recipes needs more: one training run is one draw of the recipe (seeds alone move a small
corpus's EER by points), so :func:`compare_recipes` takes several runs (score files) per recipe
and resamples the runs of each recipe as well as the speakers, a two-stage bootstrap [1].

[1] A. C. Davison and D. V. Hinkley, *Bootstrap Methods and their Application*, Cambridge
University Press, 1997, section 3.8 (multi-stage / clustered data).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from nes2net_stream.data.protocols import Trial
from nes2net_stream.errors import ConfigError, DataError
from nes2net_stream.evaluation.metrics import (
    CostModel,
    _act_dcf,
    _cllr,
    check_scores,
    det_metrics,
)
from nes2net_stream.evaluation.scorefiles import join_with_key

__all__ = [
    "BootstrapError",
    "BootstrapResult",
    "Comparison",
    "Interval",
    "bootstrap_metrics",
    "compare_recipes",
    "compare_systems",
    "resolve_unit",
]

Unit = Literal["speaker", "trial"]
UNITS: tuple[Unit, ...] = ("speaker", "trial")
#: Accepted by :func:`resolve_unit`: ``auto`` picks speakers where the key names them.
UNIT_CHOICES: tuple[str, ...] = ("auto", *UNITS)
#: Metrics resampled; lower is better for all of them.
METRICS: tuple[str, ...] = ("eer", "min_dcf", "act_dcf", "cllr")
_MIN_CLUSTERS = 2


class BootstrapError(DataError):
    """The trials cannot be resampled (too few clusters, scores close to hard decisions)."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with its two-sided percentile interval."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    """Intervals of one score set (see :func:`bootstrap_metrics`)."""

    unit: Unit
    n_resamples: int
    level: float
    clusters: dict[str, int]
    intervals: dict[str, Interval] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"unit": self.unit, "n_resamples": self.n_resamples, "level": self.level,
                "clusters": dict(self.clusters),
                "intervals": {k: v.to_dict() for k, v in self.intervals.items()}}


@dataclass(frozen=True, slots=True)
class Comparison:
    """Paired comparison of system B against system A (see :func:`compare_systems`).

    Attributes:
        a: Intervals of system A.
        b: Intervals of system B.
        difference: Interval of ``metric(B) - metric(A)`` per metric (negative: B better).
        p_b_better: Fraction of resamples in which B's metric is lower than A's.
        runs: :func:`compare_recipes` only: each run's metrics, per side (``"a"``, ``"b"``);
            the sides' intervals are then those of the mean over their runs.
    """

    a: BootstrapResult
    b: BootstrapResult
    difference: dict[str, Interval]
    p_b_better: dict[str, float]
    runs: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = {"a": self.a.to_dict(), "b": self.b.to_dict(),
               "difference": {k: v.to_dict() for k, v in self.difference.items()},
               "p_b_better": dict(self.p_b_better)}
        if self.runs:
            out["runs"] = {side: [dict(r) for r in rows] for side, rows in self.runs.items()}
        return out


def _metric_vector(b: NDArray[np.float64], s: NDArray[np.float64],
                   costs: CostModel) -> NDArray[np.float64]:
    eer, _, min_dcf, _ = det_metrics(b, s, costs)  # raises if a resample lost soft scores
    return np.array([eer, min_dcf, _act_dcf(b, s, costs), _cllr(b, s)])


@dataclass(frozen=True, slots=True)
class _Clusters:
    """The trials of one class grouped by cluster.

    ``order[starts[k]:starts[k] + sizes[k]]`` are the indices (into the class's score vector)
    of the trials of cluster ``k``.
    """

    order: NDArray[np.intp]
    starts: NDArray[np.intp]
    sizes: NDArray[np.intp]

    @classmethod
    def of(cls, keys: list[str]) -> _Clusters:
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        sizes = np.array([len(g) for g in groups.values()], dtype=np.intp)
        order = np.fromiter((i for g in groups.values() for i in g), dtype=np.intp,
                            count=len(keys))
        return cls(order, np.cumsum(sizes) - sizes, sizes)

    def __len__(self) -> int:
        return int(self.sizes.size)

    def draw(self, rng: np.random.Generator) -> NDArray[np.intp]:
        """Indices of as many clusters as there are, drawn with replacement."""
        picked = rng.integers(len(self), size=len(self))
        if self.sizes.size == self.order.size:  # one trial per cluster
            return self.order[picked]
        sizes = self.sizes[picked]
        ends = np.cumsum(sizes)
        # position j of the output is element (j - first output slot of its cluster) of it
        offsets = np.repeat(self.starts[picked] - (ends - sizes), sizes)
        return self.order[offsets + np.arange(int(ends[-1]))]


def _clusters(trials: Sequence[Trial], unit: Unit) -> tuple[_Clusters, _Clusters]:
    """Clusters of the bona fide and the spoof trials, in ``join_with_key``'s order."""
    keys: tuple[list[str], list[str]] = ([], [])
    for t in trials:
        k = keys[int(t.is_spoof)]
        k.append(t.speaker if unit == "speaker" else str(len(k)))
    bona, spoof = _Clusters.of(keys[0]), _Clusters.of(keys[1])
    for name, cl in (("bona fide", bona), ("spoof", spoof)):
        if len(cl) < _MIN_CLUSTERS:
            raise BootstrapError(f"bootstrap by {unit} needs at least {_MIN_CLUSTERS} {unit}s "
                                 f"of {name} trials, the key has {len(cl)}"
                                 + ("; resample trials instead" if unit == "speaker" else ""))
    return bona, spoof


def resolve_unit(trials: Sequence[Trial], unit: str = "auto") -> Unit:
    """``auto``: ``speaker`` if both classes have at least two speakers, else ``trial``.

    Two-column keys (``UTTERANCE KEY``) have no speakers, so they resample trials.

    Raises:
        ConfigError: If ``unit`` is not one of :data:`UNIT_CHOICES`.
    """
    if unit not in UNIT_CHOICES:
        raise ConfigError(f"bootstrap unit must be one of {UNIT_CHOICES}, got {unit!r}")
    if unit != "auto":
        return unit  # type: ignore[return-value]
    speakers: tuple[set[str], set[str]] = (set(), set())
    for t in trials:
        speakers[int(t.is_spoof)].add(t.speaker)
    named = all(len(s - {"-"}) >= _MIN_CLUSTERS for s in speakers)
    return "speaker" if named else "trial"


def _check(n_resamples: int, level: float, unit: str) -> None:
    if unit not in UNITS:
        raise ConfigError(f"bootstrap unit must be one of {UNITS}, got {unit!r}")
    if not 10 <= n_resamples <= 1_000_000:
        raise ConfigError(f"bootstrap resamples must be 10..1000000, got {n_resamples}")
    if not 0.5 <= level < 1.0:
        raise ConfigError(f"confidence level must be in [0.5, 1), got {level}")


def _resample(score_sets: Sequence[tuple[NDArray[np.float64], NDArray[np.float64]]],
              trials: Sequence[Trial], n_resamples: int, unit: Unit, seed: int,
              statistic: Callable[[NDArray[np.float64], NDArray[np.float64]],
                                  NDArray[np.float64]],
              ) -> tuple[list[NDArray[np.float64]], dict[str, int]]:
    """Metric vectors of every score set on the same resamples: ``(n_resamples, metrics)``."""
    bona_cl, spoof_cl = _clusters(trials, unit)
    rng = np.random.default_rng(seed)
    out = [np.empty((n_resamples, len(METRICS))) for _ in score_sets]
    r = 0
    attempts = 0
    while r < n_resamples:
        attempts += 1
        if attempts > n_resamples + n_resamples // 10 + 10:  # over ~10 % degenerate
            raise BootstrapError("bootstrap: too many degenerate resamples (fewer than 3 "
                                 "distinct scores); the scores are close to hard decisions")
        ib, is_ = bona_cl.draw(rng), spoof_cl.draw(rng)
        try:
            rows = [statistic(b[ib], s[is_]) for b, s in score_sets]
        except DataError:  # e.g. one speaker drawn every time: too few distinct values
            continue
        for o, row in zip(out, rows, strict=True):
            o[r] = row
        r += 1
    return out, {"bonafide": len(bona_cl), "spoof": len(spoof_cl)}


def _interval(estimate: float, samples: NDArray[np.float64], level: float) -> Interval:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(low), float(high))


def _result(point: NDArray[np.float64], samples: NDArray[np.float64], unit: Unit,
            n_resamples: int, level: float, clusters: dict[str, int]) -> BootstrapResult:
    return BootstrapResult(unit, n_resamples, level, clusters, {
        name: _interval(point[k], samples[:, k], level) for k, name in enumerate(METRICS)})


def bootstrap_metrics(scores: Mapping[str, float], trials: Sequence[Trial], *,
                      n_resamples: int = 1000, level: float = 0.95, unit: Unit = "speaker",
                      seed: int = 0, costs: CostModel | None = None) -> BootstrapResult:
    """Percentile bootstrap intervals of EER, minDCF, actDCF and Cllr.

    Args:
        scores: Scores by utterance id (higher = more bona fide).
        trials: Key trials; every one must have a score.
        n_resamples: Number of resamples (1000 gives stable 95 % limits to about 0.5 points).
        level: Two-sided confidence level.
        unit: ``"speaker"`` resamples whole speakers per class, ``"trial"`` single trials.
        seed: Seed of the resampling, so a report can be reproduced.
        costs: Detection cost model (default: ASVspoof 5).

    Raises:
        DataError: Missing scores, degenerate scores, or fewer than two clusters per class.
        ConfigError: Invalid ``n_resamples``, ``level`` or ``unit``.
    """
    return _run([scores], trials, n_resamples, level, unit, seed, costs)[0]


def compare_systems(scores_a: Mapping[str, float], scores_b: Mapping[str, float],
                    trials: Sequence[Trial], *, n_resamples: int = 1000, level: float = 0.95,
                    unit: Unit = "speaker", seed: int = 0,
                    costs: CostModel | None = None) -> Comparison:
    """Paired bootstrap of system B against system A on the same trials.

    Both score sets are resampled with the same draws; the result gives each system's
    intervals, the interval of ``metric(B) - metric(A)`` and how often B came out lower.
    Arguments and errors as in :func:`bootstrap_metrics`.
    """
    a, b = _run([scores_a, scores_b], trials, n_resamples, level, unit, seed, costs,
                keep_samples=True)
    return _comparison(a.result, b.result, b.point - a.point, b.samples - a.samples, level)


def _comparison(a: BootstrapResult, b: BootstrapResult, point: NDArray[np.float64],
                diff: NDArray[np.float64], level: float,
                runs: dict[str, list[dict[str, float]]] | None = None) -> Comparison:
    """B against A from the point difference and the resampled differences ``B - A``."""
    return Comparison(
        a=a, b=b,
        difference={name: _interval(point[k], diff[:, k], level)
                    for k, name in enumerate(METRICS)},
        p_b_better={name: float(np.mean(diff[:, k] < 0)) for k, name in enumerate(METRICS)},
        runs=runs or {})


def compare_recipes(runs_a: Sequence[Mapping[str, float]], runs_b: Sequence[Mapping[str, float]],
                    trials: Sequence[Trial], *, n_resamples: int = 1000, level: float = 0.95,
                    unit: Unit = "speaker", seed: int = 0,
                    costs: CostModel | None = None) -> Comparison:
    """Two-stage paired bootstrap of recipe B against recipe A, several runs of each.

    Each recipe's metric is the mean over its runs (e.g. training seeds), scored on the same
    trials. Every resample draws the speakers (or trials) once for all runs, as
    :func:`compare_systems` does, and then, independently per recipe, as many of its runs as it
    has, with replacement; so the intervals hold the spread between runs as well as the
    sampling of speakers. With one run per side this is :func:`compare_systems`. With few runs
    (three) the run-level part is rough (a bootstrap of n values has (n - 1) / n of their
    variance): more runs give truer intervals. Other arguments and errors as in
    :func:`bootstrap_metrics`.

    Raises:
        ConfigError: If a side has no runs.
    """
    if not runs_a or not runs_b:
        raise ConfigError("compare_recipes needs at least one run (score set) per recipe")
    runs = _run([*runs_a, *runs_b], trials, n_resamples, level, unit, seed, costs,
                keep_samples=True)
    n_a = len(runs_a)
    sides = (runs[:n_a], runs[n_a:])
    rng = np.random.default_rng([seed, 1])  # independent of the trial draws
    means = []
    for side in sides:
        stacked = np.stack([r.samples for r in side])  # (runs, resamples, metrics)
        picks = rng.integers(len(side), size=(n_resamples, len(side)))
        means.append(stacked[picks, np.arange(n_resamples)[:, None]].mean(axis=1))
    points = [np.mean([r.point for r in side], axis=0) for side in sides]
    clusters = runs[0].result.clusters
    a, b = (_result(p, m, unit, n_resamples, level, clusters)
            for p, m in zip(points, means, strict=True))
    return _comparison(a, b, points[1] - points[0], means[1] - means[0], level, runs={
        name: [dict(zip(METRICS, map(float, r.point), strict=True)) for r in side]
        for name, side in zip(("a", "b"), sides, strict=True)})


@dataclass(frozen=True, slots=True)
class _Run:
    result: BootstrapResult
    point: NDArray[np.float64]
    samples: NDArray[np.float64]


def _run(score_maps: Sequence[Mapping[str, float]], trials: Sequence[Trial], n_resamples: int,
         level: float, unit: Unit, seed: int, costs: CostModel | None,
         keep_samples: bool = False) -> list[Any]:
    _check(n_resamples, level, unit)
    costs = costs or CostModel()
    trials = list(trials)
    sets = []
    for scores in score_maps:
        bona, spoof, _ = join_with_key(scores, trials)
        sets.append(check_scores(bona, spoof))

    def statistic(b: NDArray[np.float64], s: NDArray[np.float64]) -> NDArray[np.float64]:
        return _metric_vector(b, s, costs)

    samples, clusters = _resample(sets, trials, n_resamples, unit, seed, statistic)
    runs = []
    for (b, s), smp in zip(sets, samples, strict=True):
        point = statistic(b, s)
        result = _result(point, smp, unit, n_resamples, level, clusters)
        runs.append(_Run(result, point, smp) if keep_samples else result)
    return runs
