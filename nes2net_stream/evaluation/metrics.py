"""Countermeasure metrics: EER, minDCF, actDCF, Cllr and minCllr.

All functions take countermeasure (CM) scores in the official ASVspoof convention: a HIGHER
score means MORE BONA FIDE. The definitions follow the ASVspoof 5 evaluation package:

* the DET curve lists, for every candidate threshold ``t``, the false rejection rate
  ``frr(t) = P(bona fide score <= t)`` and the false acceptance rate
  ``far(t) = P(spoof score > t)`` (scores at or below the threshold are rejected as spoof);
* the EER is taken at the DET point where ``frr`` and ``far`` are closest, as their mean;
* DCF = ``c_miss * (1 - p_spoof) * frr + c_fa * p_spoof * far``, normalised by
  ``min(c_miss * (1 - p_spoof), c_fa * p_spoof)`` (the cost of the better of the two
  trivial systems, so 1.0 means "no better than always accepting / always rejecting");
* actDCF uses the Bayes threshold ``-ln(beta)``, ``beta = c_miss (1 - p_spoof) / (c_fa p_spoof)``,
  on scores that are bona fide log-likelihood ratios (natural log); here a score below the
  threshold is a miss and a spoof score at or above it a false acceptance, as in the package;
* Cllr (bits) = ``0.5 * (mean log2(1 + e^-llr_bona) + mean log2(1 + e^llr_spoof))``.

Unlike the package, tied scores are never split between operating points: the DET curve has
one point per distinct score value, so the results do not depend on the order of the trials.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import isotonic_regression

from nes2net_stream.errors import ConfigError, DataError

__all__ = [
    "CostModel",
    "Metrics",
    "act_dcf",
    "check_scores",
    "cllr",
    "compute_eer",
    "det_curve",
    "det_metrics",
    "evaluate",
    "min_cllr",
    "min_dcf",
]

_LN2 = math.log(2.0)


@dataclass(frozen=True, slots=True)
class CostModel:
    """Detection cost parameters (defaults: ASVspoof 5 Track 1).

    Attributes:
        p_spoof: Prior probability of a spoofing attack.
        c_miss: Cost of rejecting a bona fide trial.
        c_fa: Cost of accepting a spoofed trial.
    """

    p_spoof: float = 0.05
    c_miss: float = 1.0
    c_fa: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 < self.p_spoof < 1.0:
            raise ConfigError(f"p_spoof must be in (0, 1), got {self.p_spoof}")
        for name in ("c_miss", "c_fa"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ConfigError(f"{name} must be a positive number, got {value}")

    @property
    def beta(self) -> float:
        """Cost-prior ratio ``c_miss (1 - p_spoof) / (c_fa p_spoof)``."""
        return self.c_miss * (1.0 - self.p_spoof) / (self.c_fa * self.p_spoof)

    @property
    def bayes_threshold(self) -> float:
        """Bayes decision threshold ``-ln(beta)`` for bona fide LLRs."""
        return -math.log(self.beta)

    @property
    def normalizer(self) -> float:
        """Cost of the best trivial system, ``min(c_miss (1 - p_spoof), c_fa p_spoof)``."""
        return min(self.c_miss * (1.0 - self.p_spoof), self.c_fa * self.p_spoof)

    def dcf(self, frr: ArrayLike, far: ArrayLike) -> NDArray[np.float64]:
        """Normalised detection cost of miss and false-acceptance rates."""
        cost = (self.c_miss * (1.0 - self.p_spoof) * np.asarray(frr, dtype=np.float64)
                + self.c_fa * self.p_spoof * np.asarray(far, dtype=np.float64))
        return cost / self.normalizer


@dataclass(frozen=True, slots=True)
class Metrics:
    """Summary of one evaluation (rates are fractions, not percent)."""

    eer: float
    eer_threshold: float
    min_dcf: float
    min_dcf_threshold: float
    act_dcf: float
    act_dcf_threshold: float
    cllr: float
    min_cllr: float
    n_bonafide: int
    n_spoof: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dictionary, ready for JSON."""
        return asdict(self)


def _as_scores(values: ArrayLike, what: str) -> NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} scores are not numbers: {exc}") from None
    if arr.size == 0:
        raise DataError(f"no {what} scores: both classes are needed")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise DataError(f"{bad} of {arr.size} {what} scores are NaN or infinite")
    return arr


def check_scores(bona: ArrayLike, spoof: ArrayLike, *, soft: bool = True
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate two score sets and return them as flat float64 arrays.

    Args:
        bona: Bona fide scores.
        spoof: Spoof scores.
        soft: Also require at least 3 distinct values (scores, not hard decisions).

    Raises:
        DataError: On an empty class, non-numeric values, NaN/inf, or (``soft``) fewer than
            3 distinct values.
    """
    b = _as_scores(bona, "bona fide")
    s = _as_scores(spoof, "spoof")
    if soft and np.unique(np.concatenate((b, s))).size < 3:
        raise DataError("fewer than 3 distinct score values: provide soft scores, "
                        "not hard decisions")
    return b, s


def _det_counts(b: NDArray[np.float64], s: NDArray[np.float64]
                ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Rejected bona fide and accepted spoof counts per threshold.

    One sort of all scores: the counts at each distinct value are the running counts of bona
    fide and spoof scores up to its last occurrence.
    """
    scores = np.concatenate((b, s))
    order = np.argsort(scores)  # ties need no order: counts are read at a value's last one
    ranked = scores[order]
    bona_up_to = np.cumsum(order < b.size, dtype=np.int64)
    last = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    values = ranked[last]
    lowest = values[0] - 1e-3
    if not lowest < values[0]:  # huge scores: 1e-3 is below the float spacing
        lowest = np.nextafter(values[0], -np.inf)
    thresholds = np.concatenate(([lowest], values))
    rejected = np.concatenate(([0], bona_up_to[last]))
    spoof_up_to = (last + 1) - bona_up_to[last]
    accepted = s.size - np.concatenate(([0], spoof_up_to))
    return rejected, accepted, thresholds


def _det(b: NDArray[np.float64], s: NDArray[np.float64]
         ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    rejected, accepted, thresholds = _det_counts(b, s)
    return rejected / b.size, accepted / s.size, thresholds


def _eer_at(rejected: NDArray[np.int64], accepted: NDArray[np.int64], n_bona: int,
            n_spoof: int) -> tuple[int, float]:
    # |frr - far| compared in exact integer arithmetic, so equal gaps tie exactly and the
    # first (lowest-threshold) one wins, whatever the rounding of the rates
    i = int(np.argmin(np.abs(rejected * n_spoof - accepted * n_bona)))
    return i, float((rejected[i] / n_bona + accepted[i] / n_spoof) / 2.0)


def det_metrics(b: NDArray[np.float64], s: NDArray[np.float64], costs: CostModel
                ) -> tuple[float, float, float, float]:
    """``(eer, eer_threshold, min_dcf, min_dcf_threshold)`` from one DET curve.

    For arrays of finite scores, both classes non-empty; used where many score sets are
    measured (the bootstrap), so the distinct-value check costs no sort of its own.

    Raises:
        DataError: With fewer than 3 distinct score values.
    """
    rejected, accepted, thresholds = _det_counts(b, s)
    if thresholds.size < 4:  # the point below all scores, then the distinct values
        raise DataError("fewer than 3 distinct score values: provide soft scores, "
                        "not hard decisions")
    i, eer = _eer_at(rejected, accepted, b.size, s.size)
    dcf = costs.dcf(rejected / b.size, accepted / s.size)
    j = int(np.argmin(dcf))
    return eer, float(thresholds[i]), float(dcf[j]), float(thresholds[j])


def det_curve(bona: ArrayLike, spoof: ArrayLike
              ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Detection error trade-off curve.

    Args:
        bona: Bona fide scores (higher = more bona fide).
        spoof: Spoof scores.

    Returns:
        ``(frr, far, thresholds)``, one entry per distinct score plus a first point below all
        scores (``frr = 0, far = 1``); ``frr`` rises and ``far`` falls along the arrays.

    Raises:
        DataError: On an empty class, NaN/inf, or fewer than 3 distinct values.
    """
    return _det(*check_scores(bona, spoof))


def _eer(b: NDArray[np.float64], s: NDArray[np.float64]) -> tuple[float, float]:
    rejected, accepted, thresholds = _det_counts(b, s)
    i, eer = _eer_at(rejected, accepted, b.size, s.size)
    return eer, float(thresholds[i])


def compute_eer(bona: ArrayLike, spoof: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold.

    Returns:
        ``(eer, threshold)``: the mean of FRR and FAR at the DET point where they are closest,
        and that point's threshold (scores at or below it are rejected).
    """
    return _eer(*check_scores(bona, spoof))


def min_dcf(bona: ArrayLike, spoof: ArrayLike, costs: CostModel | None = None
            ) -> tuple[float, float]:
    """Minimum normalised detection cost over all DET thresholds.

    Returns:
        ``(min_dcf, threshold)``; the first threshold reaching the minimum is reported.
    """
    costs = costs or CostModel()
    frr, far, thr = det_curve(bona, spoof)
    dcf = costs.dcf(frr, far)
    i = int(np.argmin(dcf))
    return float(dcf[i]), float(thr[i])


def act_dcf(bona_llr: ArrayLike, spoof_llr: ArrayLike, costs: CostModel | None = None
            ) -> tuple[float, float]:
    """Actual normalised detection cost at the Bayes threshold.

    Only meaningful when the scores are calibrated bona fide log-likelihood ratios.

    Returns:
        ``(act_dcf, threshold)`` with ``threshold = -ln(beta)``.
    """
    costs = costs or CostModel()
    return _act_dcf(*check_scores(bona_llr, spoof_llr, soft=False), costs), \
        costs.bayes_threshold


def _act_dcf(b: NDArray[np.float64], s: NDArray[np.float64], costs: CostModel) -> float:
    thr = costs.bayes_threshold
    frr = np.count_nonzero(b < thr) / b.size
    far = np.count_nonzero(s >= thr) / s.size
    return float(costs.dcf(frr, far))


def _cllr(b: NDArray[np.float64], s: NDArray[np.float64]) -> float:
    # log(1 + e^-x) as logaddexp(0, -x): exact for large |x|, no overflow
    cb = np.mean(np.logaddexp(0.0, -b))
    cs = np.mean(np.logaddexp(0.0, s))
    return float(0.5 * (cb + cs) / _LN2)


def cllr(bona_llr: ArrayLike, spoof_llr: ArrayLike) -> float:
    """Log-likelihood-ratio cost in bits (natural-log bona fide LLRs in, 0 is perfect)."""
    return _cllr(*check_scores(bona_llr, spoof_llr, soft=False))


def min_cllr(bona: ArrayLike, spoof: ArrayLike) -> float:
    """Cllr after the optimal monotonic (PAV) calibration of the scores, in bits.

    This is the discrimination part of Cllr: no calibration that preserves the score order
    can do better. Tied scores share one calibrated value.
    """
    b, s = check_scores(bona, spoof, soft=False)
    values, inverse = np.unique(np.concatenate((b, s)), return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    positives = np.bincount(inverse[: b.size], minlength=values.size).astype(np.float64)
    posterior = np.clip(isotonic_regression(positives / counts, weights=counts).x, 0.0, 1.0)
    with np.errstate(divide="ignore"):  # posteriors of 0 or 1 give infinite LLRs
        log_odds = np.log(posterior) - np.log1p(-posterior)
    llr = log_odds - math.log(b.size / s.size)
    return _cllr(llr[inverse[: b.size]], llr[inverse[b.size:]])


def evaluate(bona: ArrayLike, spoof: ArrayLike, costs: CostModel | None = None) -> Metrics:
    """All metrics of one score set (actDCF and Cllr read the scores as bona fide LLRs).

    Raises:
        DataError: On an empty class, NaN/inf, or fewer than 3 distinct values.
    """
    costs = costs or CostModel()
    b, s = check_scores(bona, spoof)
    eer, eer_thr, lowest_dcf, dcf_thr = det_metrics(b, s, costs)
    return Metrics(
        eer=eer,
        eer_threshold=eer_thr,
        min_dcf=lowest_dcf,
        min_dcf_threshold=dcf_thr,
        act_dcf=_act_dcf(b, s, costs),
        act_dcf_threshold=costs.bayes_threshold,
        cllr=_cllr(b, s),
        min_cllr=min_cllr(b, s),
        n_bonafide=int(b.size),
        n_spoof=int(s.size),
    )
