"""scripts/model_card.py: the bundled model's card, from a merged training database and a
held-out (speaker-fold) evaluation folder, as scripts/exp_all_speakers.sh writes them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from nes2net_stream.cli import main

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "nes2net_stream" / "assets" / "demo-model"


def test_card_of_a_merged_database_reports_the_held_out_folds(toy_corpus, tmp_path):
    corpus, database, held = tmp_path / "corpus", tmp_path / "db", tmp_path / "held-out"
    # a corpus with a corpus.json of three splits, and the training database: its train and
    # eval splits merged, less speaker S2
    assert main(["data", "merge", str(corpus), "--train", str(toy_corpus), "--dev",
                 str(toy_corpus), "--eval", str(toy_corpus), "--allow-shared-speakers"]) == 0
    assert main(["data", "merge", str(database), "--train", str(corpus), "--train",
                 f"{corpus}:eval", "--dev", str(corpus), "--exclude-speaker", "S2",
                 "--allow-shared-speakers"]) == 0
    # the held-out folder: the folds' pooled scores evaluated on the corpus's eval key, one
    # channel condition labelled, one fold's call-level alerts
    key = corpus / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt"
    assert main(["eval", "--model", str(BUNDLE), "--database", str(corpus), "--split", "eval",
                 "--bootstrap", "0", "--out", str(tmp_path / "fold0")]) == 0
    for name, extra in (("4s", []), ("channel-g723_1", ["--channel", "g723_1"])):
        pooled = held / f"eval-{name}" / "scores.txt"
        pooled.parent.mkdir(parents=True)
        shutil.copyfile(tmp_path / "fold0" / "scores.txt", pooled)
        assert main(["eval", "--scores", str(pooled), "--key", str(key), "--bootstrap", "50",
                     *extra, "--out", str(pooled.parent)]) == 0
    assert main(["data", "build-calls", str(corpus), str(tmp_path / "calls"), "--split",
                 "eval"]) == 0
    assert main(["eval-alerts", "--model", str(BUNDLE), "--database", str(tmp_path / "calls"),
                 "--out", str(held / "fold0" / "alerts"), "--no-progress"]) == 0
    bundle = shutil.copytree(BUNDLE, tmp_path / "bundle")
    doc = tmp_path / "card.md"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "model_card.py"), "--run", str(tmp_path / "run"),
         "--corpus", str(corpus), "--database", str(database), "--held-out", str(held),
         "--bundle", str(bundle), "--doc", str(doc)],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    card = doc.read_text()
    assert card == (bundle / "MODEL_CARD.md").read_text()
    metrics = json.loads((held / "eval-4s" / "metrics.json").read_text())["metrics"]
    assert "## Held-out estimate: two folds of the eval speakers" in card
    assert "has heard every eval speaker but S2" in card
    assert f"| 4s | {metrics['n_bonafide']} / {metrics['n_spoof']} | " \
           f"{100 * metrics['eer']:.2f} % |" in card
    assert "| S0 | ? | 4 | " in card  # per genuine speaker, from the pooled scores
    assert "| corpus eval (folds) | 12 / " in card  # what the estimate scored
    assert "| train | 16 / " in card  # S0 and S1 of train and eval: 8 + 8 bona fide
    assert "| G.723.1" in card  # the labelled channel condition
    assert "GSM 06.10." in card  # no eval-only codec in the toy corpus
    assert "| fold 0 | 1 |" not in card  # one report: no fold column
    assert "## Whole calls" in card and "S2, the speaker left out of training" in card


def test_architecture_line_names_either_front_end():
    import importlib.util

    from nes2net_stream.models.config import (
        SpeakerEncoderConfig,
        SpectralConfig,
        frontend_to_dict,
    )

    script = Path(__file__).resolve().parents[1] / "scripts" / "model_card.py"
    spec = importlib.util.spec_from_file_location("model_card", script)
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    speaker = card.frontend_summary(frontend_to_dict(SpeakerEncoderConfig(source="w.pt")))
    assert "GE2E speaker encoder (3-layer LSTM, 256 units, on 40 mel bands" in speaker
    assert "weights: w.pt), its layers mixed by learnt weights" in speaker
    one = card.frontend_summary(frontend_to_dict(SpeakerEncoderConfig(layer=2)))
    assert one.endswith("layer 2's states (the layers above it are neither computed nor stored)")
    spectral = card.frontend_summary(frontend_to_dict(SpectralConfig(kind="logspec",
                                                                     n_features=256)))
    assert spectral.startswith("spectral front-end (logspec, 256 linear-frequency bins")


def test_heldout_section_shows_this_models_runs_only(tmp_path):
    import importlib.util

    import pytest

    script = REPO / "scripts" / "model_card.py"
    spec = importlib.util.spec_from_file_location("model_card_h", script)
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    run = {"model_id": "m1", "mode": "4s", "eer": 0.195, "eer_ci95": [0.12, 0.266],
           "per_system_eer": {"H01": 0.1138, "H03": 0.25},
           "false_alarms": {"es": {"trials": 40, "called_spoof": 0.225},
                            "ru": {"trials": 40, "called_spoof": 0.0}}}
    other = {**run, "model_id": "m2", "eer": 0.3}
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"4s": run, "m2-4s": other}))
    text = card.heldout_section(report, "m1")
    assert "## New speakers, languages and synthesisers: the held-out corpus" in text
    assert ("| 4s | 19.50 % (12.0-26.6 %) | 11.38 % | 25.00 % | 22 % of 40 | 0 % of 40 |"
            in text)
    assert "30.00 %" not in text  # another model's run is not this model's figure
    assert "genuine calls with any alert" not in text  # no calls report given
    alerts = tmp_path / "alerts.json"
    share = {"calls": 7, "of": 47}
    alerts.write_text(json.dumps({"alerts": {"min_windows_for_state": 2}, "results": [{
        "settings": {}, "figures": {"false_alert": share, "false_spoof": {"calls": 1, "of": 47},
                                    "detected_spoof": {"calls": 44, "of": 90},
                                    "transient_false_alert": {"calls": 6},
                                    "time_to_alert_s": {"median": 5.3}}}]}))
    with_calls = card.heldout_section(report, "m1", alerts)
    assert with_calls.startswith(text.rstrip("\n"))
    assert "| 2 | 7 of 47 | 6 | 1 of 47 | 44 of 90 | 5.3 |" in with_calls
    assert card.heldout_section(None, "m1") == ""
    with pytest.raises(SystemExit, match="no run of m3"):
        card.heldout_section(report, "m3")


def test_loss_section_lists_each_packet_loss_run(tmp_path):
    import importlib.util

    script = REPO / "scripts" / "model_card.py"
    spec = importlib.util.spec_from_file_location("model_card_loss", script)
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    assert card.loss_section(tmp_path, {}) == ""  # no runs: no section, no blank lines
    for rate, fill, eer in ((0.1, "silence", 0.2663), (0.05, "conceal", 0.2116)):
        out = tmp_path / f"eval-loss-{fill}-{rate}"
        out.mkdir()
        (out / "metrics.json").write_text(json.dumps({
            "packet_loss": {"rate": rate, "packet_ms": 20, "fill": fill},
            "metrics": {"eer": eer, "min_dcf": 0.5, "act_dcf": 0.6}}))
    clean = {"metrics": {"eer": 0.1958, "min_dcf": 0.527, "act_dcf": 0.5617}}
    text = card.loss_section(tmp_path, clean)
    assert text.startswith("\n\nWith packets lost") and not text.endswith("\n")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| none | | 19.58 % | 0.5270 | 0.5617 |",
                        "| 5 % | conceal | 21.16 % | 0.5000 | 0.6000 |",
                        "| 10 % | silence | 26.63 % | 0.5000 | 0.6000 |"]
