"""PNG plots of evaluation results: DET curve, score histograms, alert operating points.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global
figure registry), so plotting works headless and leaves nothing open after saving.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from scipy.stats import norm

from nes2net_stream.errors import DataError
from nes2net_stream.evaluation.metrics import check_scores, compute_eer, det_curve

__all__ = ["plot_alert_settings", "plot_det", "plot_histograms"]

_TICKS_PERCENT = (0.01, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 90, 95, 98, 99, 99.5, 99.8,
                  99.9, 99.99)
_MAX_BINS = 100


def _save(fig: Figure, path: str | Path, dpi: float) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    try:
        fig.savefig(p, format="png", dpi=dpi)
    except OSError as exc:
        raise DataError(f"cannot write plot {p}: {exc}") from None
    finally:
        fig.clear()
    return p


def plot_det(bona: ArrayLike, spoof: ArrayLike, path: str | Path, title: str = "DET curve", *,
             figsize: tuple[float, float] = (6.0, 6.0), dpi: float = 100.0) -> Path:
    """Plot a DET curve on normal-deviate axes with the EER point marked.

    Args:
        bona: Bona fide scores (higher = more bona fide).
        spoof: Spoof scores.
        path: Output PNG file (parent folders are created).
        title: Figure title.
        figsize: Figure size in inches; the image is ``figsize * dpi`` pixels.
        dpi: Resolution in dots per inch.

    Returns:
        The path written.
    """
    frr, far, _ = det_curve(bona, spoof)
    eer, _ = compute_eer(bona, spoof)
    # the smallest non-zero rate is 1 / n: start the axes at the tick just below it
    n = max(np.size(bona), np.size(spoof))
    lo = max(t / 100 for t in _TICKS_PERCENT if t / 100 <= max(1.0 / n, 1e-4))
    hi = 0.5 if eer <= 0.4 else 1.0 - lo

    def dev(p: ArrayLike) -> np.ndarray:
        return norm.ppf(np.clip(p, lo, 1.0 - lo))

    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    ax.plot(dev(far), dev(frr), color="tab:blue", lw=1.5, label="DET")
    ax.plot(dev([lo, hi]), dev([lo, hi]), color="0.6", lw=0.8, ls="--")
    ax.plot(dev(eer), dev(eer), "o", color="tab:red", label=f"EER = {100 * eer:.2f} %")
    ticks = [t for t in _TICKS_PERCENT if lo <= t / 100 <= hi]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(dev(np.asarray(ticks) / 100), labels=[f"{t:g}" for t in ticks])
    ax.set_xlim(dev(lo), dev(hi))
    ax.set_ylim(dev(lo), dev(hi))
    ax.set_xlabel("False acceptance rate: spoof accepted (%)")
    ax.set_ylabel("False rejection rate: bona fide rejected (%)")
    ax.set_title(title)
    ax.grid(True, color="0.85", lw=0.6)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_histograms(bona: ArrayLike, spoof: ArrayLike, path: str | Path,
                    threshold: float | None = None, *, title: str = "Score distributions",
                    figsize: tuple[float, float] = (7.0, 4.0), dpi: float = 100.0) -> Path:
    """Plot overlaid, normalised histograms of bona fide and spoof scores.

    Args:
        bona: Bona fide scores.
        spoof: Spoof scores.
        path: Output PNG file (parent folders are created).
        threshold: Decision threshold drawn as a vertical line, if given.
        title: Figure title.
        figsize: Figure size in inches; the image is ``figsize * dpi`` pixels.
        dpi: Resolution in dots per inch.

    Returns:
        The path written.
    """
    b, s = check_scores(bona, spoof, soft=False)
    edges = np.histogram_bin_edges(np.concatenate((b, s)), bins="auto")
    if edges.size - 1 > _MAX_BINS:
        edges = np.histogram_bin_edges(np.concatenate((b, s)), bins=_MAX_BINS)
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    ax.hist(b, bins=edges, density=True, alpha=0.55, color="tab:green",
            label=f"bona fide (n={b.size})")
    ax.hist(s, bins=edges, density=True, alpha=0.55, color="tab:red",
            label=f"spoof (n={s.size})")
    if threshold is not None:
        ax.axvline(float(threshold), color="k", ls="--", lw=1.2,
                   label=f"threshold = {float(threshold):.4g}")
    ax.set_xlabel("CM score (higher = more bona fide)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_alert_settings(points: list[tuple[str, float, float]], path: str | Path, *,
                        title: str = "Alert settings on whole calls",
                        figsize: tuple[float, float] = (7.0, 6.0), dpi: float = 100.0) -> Path:
    """Operating points of alert settings: genuine calls alerted vs synthetic calls caught.

    Args:
        points: ``(label, share of genuine calls with any alert, share of synthetic calls that
            reached spoof)`` per setting, shares in [0, 1] (``eval-alerts``).
        path: Output PNG file (parent folders are created).
        title: Figure title.
        figsize: Figure size in inches.
        dpi: Resolution in dots per inch.
    """
    if not points:
        raise DataError("no alert settings to plot")
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot(1, 1, 1)
    # settings often share a point: number them, and name them in the legend
    for i, (label, x, y) in enumerate(points, start=1):
        ax.scatter([100 * x], [100 * y], color="#c0392b", zorder=3, label=f"{i}: {label}")
        ax.annotate(str(i), (100 * x, 100 * y), textcoords="offset points",
                    xytext=(4 + 7 * (i % 3), 3 + 5 * (i % 2)), fontsize=7)
    ax.legend(loc="lower right", fontsize=6, handlelength=0.8, framealpha=0.9)
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("genuine calls that ever raised an alert (%)")
    ax.set_ylabel("synthetic calls that reached spoof (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, dpi)
