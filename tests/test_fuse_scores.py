"""scripts/fuse_scores.py: score-level fusion of several models' score files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nes2net_stream.evaluation.metrics import compute_eer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "fuse_scores.py"
_spec = importlib.util.spec_from_file_location("fuse_scores", SCRIPT)
fuse_scores = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuse_scores)


def write(path: Path, scores: dict[str, float]) -> Path:
    path.write_text("".join(f"{t} {s}\n" for t, s in scores.items()))
    return path


def test_weighted_mean_per_trial(tmp_path):
    a = write(tmp_path / "a.txt", {"T1": 1.0, "T2": -2.0})
    b = write(tmp_path / "b.txt", {"T2": 4.0, "T1": 3.0})  # order does not matter
    out = tmp_path / "f" / "fused.txt"
    assert fuse_scores.main([str(a), str(b), "--out", str(out)]) == 0
    assert fuse_scores.read_scores(out) == {"T1": 2.0, "T2": 1.0}
    assert fuse_scores.main([str(a), str(b), "--weights", "3", "1", "--out", str(out)]) == 0
    assert fuse_scores.read_scores(out) == pytest.approx({"T1": 1.5, "T2": -0.5})


def test_fusing_two_noisy_views_separates_better():
    """Two models whose errors are independent: their mean has a lower EER than either."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(2000), np.zeros(2000)]
    views = [{f"T{i}": float(s) for i, s in enumerate(labels * 1.5 + rng.normal(0, 1.5, 4000))}
             for _ in range(2)]
    fused = fuse_scores.fuse(views, [1.0, 1.0])

    def eer(scores):
        s = np.array([scores[f"T{i}"] for i in range(4000)])
        r = compute_eer(s[labels == 1], s[labels == 0])
        return r[0] if isinstance(r, tuple) else r

    assert eer(fused) < min(eer(v) for v in views) - 0.03


def test_errors_name_the_problem(tmp_path):
    a = write(tmp_path / "a.txt", {"T1": 1.0, "T2": 2.0})
    other = write(tmp_path / "o.txt", {"T1": 1.0, "T3": 2.0})
    bad = tmp_path / "bad.txt"
    bad.write_text("T1 nan\n")
    for args, message in [([a, other], "same trials"), ([a, bad], "not finite"),
                          ([a, a, "--weights", "1"], "one weight"),
                          ([a, a, "--weights", "0", "0"], "positive sum")]:
        proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--out",
                               str(tmp_path / "x.txt")], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr
