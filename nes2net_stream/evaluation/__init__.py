"""Evaluation of countermeasure scores: ASVspoof metrics, calibration, score files, plots.

Scores follow the official ASVspoof convention: higher = more bona fide.
"""

from nes2net_stream.evaluation.calibration import AffineCalibration, fit_affine_calibration
from nes2net_stream.evaluation.metrics import (
    CostModel,
    Metrics,
    act_dcf,
    cllr,
    compute_eer,
    det_curve,
    evaluate,
    min_cllr,
    min_dcf,
)
from nes2net_stream.evaluation.report import evaluate_score_file, format_report, per_system_eer
from nes2net_stream.evaluation.scorefiles import join_with_key, read_scores, write_scores

__all__ = [
    "AffineCalibration",
    "CostModel",
    "Metrics",
    "act_dcf",
    "cllr",
    "compute_eer",
    "det_curve",
    "evaluate",
    "evaluate_score_file",
    "fit_affine_calibration",
    "format_report",
    "join_with_key",
    "min_cllr",
    "min_dcf",
    "per_system_eer",
    "read_scores",
    "write_scores",
]
