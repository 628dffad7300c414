"""scripts/heldout_report.py: the held-out corpus's figures from `eval` output folders."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nes2net_stream.data.protocols import Trial, write_protocol

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "heldout_report.py"
_spec = importlib.util.spec_from_file_location("heldout_report", SCRIPT)
heldout_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(heldout_report)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "heldout"
    trials = [Trial("ANA", "U1", "-", "bonafide", "gsm"),
              Trial("ANA", "U2", "-", "bonafide", "gsm"),
              Trial("IVAN", "U3", "-", "bonafide", "alaw"),
              Trial("ESPEAK-f5", "U4", "H01", "spoof", "alaw")]
    write_protocol(root / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt",
                   trials)
    (root / "ASVspoof2019_LA_eval" / "flac").mkdir(parents=True)
    (root / "corpus.json").write_text(json.dumps({"speakers": {
        "ANA": {"lang": "es"}, "IVAN": {"lang": "ru"}}}))
    return root


def eval_dir(path: Path, scores: dict[str, float], eer: float) -> Path:
    path.mkdir()
    (path / "scores.txt").write_text("".join(f"{u} {s}\n" for u, s in scores.items()))
    (path / "metrics.json").write_text(json.dumps({
        "model_id": "m", "mode": "4s", "metrics": {"eer": eer},
        "per_system_eer": {"H01": eer},
        "bootstrap": {"intervals": {"eer": {"low": eer / 2, "high": eer * 2}}}}))
    return path


def test_false_alarms_per_language_use_the_calibrated_zero(corpus, tmp_path) -> None:
    run = eval_dir(tmp_path / "run", {"U1": -0.5, "U2": 2.0, "U3": 0.1, "U4": -3.0}, 0.25)
    result = heldout_report.report(corpus, {"a": run})["a"]
    assert result["false_alarms"] == {"es": {"trials": 2, "called_spoof": 0.5},
                                      "ru": {"trials": 1, "called_spoof": 0.0}}
    assert result["eer"] == 0.25 and result["eer_ci95"] == [0.125, 0.5]
    assert result["per_system_eer"] == {"H01": 0.25}


def test_command_line_table_and_bad_arguments(corpus, tmp_path) -> None:
    run = eval_dir(tmp_path / "run", {"U1": -0.5, "U2": 2.0, "U3": 0.1, "U4": -3.0}, 0.25)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(corpus), f"v3={run}"],
                          capture_output=True, text=True, check=True)
    assert "| v3 | 25.00 [12.5, 50.0] | 25.0 | 50 % | 0 % |" in proc.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), str(corpus), str(run)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "NAME=EVAL_DIR" in bad.stderr


POOL = ROOT / "scripts" / "pool_heldout_folds.py"
_pspec = importlib.util.spec_from_file_location("pool_heldout_folds", POOL)
pool_folds = importlib.util.module_from_spec(_pspec)
_pspec.loader.exec_module(pool_folds)


def files(tmp_path: Path, languages: str, *scores: str) -> tuple[Path, ...]:
    """A corpus folder with languages.txt, and one score file per text given."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "languages.txt").write_text(languages)
    paths = [tmp_path / f"s{k}.txt" for k in range(len(scores))]
    for path, text in zip(paths, scores, strict=True):
        path.write_text(text)
    return corpus, *paths


def test_folds_are_pooled_by_language(tmp_path) -> None:
    corpus, a, b = files(tmp_path, "U1 fr\nU2 it\nU3 ca\nU4 ru\n",
                         "U1 1.0\nU2 9.0\nU3 3.0\nU4 4.0\n", "U1 9.0\nU2 2.0\nU3 5.0\nU4 9.0\n")
    out = tmp_path / "pooled" / "scores.txt"
    assert pool_folds.main([str(corpus), str(out), f"fr,ru={a}", f"it,es={b}"]) == 0
    pooled = dict(line.split() for line in out.read_text().splitlines())
    # each trial from the fold whose test languages hold its language; ca by hash
    assert pooled["U1"] == "1.0" and pooled["U2"] == "2.0" and pooled["U4"] == "4.0"
    import zlib
    assert pooled["U3"] == ("3.0" if zlib.crc32(b"U3") % 2 == 0 else "5.0")


def test_pooling_refuses_a_language_in_two_folds_and_a_missing_score(tmp_path) -> None:
    corpus, a = files(tmp_path, "U1 fr\nU2 it\n", "U1 1.0\n")
    out = tmp_path / "p.txt"
    assert pool_folds.main([str(corpus), str(out), f"fr={a}", f"fr,it={a}"]) == 2
    with pytest.raises(SystemExit, match="U2 \\(it\\) has no score in fold 2"):
        pool_folds.main([str(corpus), str(out), f"fr={a}", f"it={a}"])
