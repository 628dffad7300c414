"""Aggregating window scores into one running or final score."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

Aggregation = Literal["mean", "median", "max", "ema"]
AGGREGATIONS: tuple[str, ...] = ("mean", "median", "max", "ema")


def llr_probability(llr: float, prior: float = 0.5) -> float:
    """Spoof probability of a calibrated LLR at spoof prior ``prior``: sigmoid(llr + logit)."""
    z = llr + math.log(prior / (1.0 - prior))
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(max(z, -745.0))
    return e / (1.0 + e)


def aggregate_llrs(llrs: Sequence[float], method: Aggregation = "mean",
                   ema_alpha: float = 0.3) -> float:
    """Combine window LLRs: mean, median, max, or an exponential moving average.

    The mean of LLRs is the default: it weighs every second of speech equally and is what the
    file score and the streaming running score report.
    """
    if len(llrs) == 0:
        raise ValueError("no window scores to aggregate")
    x = np.asarray(llrs, dtype=np.float64)
    if method == "mean":
        return float(x.mean())
    if method == "median":
        return float(np.median(x))
    if method == "max":
        return float(x.max())
    if method == "ema":
        if not 0.0 < ema_alpha <= 1.0:
            raise ValueError("ema_alpha must be in (0, 1]")
        value = float(x[0])
        for v in x[1:]:
            value = ema_alpha * float(v) + (1.0 - ema_alpha) * value
        return value
    raise ValueError(f"unknown aggregation {method!r}; expected one of {AGGREGATIONS}")


class RunningAggregate:
    """:func:`aggregate_llrs` of a growing sequence, updated per value without re-reading it.

    A streaming call adds one window per hop for up to hours; recomputing the aggregate from a
    list (and, for ``ema``, a Python loop over every window) would cost time linear in the
    call's length for every window, and keeping the list memory linear in it. ``max`` and
    ``ema`` update in constant time and memory with exactly the operations of
    :func:`aggregate_llrs`; ``mean`` keeps a compensated (Neumaier) sum, equal to the batch
    mean within a few units in the last place; ``median`` keeps the values sorted (one
    insertion per value; the only form whose memory grows) and equals the batch median exactly.
    """

    def __init__(self, method: Aggregation = "mean", ema_alpha: float = 0.3):
        if method not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {method!r}; expected one of {AGGREGATIONS}")
        if method == "ema" and not 0.0 < ema_alpha <= 1.0:
            raise ValueError("ema_alpha must be in (0, 1]")
        self.method = method
        self.ema_alpha = ema_alpha
        self._n = 0
        self._sum = 0.0  # mean: running sum and its compensation term
        self._comp = 0.0
        self._sorted: list[float] = []  # median only
        self.value: float | None = None  # the aggregate so far (None before any value)

    def __len__(self) -> int:
        return self._n

    def add(self, llr: float) -> float:
        """Append one window LLR; return the aggregate of all of them."""
        v = float(llr)
        n = self._n = self._n + 1
        prev = self.value
        if self.method == "mean":
            total = self._sum + v
            if abs(self._sum) >= abs(v):
                self._comp += (self._sum - total) + v
            else:
                self._comp += (v - total) + self._sum
            self._sum = total
            value = (total + self._comp) / n
        elif self.method == "median":
            bisect.insort(self._sorted, v)
            mid = n // 2
            value = (self._sorted[mid] if n % 2
                     else (self._sorted[mid - 1] + self._sorted[mid]) / 2.0)
        elif self.method == "max":
            value = v if prev is None else max(prev, v)
        else:
            a = self.ema_alpha
            value = v if prev is None else a * v + (1.0 - a) * prev
        self.value = value
        return value
