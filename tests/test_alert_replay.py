"""Call-level alert evaluation: replaying window scores through the service's alert policy."""

import json

import pytest
import soundfile as sf
from click.testing import CliRunner

from nes2net_stream.bundle import load_model
from nes2net_stream.cli import cli, main
from nes2net_stream.client import stream_file
from nes2net_stream.data.calls import build_calls, plan_calls
from nes2net_stream.data.protocols import Trial, read_protocol, write_protocol
from nes2net_stream.demo import sample_path
from nes2net_stream.errors import AudioError, ConfigError, DataError
from nes2net_stream.evaluation.alert_replay import (
    CallWindows,
    calls_from_scores,
    expand_grid,
    parse_vary,
    recalibrate,
    replay,
    speaker_interval,
    summarise,
    wilson,
)
from nes2net_stream.evaluation.metrics import compute_eer
from nes2net_stream.models.detector import Calibration
from nes2net_stream.scoring.files import score_file
from nes2net_stream.service.policy import AlertConfig


def call(call_id, spoof, llrs, hop=1.0):
    return CallWindows(call_id=call_id, is_spoof=spoof, llr=tuple(llrs),
                       end_s=tuple(4.0 + hop * i for i in range(len(llrs))))


def test_figures_count_what_the_state_events_would_have_said():
    cfg = AlertConfig(min_windows_for_state=1)
    calls = [
        call("g-clean", False, [-3, -2, -3]),
        call("g-transient", False, [1.0, -4, -4, -4]),  # suspicious at 4 s, back to bona fide
        call("g-false-spoof", False, [3, 3, 3]),  # spoof at 5 s (second window)
        call("s-caught", True, [3, 3, 3]),
        call("s-late", True, [-1, 0.5, 4, 4]),  # suspicious at 6 s, spoof at 7 s
        call("s-missed", True, [-3, -3]),
        call("s-short", True, []),  # too little speech for a window
    ]
    f = summarise([replay(c, cfg) for c in calls])
    assert (f["bonafide_calls"], f["spoof_calls"]) == (3, 4)
    assert f["false_alert"]["calls"] == 2 and f["false_alert"]["rate"] == pytest.approx(0.6667)
    assert f["transient_false_alert"]["calls"] == 1
    assert f["false_spoof"]["calls"] == 1 and f["false_final"]["calls"] == 1
    assert f["detected_spoof"]["calls"] == 2 and f["final_spoof"]["calls"] == 2
    assert f["detected_alert"]["calls"] == 2
    assert f["no_state"] == {"bonafide": 0, "spoof": 1}
    assert f["time_to_alert_s"]["median"] == pytest.approx(5.0)  # 4 s and 6 s
    assert f["time_to_spoof_s"]["median"] == pytest.approx(6.0)  # 5 s and 7 s
    # threshold-free: the EER of the final running scores (mean LLRs; a call without windows
    # has none), in the CM convention (higher = bona fide)
    means = {c.call_id: -sum(c.llr) / len(c.llr) for c in calls if c.llr}
    bona = [means[k] for k in ("g-clean", "g-transient", "g-false-spoof")]
    spoof = [means[k] for k in ("s-caught", "s-late", "s-missed")]
    assert f["call_eer"] == round(compute_eer(bona, spoof)[0], 4)
    # with two windows before any state, the transient opening alert disappears
    g = summarise([replay(c, AlertConfig(min_windows_for_state=2)) for c in calls])
    assert g["false_alert"]["calls"] == 1 and g["transient_false_alert"]["calls"] == 0
    assert g["detected_spoof"]["calls"] == 2
    out = replay(calls[1], cfg).to_dict()
    assert out["state_changes"] == 1 and out["final_state"] == "bona_fide"
    assert out["first_alert_s"] == 4.0 and out["first_spoof_s"] is None


def test_wilson_intervals_match_the_textbook_values():
    assert wilson(0, 10) == (0.0, 0.2775)
    assert wilson(5, 10) == (0.2366, 0.7634)
    assert wilson(0, 0) is None


def test_shares_get_intervals_resampling_whole_speakers():
    # speaker A: 4 calls, all alerted; B and C: 2 calls each, none
    flags = [("A", True)] * 4 + [("B", False)] * 2 + [("C", False)] * 2
    lo, hi = speaker_interval(flags)
    assert lo == 0.0 and hi == 1.0  # drawing only A, or only B and C, happens
    assert speaker_interval(flags) == (lo, hi)  # deterministic
    assert speaker_interval([("A", True)] * 3 + [("B", True)]) == (1.0, 1.0)
    assert speaker_interval([("A", True), ("A", False)]) is None  # one speaker: no clusters
    # wider than Wilson's, which takes the 8 calls as independent
    assert wilson(4, 8)[1] - wilson(4, 8)[0] < hi - lo
    calls = [CallWindows(f"c{i}", False, (4.0, 5.0), (3.0, 3.0), speaker=spk)
             for i, spk in enumerate("AABBC")]
    f = summarise([replay(c, AlertConfig()) for c in calls])
    assert f["false_alert"]["ci95_method"] == "speaker bootstrap"
    assert f["false_alert"]["ci95"] == (1.0, 1.0) and f["detected_spoof"]["of"] == 0
    assert f["detected_spoof"]["ci95"] is None and f["detected_spoof"]["ci95_method"] == "wilson"


def test_grid_options_parse_expand_and_fail_naming_the_key():
    grid = parse_vary(["min-windows-for-state=1,2,3", "spoof_threshold=0.8,0.9"])
    assert grid == {"min_windows_for_state": [1, 2, 3], "spoof_threshold": [0.8, 0.9]}
    combos = expand_grid(AlertConfig(), grid)
    assert len(combos) == 6
    assert combos[-1][0] == {"min_windows_for_state": 3, "spoof_threshold": 0.9}
    assert combos[-1][1].min_windows_for_state == 3 and combos[-1][1].spoof_threshold == 0.9
    assert expand_grid(AlertConfig(), {}) == [({}, AlertConfig())]
    with pytest.raises(ConfigError, match="unknown key 'thresholds'"):
        parse_vary(["thresholds=1"])
    with pytest.raises(ConfigError, match="min_windows_for_state: values must be int"):
        parse_vary(["min_windows_for_state=two"])
    with pytest.raises(ConfigError, match="KEY=V1"):
        parse_vary(["hysteresis"])
    with pytest.raises(ConfigError, match="hysteresis"):
        expand_grid(AlertConfig(), {"hysteresis": [0.6]})


def test_score_lines_pair_with_their_trials_by_file_name():
    trials = [Trial("spk", "CALL_1", "-", "bonafide"), Trial("tts", "CALL_2", "A01", "spoof")]
    lines = [{"file": "/x/CALL_2.flac", "mode": "windows",
              "windows": [{"end_s": 4.2, "llr": 1.5}]},
             {"file": "CALL_1.wav", "mode": "windows", "windows": []}]
    calls = calls_from_scores(lines, trials)
    assert [(c.call_id, c.is_spoof, c.llr) for c in calls] == [
        ("CALL_1", False, ()), ("CALL_2", True, (1.5,))]
    with pytest.raises(DataError, match="no score line for call 'CALL_2'"):
        calls_from_scores(lines[1:], trials)
    with pytest.raises(DataError, match="mode '4s'"):
        calls_from_scores([{**lines[0], "mode": "4s"}, lines[1]], trials)
    with pytest.raises(DataError, match="without a numeric 'end_s'"):
        calls_from_scores([{**lines[0], "windows": [{"end_s": 4.2}]}, lines[1]], trials)
    with pytest.raises(DataError, match="numeric 'raw'"):
        recalibrate(lines, Calibration(fitted=True))
    with pytest.raises(DataError, match="failed to score: bad file"):
        calls_from_scores([lines[0], {"file": "CALL_1.wav", "error": "bad file"}], trials)


def test_calls_join_one_speakers_utterances_and_never_share_one():
    t = [Trial("A", f"a{i}", "-", "bonafide") for i in range(5)]
    t += [Trial("B", f"b{i}", "A01", "spoof") for i in range(2)]
    t += [Trial("C", "c0", "-", "bonafide")]
    durations = {**{f"a{i}": 5.0 for i in range(5)}, "b0": 5.0, "b1": 2.0, "c0": 3.0}
    plans, left_out = plan_calls(t, durations, call_s=10.0, min_call_s=6.0, split="eval")
    members = [p.utterances for p in plans]
    # a0+a1, a2+a3 (+ a4: its 5 s remainder is below 6 s); b0+b1 reach 7 s; c0 is left out
    assert members == [("a0", "a1"), ("a2", "a3", "a4"), ("b0", "b1")]
    assert left_out == 1
    assert [p.trial.key for p in plans] == ["bonafide", "bonafide", "spoof"]
    assert [p.trial.utterance for p in plans] == ["CALL_E_00001", "CALL_E_00002",
                                                  "CALL_E_00003"]
    with pytest.raises(DataError, match="min_call_s"):
        plan_calls(t, durations, call_s=5.0, min_call_s=6.0, split="eval")


@pytest.fixture
def sample_database(tmp_path):
    """A small database of five-second utterances cut from the two demo calls."""
    root = tmp_path / "db"
    flac = root / "ASVspoof2019_LA_eval" / "flac"
    flac.mkdir(parents=True)
    trials = []
    for name, key, system in (("human_call", "bonafide", "-"),
                              ("synthetic_call", "spoof", "A04")):
        x, rate = sf.read(sample_path(f"{name}.wav"), dtype="float32")
        for i in range(3):
            utt = f"{name}_{i}"
            sf.write(flac / f"{utt}.flac", x[i * 6 * rate:(i * 6 + 6) * rate], rate)
            trials.append(Trial(name.upper(), utt, system, key))
    write_protocol(root / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt",
                   trials)
    (root / "LICENSES.md").write_text("demo samples\n")
    return root


def test_build_calls_writes_a_database_the_protocol_reader_reads(sample_database, tmp_path):
    out = tmp_path / "calls"
    report = build_calls(sample_database, out, call_s=15.0, min_call_s=5.0, gap_s=0.25)
    assert (report.calls, report.bonafide, report.spoof) == (2, 1, 1)
    trials = read_protocol(out / "ASVspoof2019_LA_cm_protocols"
                           / "ASVspoof2019.LA.cm.eval.trl.txt")
    assert [t.key for t in trials] == ["bonafide", "spoof"]
    x, rate = sf.read(out / "ASVspoof2019_LA_eval" / "flac" / f"{trials[0].utterance}.flac")
    assert rate == 16000 and x.shape[0] == pytest.approx(18.5 * 16000, abs=2)
    manifest = json.loads((out / "calls.json").read_text())
    assert manifest["members"][trials[1].utterance] == [f"synthetic_call_{i}" for i in range(3)]
    assert (out / "LICENSES.md").read_text() == "demo samples\n"
    with pytest.raises(DataError, match="empty output folder"):
        build_calls(sample_database, out)


def test_eval_alerts_scores_calls_once_and_replays_settings(sample_database, tmp_path, capsys):
    runner = CliRunner()
    calls, out = tmp_path / "calls", tmp_path / "alerts"
    got = runner.invoke(cli, ["data", "build-calls", str(sample_database), str(calls),
                              "--call-s", "15", "--min-call-s", "5"])
    assert got.exit_code == 0, got.output
    assert "2 calls (1 bona fide, 1 spoof" in got.output
    args = ["eval-alerts", "--database", str(calls), "--model", "builtin:demo",
            "--vary", "min_windows_for_state=1,2", "--no-progress"]
    got = runner.invoke(cli, [*args, "--out", str(out), "--json"])
    assert got.exit_code == 0, got.output
    scored = json.loads(got.output)
    assert [r["min_windows_for_state"] for r in scored] == [1, 2]
    assert scored[0]["call_eer"] is None  # two calls: too few scores for an EER
    for r in scored:  # the bundled model catches the synthetic call and clears the human one
        assert r["final_spoof"]["rate"] == 1.0 and r["false_final"]["rate"] == 0.0
        assert r["time_to_spoof_s"]["median"] >= 4.0
    report = json.loads((out / "alerts.json").read_text())
    assert (out / "alerts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # operating points
    assert report["alerts"]["min_windows_for_state"] == 2  # config.toml's value, then varied
    assert len(report["results"][0]["calls"]) == 2
    lines = (out / "scores.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(s)["windows"] for s in lines)
    # replaying the saved scores gives the same figures without a model
    again = runner.invoke(cli, ["eval-alerts", "--database", str(calls), "--scores",
                                str(out / "scores.jsonl"), "--vary",
                                "min_windows_for_state=1,2", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output) == scored
    table = runner.invoke(cli, ["eval-alerts", "--database", str(calls), "--scores",
                                str(out / "scores.jsonl")])
    assert table.exit_code == 0 and "genuine: any alert" in table.output
    assert "(1 genuine and 1 synthetic calls" in table.output
    code = main([*args[:3], "--scores", str(out / "scores.jsonl"), "--vary", "nope=1"])
    assert code == 2 and "unknown key 'nope'" in capsys.readouterr().err


def test_eval_alerts_through_a_codec(sample_database, tmp_path, capsys):
    """--channel passes every call through a codec before it is cut and scored."""
    from nes2net_stream.audio.codecs import available_codecs

    calls = tmp_path / "calls"
    build_calls(sample_database, calls, call_s=15.0, min_call_s=5.0)
    codec = "amr_nb:4750" if "amr_nb" in available_codecs() else "alaw"
    base = ["eval-alerts", "--database", str(calls), "--model", "builtin:demo",
            "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "clean")]) == 0
    assert main([*base, "--channel", codec, "--out", str(tmp_path / "coded")]) == 0
    capsys.readouterr()
    clean, coded = (json.loads((tmp_path / d / "alerts.json").read_text())
                    for d in ("clean", "coded"))
    assert clean["channel"] is None and coded["channel"] == codec
    llrs = [[w["llr"] for w in json.loads(s)["windows"]]
            for d in ("clean", "coded")
            for s in (tmp_path / d / "scores.jsonl").read_text().splitlines()]
    assert llrs[:2] != llrs[2:]  # the codec changed the scores
    code = main([*base[:3], "--scores", str(tmp_path / "clean" / "scores.jsonl"),
                 "--channel", "alaw"])
    assert code == 2 and "--channel applies when scoring" in capsys.readouterr().err
    with pytest.raises(AudioError, match="mode 'windows' only"):
        score_file(load_model("builtin:demo"), sample_path("human_call.wav"), mode="4s",
                   transmit=lambda x, r: x)


def test_eval_alerts_replays_under_another_calibration(sample_database, tmp_path, capsys):
    calls, out = tmp_path / "calls", tmp_path / "alerts"
    build_calls(sample_database, calls, call_s=15.0, min_call_s=5.0)
    assert main(["eval-alerts", "--database", str(calls), "--model", "builtin:demo",
                 "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    figures = {}
    for offset in (-20.0, 20.0):  # everything genuine, then everything synthetic
        cal = tmp_path / f"cal{offset:+.0f}.json"
        cal.write_text(json.dumps({"scale": 1.0, "offset": offset, "fitted": True}))
        assert main(["eval-alerts", "--database", str(calls), "--scores",
                     str(out / "scores.jsonl"), "--calibration", str(cal), "--json"]) == 0
        figures[offset] = json.loads(capsys.readouterr().out)[0]
    assert figures[-20.0]["false_alert"]["calls"] == figures[-20.0]["detected_alert"]["calls"] == 0
    assert figures[20.0]["false_spoof"]["rate"] == figures[20.0]["final_spoof"]["rate"] == 1.0


def test_eval_alerts_scores_one_side_of_stereo_call_recordings(tmp_path, capsys):
    """Stereo recordings, synthetic caller on the left and a human agent on the right."""
    import numpy as np

    root = tmp_path / "stereo"
    flac = root / "ASVspoof2019_LA_eval" / "flac"
    flac.mkdir(parents=True)
    left, rate = sf.read(sample_path("synthetic_call.wav"), dtype="float32")
    right, _ = sf.read(sample_path("human_call.wav"), dtype="float32")
    n = min(left.shape[0], right.shape[0])
    sf.write(flac / "STEREO_1.flac", np.stack([left[:n], right[:n]], axis=1), rate)
    write_protocol(root / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt",
                   [Trial("CALLER", "STEREO_1", "A04", "spoof")])
    means = {}
    for side in ("0", "1"):
        out = tmp_path / f"side{side}"
        assert main(["eval-alerts", "--database", str(root), "--model", "builtin:demo",
                     "--audio-channel", side, "--no-progress", "--out", str(out)]) == 0
        line = json.loads((out / "scores.jsonl").read_text())
        means[side] = sum(w["llr"] for w in line["windows"]) / len(line["windows"])
    assert means["0"] > 0 > means["1"]  # the synthetic side alone, then the human side alone
    capsys.readouterr()
    code = main(["eval-alerts", "--database", str(root), "--audio-channel", "left"])
    assert code == 2 and "--audio-channel" in capsys.readouterr().err
    code = main(["score", str(flac / "STEREO_1.flac"), "--channel", "left"])  # same parser
    assert code == 2 and "--channel" in capsys.readouterr().err


async def test_replayed_states_are_the_states_the_live_service_publishes(make_service, tmp_path):
    """The human demo call streamed to a service with one window per state: the state of
    every window event equals the replay of `score --json` on the same samples."""
    x, rate = sf.read(sample_path("human_call.wav"), dtype="int16")
    path = tmp_path / "human.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    svc = await make_service(model={"path": "builtin:demo"},
                             alerts={"min_windows_for_state": 1})
    streamed = await stream_file(svc.url, path, sample_rate=rate, encoding="pcm_s16le",
                                 realtime=False)
    got = CliRunner().invoke(cli, ["score", str(path), "--model", "builtin:demo", "--json"])
    assert got.exit_code == 0, got.output
    scored = json.loads(got.output.strip().splitlines()[-1])
    calls = calls_from_scores([scored], [Trial("spk", "human", "-", "bonafide")])
    outcome = replay(calls[0], svc.ctx.alerts)
    live = [e["state"] for e in streamed.of_type("window")]
    assert live == list(outcome.states) and len(live) >= 10
    assert live[-1] == "bona_fide" and "spoof" not in live
    # the default (two windows before a state) publishes no alert for this call
    assert replay(calls[0], AlertConfig()).first_alert_s is None
