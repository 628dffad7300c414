"""Evaluate a score file against a key: metrics, per-attack EERs, plots and a text report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from nes2net_stream.data.protocols import Trial, read_protocol
from nes2net_stream.errors import ConfigError, DataError
from nes2net_stream.evaluation.metrics import CostModel, check_scores, compute_eer, evaluate
from nes2net_stream.evaluation.scorefiles import detect_layout, join_with_key, read_scores

__all__ = ["compare_score_files", "evaluate_score_file", "format_comparison", "format_report",
           "per_speaker", "per_system_eer"]


def per_system_eer(scores: Mapping[str, float], trials: Iterable[Trial]) -> dict[str, float]:
    """EER of all bona fide trials against the spoof trials of each attack system.

    Args:
        scores: Scores by utterance id (higher = more bona fide).
        trials: Key trials; the spoof system is ``Trial.system`` (e.g. ``A07``).

    Returns:
        EER (fraction) per spoof system, sorted by system name.

    Raises:
        DataError: If a key trial has no score, or there are no bona fide or spoof trials.
    """
    trials = list(trials)
    bona, spoof, _ = join_with_key(scores, trials)
    bona, _ = check_scores(bona, spoof)
    by_system: dict[str, list[float]] = {}
    for t in trials:
        if t.is_spoof:
            by_system.setdefault(t.system, []).append(scores[t.utterance])
    result: dict[str, float] = {}
    for system in sorted(by_system):
        sys_scores = np.asarray(by_system[system], dtype=np.float64)
        if np.unique(np.concatenate((bona, sys_scores))).size < 3:
            result[system] = float("nan")  # too few distinct values for a DET curve
            continue
        result[system] = compute_eer(bona, sys_scores)[0]
    return result


def per_speaker(scores: Mapping[str, float], trials: Iterable[Trial], threshold: float
                ) -> dict[str, dict[str, dict[str, float | int]]]:
    """Error rates per speaker at one threshold: who is flagged, which voices get through.

    Pooled metrics hide a detector that fails one kind of voice: a genuine speaker whose
    every call raises an alarm, or an attack voice that is never caught. Scores are compared
    with ``threshold`` (e.g. the EER threshold): a bona fide trial scoring below it is a
    false alarm, a spoof trial scoring at or above it a miss.

    Args:
        scores: Scores by utterance id (higher = more bona fide).
        trials: Key trials; the speaker is ``Trial.speaker`` (for spoofs, the voice).
        threshold: Decision threshold on the scores.

    Returns:
        ``{"bonafide": {speaker: {"trials", "mean_score", "false_alarm_rate"}}, "spoof":
        {voice: {"trials", "mean_score", "miss_rate", "system"}}}``, each sorted by speaker.
        A spoof voice used by several systems gets ``system`` ``"mixed"``.
    """
    groups: dict[tuple[bool, str], list[float]] = {}
    systems: dict[str, set[str]] = {}
    for t in trials:
        if t.utterance not in scores:
            raise DataError(f"no score for key trial {t.utterance!r}")
        groups.setdefault((t.is_spoof, t.speaker), []).append(scores[t.utterance])
        if t.is_spoof:
            systems.setdefault(t.speaker, set()).add(t.system)
    out: dict[str, dict[str, dict[str, float | int]]] = {"bonafide": {}, "spoof": {}}
    for (is_spoof, speaker), values in sorted(groups.items(), key=lambda kv: kv[0][1]):
        arr = np.asarray(values, dtype=np.float64)
        row: dict[str, Any] = {"trials": int(arr.size), "mean_score": float(arr.mean())}
        if is_spoof:
            row["miss_rate"] = float(np.count_nonzero(arr >= threshold) / arr.size)
            found = systems[speaker]
            row["system"] = next(iter(found)) if len(found) == 1 else "mixed"
            out["spoof"][speaker] = row
        else:
            row["false_alarm_rate"] = float(np.count_nonzero(arr < threshold) / arr.size)
            out["bonafide"][speaker] = row
    return out


def evaluate_score_file(score_path: str | Path, key_path: str | Path,
                        costs: CostModel | None = None,
                        plots_dir: str | Path | None = None, *,
                        bootstrap: int = 0, bootstrap_unit: str = "auto",
                        bootstrap_seed: int = 0, level: float = 0.95,
                        compare_path: str | Path | None = None,
                        require_intervals: bool = True) -> dict[str, Any]:
    """Score a CM score file against a key file.

    Args:
        score_path: Score file in the ``"2021"`` or ``"asvspoof5"`` layout (higher = more
            bona fide).
        key_path: Key or protocol file readable by
            :func:`nes2net_stream.data.protocols.read_protocol`.
        costs: Detection cost model (default: ASVspoof 5).
        plots_dir: If given, ``det.png`` and ``hist.png`` are written there.
        bootstrap: Number of bootstrap resamples for confidence intervals (0: none).
        bootstrap_unit: ``auto``, ``speaker`` or ``trial``
            (:func:`~nes2net_stream.evaluation.bootstrap.resolve_unit`).
        bootstrap_seed: Seed of the resampling.
        level: Two-sided confidence level of the intervals.
        compare_path: A second score file on the same key: adds a paired bootstrap of it
            (system B) against ``score_path`` (system A); needs ``bootstrap``.
        require_intervals: If False, trials that cannot be resampled (no ``compare_path``)
            give a report without intervals and the reason in ``bootstrap_skipped``.

    Returns:
        A JSON-ready dictionary with ``metrics`` (see :class:`Metrics`), ``costs``,
        ``per_system_eer``, ``per_speaker`` (:func:`per_speaker` at the EER threshold),
        ``score_file``, ``key_file``, ``layout``, ``extra_scores`` (ids not
        in the key, ignored) and ``plots`` (paths, empty without ``plots_dir``); with
        ``bootstrap``, also ``bootstrap`` (intervals) and, with ``compare_path``,
        ``comparison``.

    Raises:
        DataError: On unreadable files, missing scores or degenerate scores.
        ConfigError: On invalid bootstrap settings, or ``compare_path`` without them.
    """
    if compare_path is not None and not bootstrap:
        raise ConfigError("comparing two score files needs bootstrap resamples (> 0)")
    costs = costs or CostModel()
    scores = read_scores(score_path)
    trials = read_protocol(key_path)
    bona, spoof, n_extra = join_with_key(scores, trials)
    metrics = evaluate(bona, spoof, costs)
    plots: dict[str, str] = {}
    if plots_dir is not None:
        from nes2net_stream.evaluation.plots import plot_det, plot_histograms  # matplotlib

        out = Path(plots_dir)
        if out.exists() and not out.is_dir():
            raise DataError(f"plots folder is a file: {out}")
        plots["det"] = str(plot_det(bona, spoof, out / "det.png",
                                    title=f"DET: {Path(score_path).name}"))
        plots["hist"] = str(plot_histograms(bona, spoof, out / "hist.png",
                                            threshold=metrics.eer_threshold,
                                            title=f"Scores: {Path(score_path).name}"))
    report = {
        "score_file": str(score_path),
        "key_file": str(key_path),
        "layout": detect_layout(score_path),
        "metrics": metrics.to_dict(),
        "costs": asdict(costs),
        "per_system_eer": per_system_eer(scores, trials),
        "per_speaker": per_speaker(scores, trials, metrics.eer_threshold),
        "extra_scores": n_extra,
        "plots": plots,
    }
    if bootstrap:
        from nes2net_stream.evaluation.bootstrap import BootstrapError

        try:
            report.update(_bootstrap(scores, trials, costs, bootstrap, bootstrap_unit,
                                     bootstrap_seed, level, compare_path))
        except BootstrapError as exc:
            if require_intervals or compare_path is not None:
                raise
            report["bootstrap_skipped"] = str(exc)
    return report


def _bootstrap(scores: Mapping[str, float], trials: list[Trial], costs: CostModel, n: int,
               unit: str, seed: int, level: float,
               compare_path: str | Path | None) -> dict[str, Any]:
    from nes2net_stream.evaluation.bootstrap import (
        bootstrap_metrics,
        compare_systems,
        resolve_unit,
    )

    kwargs = {"n_resamples": n, "level": level, "unit": resolve_unit(trials, unit),
              "seed": seed, "costs": costs}
    if compare_path is None:
        return {"bootstrap": bootstrap_metrics(scores, trials, **kwargs).to_dict()}
    comparison = compare_systems(scores, read_scores(compare_path), trials, **kwargs)
    return {"bootstrap": comparison.a.to_dict(),
            "comparison": {"score_file": str(compare_path), **comparison.to_dict()}}


def format_report(metrics: Mapping[str, Any]) -> str:
    """Short human-readable table of an evaluation.

    Args:
        metrics: The dictionary of :func:`evaluate_score_file` or ``Metrics.to_dict()``.

    Returns:
        Multi-line text without a trailing newline.

    Raises:
        DataError: If a required metric is missing.
    """
    m = metrics.get("metrics", metrics)
    try:
        lines = [
            f"trials      {m['n_bonafide']} bona fide, {m['n_spoof']} spoof",
            f"EER         {100 * m['eer']:7.3f} %   (threshold {m['eer_threshold']:.6g})",
            f"minDCF      {m['min_dcf']:9.4f}   (threshold {m['min_dcf_threshold']:.6g})",
            f"actDCF      {m['act_dcf']:9.4f}   (threshold {m['act_dcf_threshold']:.6g})",
            f"Cllr        {m['cllr']:9.4f} bits",
        ]
        if "min_cllr" in m:
            lines.append(f"minCllr     {m['min_cllr']:9.4f} bits")
    except KeyError as exc:
        raise DataError(f"report: missing metric {exc.args[0]!r}") from None
    costs = metrics.get("costs")
    if costs:
        lines.append(f"costs       Pspoof={costs['p_spoof']:g}, Cmiss={costs['c_miss']:g}, "
                     f"Cfa={costs['c_fa']:g}")
    systems = metrics.get("per_system_eer") or {}
    if systems:
        lines.append("EER per attack: " + ", ".join(
            f"{k} {100 * v:.2f} %" for k, v in systems.items()))
    lines.extend(_format_speakers(metrics.get("per_speaker") or {}))
    lines.extend(_format_bootstrap(metrics))
    if metrics.get("extra_scores"):
        lines.append(f"note        {metrics['extra_scores']} scores not in the key were ignored")
    return "\n".join(lines)


def _format_speakers(per: Mapping[str, Mapping[str, Mapping[str, Any]]], most: int = 5
                     ) -> list[str]:
    """The genuine speakers most often flagged and the voices most often missed."""
    lines = []
    for kind, rate, label in (("bonafide", "false_alarm_rate", "flagged genuine speakers"),
                              ("spoof", "miss_rate", "missed spoof voices")):
        rows = [(r[rate], name, r["trials"]) for name, r in per.get(kind, {}).items()
                if r[rate] > 0]
        if rows:
            rows.sort(key=lambda r: (-r[0], r[1]))
            shown = ", ".join(f"{name} {100 * x:.0f} % of {n}" for x, name, n in rows[:most])
            more = f" (+{len(rows) - most} more)" if len(rows) > most else ""
            lines.append(f"at EER threshold, {label}: {shown}{more}")
    return lines


# metric, label, scale, unit (EER in percent, two decimals; the costs and Cllr, three)
_LABELS = (("eer", "EER", 100.0, " %"), ("min_dcf", "minDCF", 1.0, ""),
           ("act_dcf", "actDCF", 1.0, ""), ("cllr", "Cllr", 1.0, ""))


def _num(value: float, unit: str, sign: str = "") -> str:
    return f"{value:{sign}.{2 if unit else 3}f}"


def _format_bootstrap(report: Mapping[str, Any]) -> list[str]:
    boot = report.get("bootstrap")
    if not boot:
        return []
    clusters = boot["clusters"]
    level = f"{100 * boot['level']:g} %"
    lines = [f"{level} CI     by {boot['unit']} ({clusters['bonafide']} bona fide / "
             f"{clusters['spoof']} spoof clusters, {boot['n_resamples']} resamples): "
             + _ranges(boot["intervals"])]
    comp = report.get("comparison")
    if comp:
        lines.append(f"vs B        {comp['score_file']}: "
                     + _ranges(comp["b"]["intervals"]))
        lines.append(_difference_line(comp))
    return lines


def _ranges(intervals: Mapping[str, Mapping[str, float]]) -> str:
    return ", ".join(f"{label} {_num(scale * intervals[k]['low'], unit)}-"
                     f"{_num(scale * intervals[k]['high'], unit)}{unit}"
                     for k, label, scale, unit in _LABELS)


def compare_score_files(paths_a: list[str | Path], paths_b: list[str | Path],
                        key_path: str | Path, *, bootstrap: int = 1000,
                        bootstrap_unit: str = "auto", bootstrap_seed: int = 0,
                        level: float = 0.95, costs: CostModel | None = None) -> dict[str, Any]:
    """Recipe B against recipe A, each given as score files of several runs (e.g. seeds).

    See :func:`~nes2net_stream.evaluation.bootstrap.compare_recipes`. Returns a JSON-ready
    dictionary: the files, the key, the costs and the comparison.

    Raises:
        DataError: Unreadable files, missing scores, or trials that cannot be resampled.
        ConfigError: Invalid bootstrap settings or an empty side.
    """
    from nes2net_stream.evaluation.bootstrap import compare_recipes, resolve_unit

    costs = costs or CostModel()
    trials = read_protocol(key_path)
    comparison = compare_recipes(
        [read_scores(p) for p in paths_a], [read_scores(p) for p in paths_b], trials,
        n_resamples=bootstrap, level=level, unit=resolve_unit(trials, bootstrap_unit),
        seed=bootstrap_seed, costs=costs)
    return {"key": str(key_path), "score_files": {"a": [str(p) for p in paths_a],
                                                  "b": [str(p) for p in paths_b]},
            "costs": asdict(costs), **comparison.to_dict()}


def format_comparison(report: Mapping[str, Any]) -> str:
    """Short human-readable form of :func:`compare_score_files`' result."""
    a = report["a"]
    clusters = a["clusters"]
    lines = [f"runs        A {len(report['runs']['a'])}, B {len(report['runs']['b'])}; "
             f"{100 * a['level']:g} % CI by {a['unit']} ({clusters['bonafide']} bona fide / "
             f"{clusters['spoof']} spoof clusters) and by run, {a['n_resamples']} resamples"]
    for side in ("a", "b"):
        lines.append(f"{side.upper()} per run   " + ", ".join(
            f"{label} " + " / ".join(_num(scale * r[k], unit) for r in report["runs"][side])
            + unit for k, label, scale, unit in _LABELS))
    for side in ("a", "b"):
        iv = report[side]["intervals"]
        lines.append(f"{side.upper()} mean      " + ", ".join(
            f"{label} {_num(scale * iv[k]['estimate'], unit)}{unit} "
            f"[{_num(scale * iv[k]['low'], unit)}, {_num(scale * iv[k]['high'], unit)}]"
            for k, label, scale, unit in _LABELS))
    lines.append(_difference_line(report))
    return "\n".join(lines)


def _difference_line(comp: Mapping[str, Any]) -> str:
    diff = comp["difference"]
    return "B - A       " + ", ".join(
        f"{label} {_num(scale * diff[k]['estimate'], unit, '+')}{unit} "
        f"[{_num(scale * diff[k]['low'], unit, '+')}, "
        f"{_num(scale * diff[k]['high'], unit, '+')}] "
        f"(B lower in {100 * comp['p_b_better'][k]:.0f} % of resamples)"
        for k, label, scale, unit in _LABELS)

