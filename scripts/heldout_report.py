"""Tabulate `eval` runs on the held-out corpus: EER, EER per system, false alarms per language.

Usage: python scripts/heldout_report.py CORPUS NAME=EVAL_DIR [NAME=EVAL_DIR ...] [--json]

Each EVAL_DIR is an `nes2net-stream eval --out` folder scored on CORPUS (a `data
build-heldout` database). Printed per run: the pooled EER with its interval by speaker, each
spoofing system's EER against all bona fide trials, and per language the share of bona fide
trials the model's own calibration calls spoof (calibrated LLR below 0, i.e. a spoof
probability above 0.5: what the service's alert states start from).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nes2net_stream.data.protocols import database_split, read_protocol


def read_scores(path: Path) -> dict[str, float]:
    """``UTTERANCE SCORE`` lines (higher = more bona fide) as a dictionary."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = float(parts[-1])
    return out


def language_false_alarms(corpus: Path, scores: dict[str, float]) -> dict[str, dict[str, float]]:
    """Bona fide trials and the share scored below 0 (called spoof), per speaker language."""
    langs = {spk: info["lang"] for spk, info in
             json.loads((corpus / "corpus.json").read_text(encoding="utf-8"))["speakers"].items()}
    counts: dict[str, list[int]] = {}
    for trial in read_protocol(database_split(corpus, "eval")[0]):
        if trial.is_spoof or trial.utterance not in scores:
            continue
        c = counts.setdefault(langs[trial.speaker], [0, 0])
        c[0] += 1
        c[1] += scores[trial.utterance] < 0.0
    return {lang: {"trials": n, "called_spoof": round(k / n, 4)}
            for lang, (n, k) in sorted(counts.items())}


def report(corpus: Path, runs: dict[str, Path]) -> dict[str, dict]:
    """One entry per run: EER, its interval, EER per system and false alarms per language."""
    out = {}
    for name, folder in runs.items():
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        interval = metrics.get("bootstrap", {}).get("intervals", {}).get("eer", {})
        out[name] = {"model_id": metrics.get("model_id"), "mode": metrics.get("mode"),
                     "eer": metrics["metrics"]["eer"],
                     "eer_ci95": [interval.get("low"), interval.get("high")],
                     "per_system_eer": metrics["per_system_eer"],
                     "false_alarms": language_false_alarms(
                         corpus, read_scores(folder / "scores.txt"))}
    return out


def _table(result: dict[str, dict]) -> str:
    systems = sorted({s for r in result.values() for s in r["per_system_eer"]})
    langs = sorted({lang for r in result.values() for lang in r["false_alarms"]})
    head = ["run", "EER % [95 % CI]", *systems, *(f"{lang} called spoof" for lang in langs)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in result.items():
        low, high = r["eer_ci95"]
        ci = f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None else ""
        cells = [name, f"{100 * r['eer']:.2f}{ci}",
                 *(f"{100 * r['per_system_eer'].get(s, float('nan')):.1f}" for s in systems),
                 *(f"{100 * r['false_alarms'].get(lang, {}).get('called_spoof', float('nan')):.0f}"
                   " %" for lang in langs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("runs", nargs="+", metavar="NAME=EVAL_DIR")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "metrics.json").is_file():
            parser.error(f"{item!r} is not NAME=EVAL_DIR with an eval output folder")
        runs[name] = Path(folder)
    result = report(args.corpus, runs)
    print(json.dumps(result, indent=2) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
