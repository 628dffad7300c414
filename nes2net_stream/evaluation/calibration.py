"""Affine score calibration to log-likelihood ratios by prior-weighted logistic regression.

The map ``llr = scale * score + offset`` is fitted as in Brümmer's BOSARIS toolkit: minimise
the prior-weighted cross-entropy

    C(a, b) = prior * mean_pos softplus(-(a s + b + logit(prior)))
            + (1 - prior) * mean_neg softplus(a s + b + logit(prior)),

where ``softplus(x) = ln(1 + e^x)``. Each class is weighted so that the effective prior is
``prior`` whatever the class counts, and ``logit(prior)`` is added inside the loss so that
``a s + b`` itself is a log-likelihood ratio (natural log) of the positive class, valid for
any prior. The fit runs on standardised scores for conditioning (L-BFGS, analytic gradient).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import expit

from nes2net_stream.errors import DataError

__all__ = ["AffineCalibration", "fit_affine_calibration"]


@dataclass(frozen=True, slots=True)
class AffineCalibration:
    """Affine map from raw scores to log-likelihood ratios of the positive class.

    Attributes:
        scale: Multiplier of the raw score.
        offset: Added after scaling.
        prior: Effective positive-class prior the map was fitted for.
        n_positive: Number of positive training scores.
        n_negative: Number of negative training scores.
    """

    scale: float
    offset: float
    prior: float = 0.5
    n_positive: int = 0
    n_negative: int = 0

    @overload
    def apply(self, x: float) -> float: ...

    @overload
    def apply(self, x: ArrayLike) -> NDArray[np.float64]: ...

    def apply(self, x: ArrayLike) -> float | NDArray[np.float64]:
        """Map raw scores to LLRs; a scalar in gives a float out."""
        arr = np.asarray(x, dtype=np.float64)
        out = self.scale * arr + self.offset
        return float(out) if out.ndim == 0 else out

    def to_dict(self) -> dict[str, float | int]:
        """Plain dictionary, ready for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AffineCalibration:
        """Rebuild from :meth:`to_dict` output, validating every field.

        Raises:
            DataError: On a missing key or a value of the wrong type or range (names the key).
        """
        if not isinstance(data, Mapping):
            raise DataError(f"calibration must be a mapping, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for key in ("scale", "offset", "prior"):
            if key not in data:
                raise DataError(f"calibration: missing key {key!r}")
            v = data[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise DataError(f"calibration: {key!r} must be a finite number, got {v!r}")
            values[key] = float(v)
        if not 0.0 < values["prior"] < 1.0:
            raise DataError(f"calibration: 'prior' must be in (0, 1), got {values['prior']}")
        for key in ("n_positive", "n_negative"):
            v = data.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise DataError(f"calibration: {key!r} must be a non-negative integer, "
                                f"got {v!r}")
            values[key] = v
        return cls(**values)


def _objective(params: NDArray[np.float64], z: NDArray[np.float64], sign: NDArray[np.float64],
               weight: NDArray[np.float64], shift: float, l2: float
               ) -> tuple[float, NDArray[np.float64]]:
    a, b = params
    # margin m = sign * (a z + b + shift); loss softplus(-m) = logaddexp(0, -m)
    m = sign * (a * z + b + shift)
    loss = float(np.dot(weight, np.logaddexp(0.0, -m))) + 0.5 * l2 * a * a
    g = -weight * sign * expit(-m)  # d loss / d (a z + b)
    return loss, np.array([float(np.dot(g, z)) + l2 * a, float(g.sum())])


def fit_affine_calibration(scores: ArrayLike, labels: ArrayLike, prior: float = 0.5, *,
                           l2: float = 0.0) -> AffineCalibration:
    """Fit ``llr = scale * score + offset`` by prior-weighted logistic regression.

    Args:
        scores: Raw scores, higher meaning more positive.
        labels: 1 for the positive class, 0 for the negative class (bool also accepted).
        prior: Effective prior of the positive class used to weight the two classes; the
            result is an LLR, so it can be used with any operating prior.
        l2: Optional ridge penalty on the standardised scale; keeps the map finite when the
            training scores are perfectly separable (0 = plain logistic regression).

    Returns:
        The fitted calibration.

    Raises:
        DataError: On mismatched lengths, labels other than 0/1, NaN/inf scores, an empty
            class, or a prior outside (0, 1).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.size != y.size:
        raise DataError(f"calibration: {s.size} scores but {y.size} labels")
    if not 0.0 < prior < 1.0:
        raise DataError(f"calibration: prior must be in (0, 1), got {prior}")
    if not (math.isfinite(l2) and l2 >= 0.0):
        raise DataError(f"calibration: l2 must be a non-negative number, got {l2}")
    if y.size and not np.all((y == 0) | (y == 1)):
        raise DataError("calibration: labels must be 0 (negative) or 1 (positive)")
    bad = int(np.count_nonzero(~np.isfinite(s)))
    if bad:
        raise DataError(f"calibration: {bad} of {s.size} scores are NaN or infinite")
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"calibration needs both classes, got {n_pos} positive and "
                        f"{n_neg} negative scores")
    mu = float(s.mean())
    sd = float(s.std()) or 1.0
    z = (s - mu) / sd
    sign = np.where(pos, 1.0, -1.0)
    weight = np.where(pos, prior / n_pos, (1.0 - prior) / n_neg)
    shift = math.log(prior) - math.log1p(-prior)
    result = minimize(_objective, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                      args=(z, sign, weight, shift, l2),
                      options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-14})
    a, b = (float(v) for v in result.x)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise DataError("calibration did not converge (non-finite parameters)")
    scale = a / sd
    return AffineCalibration(scale=scale, offset=b - scale * mu, prior=float(prior),
                             n_positive=n_pos, n_negative=n_neg)
