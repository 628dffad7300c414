"""Score-level fusion: the mean of several score files' scores per trial, as one score file.

Each input is a score file as `eval` writes it (``<trial id> <score>`` per line, the score a
calibrated log-likelihood ratio); the output holds, for every trial, the (weighted) mean of its
scores, so that `compare` and `eval`'s metrics can read a fusion of models like one run. All
inputs must score the same trials (an error names the first difference).

    python scripts/fuse_scores.py A/scores.txt B/scores.txt [--weights 0.5 0.5] --out F.txt
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def read_scores(path: Path) -> dict[str, float]:
    """``{trial id: score}`` of one score file; ValueError naming the line if malformed."""
    out: dict[str, float] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            score = float(fields[1])
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{n}: expected '<trial id> <score>'") from None
        if not math.isfinite(score):
            raise ValueError(f"{path}:{n}: score is not finite")
        out[fields[0]] = score
    return out


def fuse(score_sets: list[dict[str, float]], weights: list[float]) -> dict[str, float]:
    """The weighted mean score of every trial; ValueError when the trial sets differ."""
    if len(score_sets) != len(weights) or not score_sets:
        raise ValueError("one weight per score file is needed")
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative with a positive sum")
    ids = set(score_sets[0])
    for i, scores in enumerate(score_sets[1:], 2):
        if set(scores) != ids:
            diff = sorted(ids ^ set(scores))[0]
            raise ValueError(f"score file {i} does not score the same trials as the first "
                             f"(e.g. {diff})")
    return {t: sum(w * s[t] for w, s in zip(weights, score_sets, strict=True)) / total
            for t in sorted(ids)}


def main(argv: list[str] | None = None) -> int:
    """Command line: fuse the given score files into ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scores", nargs="+", type=Path)
    ap.add_argument("--weights", nargs="+", type=float)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    weights = args.weights or [1.0] * len(args.scores)
    try:
        fused = fuse([read_scores(p) for p in args.scores], weights)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{t} {s!r}\n" for t, s in fused.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
