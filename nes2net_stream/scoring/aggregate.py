"""Aggregating window scores into one running or final score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Aggregation = Literal["mean", "median", "max", "ema"]
AGGREGATIONS: tuple[str, ...] = ("mean", "median", "max", "ema")


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
