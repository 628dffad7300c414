"""``nes2net-stream eval-alerts`` and ``data build-calls``: call-level alert evaluation."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from nes2net_stream.cli.common import (
    channel_option,
    config_option,
    device_option,
    model_option,
    open_detector,
    parse_audio_channel,
    parse_channel,
    settings_from,
)


@click.command("build-calls")
@click.argument("database", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", default="eval", show_default=True,
              type=click.Choice(["train", "dev", "eval"]))
@click.option("--call-s", type=click.FloatRange(1.0, 3600.0), default=20.0, show_default=True,
              help="Seconds of audio per call (consecutive utterances of one speaker and system).")
@click.option("--min-call-s", type=click.FloatRange(1.0, 3600.0), default=8.0,
              show_default=True, help="Shortest call kept from a group's remainder.")
@click.option("--gap-s", type=click.FloatRange(0.0, 10.0), default=0.5, show_default=True,
              help="Silence between joined utterances.")
def build_calls_cmd(database: Path, out_dir: Path, split: str, call_s: float,
                    min_call_s: float, gap_s: float) -> None:
    """Join a database split's utterances into call-length recordings (a new database)."""
    from nes2net_stream.data.calls import build_calls

    report = build_calls(database, out_dir, split=split, call_s=call_s, min_call_s=min_call_s,
                         gap_s=gap_s)
    click.echo(f"{report.calls} calls ({report.bonafide} bona fide, {report.spoof} spoof, "
               f"{report.seconds / 60:.1f} min) from {report.utterances_used} utterances "
               f"({report.utterances_left_out} left out) in {out_dir}")


@click.command("eval-alerts")
@click.option("--database", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Calls in the ASVspoof 2019 LA layout (e.g. from `data build-calls`, or "
                   "one's own recorded calls with a protocol file).")
@click.option("--split", default="eval", show_default=True,
              type=click.Choice(["train", "dev", "eval"]))
@click.option("--scores", "score_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="`score --json` lines of these calls (skips scoring; "
              "the running probability then uses a spoof prior of 0.5).")
@model_option
@config_option
@device_option
@channel_option("call")
@click.option("--audio-channel", default="mix", show_default=True,
              help="Which channel of the recordings to score: 'mix' averages them, a number "
                   "picks one (0-based), e.g. the caller's side of stereo call recordings.")
@click.option("--calibration", "calibration_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Map raw window scores through this calibration instead of the model's "
                   "(e.g. one fitted for an ingress's channel; works with --scores too).")
@click.option("--vary", multiple=True, metavar="KEY=V1,V2",
              help="Replay under every combination of these [alerts] values (repeatable; "
                   "keys: suspicious_threshold, spoof_threshold, hysteresis, "
                   "min_windows_for_spoof, min_windows_for_state, aggregation, ema_alpha).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for scores.jsonl (when scoring), alerts.json and alerts.png (the "
                   "settings' operating points).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def eval_alerts_cmd(database: Path, split: str, score_file: Path | None,
                    model_path: str | None, config_file: Path | None, device: str | None,
                    channel: str | None, audio_channel: str, calibration_file: Path | None,
                    vary: tuple[str, ...], out_dir: Path | None, as_json: bool,
                    progress: bool) -> None:
    """What the service's state events would say on whole calls, under the [alerts] settings.

    Genuine calls that ever raised an alert, synthetic calls that reached spoof, and seconds
    into the call to the first alert; windows are cut and scored exactly as in a live call.
    """
    from nes2net_stream.data.protocols import database_split, read_protocol
    from nes2net_stream.evaluation.alert_replay import (
        calls_from_scores,
        expand_grid,
        parse_vary,
        read_score_lines,
        recalibrate,
        replay,
        summarise,
    )
    from nes2net_stream.models.detector import Calibration

    settings = settings_from(config_file, model__path=model_path, model__device=device)
    grid = parse_vary(vary)
    expand_grid(settings.alerts.to_config(settings.scoring, None), grid)  # fail before scoring
    if channel and score_file is not None:
        raise click.UsageError("--channel applies when scoring: it cannot change --scores")
    transmit = parse_channel(channel) if channel else None
    track = parse_audio_channel(audio_channel, "--audio-channel")
    cal = Calibration.read(calibration_file) if calibration_file is not None else None
    protocol, audio_dir = database_split(database, split)
    trials = read_protocol(protocol)
    if score_file is not None:
        lines = read_score_lines(score_file)
        prior: float | None = None
    else:
        detector = open_detector(settings)
        prior = detector.calibration.spoof_prior
        lines = _score_calls(detector, trials, audio_dir, settings, progress, transmit,
                             track)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "scores.jsonl").write_text(
                "".join(json.dumps(d) + "\n" for d in lines), encoding="utf-8")
    if cal is not None:
        lines = recalibrate(lines, cal)
        prior = cal.spoof_prior
    calls = calls_from_scores(lines, trials)
    base = settings.alerts.to_config(settings.scoring, prior)
    results = []
    for varied, cfg in expand_grid(base, grid):
        outcomes = [replay(c, cfg) for c in calls]
        results.append({"settings": varied, "figures": summarise(outcomes),
                        "calls": [o.to_dict() for o in outcomes]})
    report = {"database": database.name, "split": split, "channel": channel,
              "calibration": str(calibration_file) if calibration_file else None,
              "alerts": dataclasses.asdict(base), "results": results}
    if out_dir is not None:
        from nes2net_stream.evaluation.plots import plot_alert_settings

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "alerts.json").write_text(json.dumps(report, indent=2) + "\n",
                                             encoding="utf-8")
        points = [(_name(r["settings"]), r["figures"]["false_alert"]["rate"],
                   r["figures"]["detected_spoof"]["rate"]) for r in results]
        if all(x is not None and y is not None for _, x, y in points):
            plot_alert_settings(points, out_dir / "alerts.png")
    if as_json:
        click.echo(json.dumps([{**r["settings"], **r["figures"]} for r in results]))
    else:
        click.echo(_table(results))


def _score_calls(detector: Any, trials: list[Any], audio_dir: Path, settings: Any,
                 progress: bool, transmit: Any, audio_channel: str | int) -> list[dict[str, Any]]:
    from tqdm import tqdm

    from nes2net_stream.data.protocols import audio_path
    from nes2net_stream.scoring.files import score_file

    lines = []
    for t in tqdm(trials, desc="scoring calls", unit="call", disable=not progress,
                  file=sys.stderr):
        result = score_file(detector, audio_path(audio_dir, t.utterance), mode="windows",
                            vad=settings.vad.to_config(), windows=settings.windows.to_config(),
                            aggregation=settings.scoring.aggregation,
                            batch_size=settings.scoring.batch_size, transmit=transmit,
                            channel=audio_channel)
        lines.append(result.to_dict())
    return lines


def _name(settings: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items()) or "config"


def _pct(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "-"
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}]"


def _secs(t: dict[str, Any]) -> str:
    return "-" if t["median"] is None else f"{t['median']:.1f}/{t['p90']:.1f}"


def _table(results: list[dict[str, Any]]) -> str:
    head = ["setting", "genuine: any alert", "of which transient", "genuine: spoof",
            "synthetic: spoof", "synthetic: final spoof", "s to alert (med/p90)",
            "s to spoof (med/p90)"]
    rows = [head]
    for r in results:
        f = r["figures"]
        rows.append([_name(r["settings"]), _pct(f["false_alert"]), _pct(f["transient_false_alert"]),
                     _pct(f["false_spoof"]), _pct(f["detected_spoof"]), _pct(f["final_spoof"]),
                     _secs(f["time_to_alert_s"]), _secs(f["time_to_spoof_s"])])
    first = results[0]["figures"] if results else {}
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    eer = first.get("call_eer")
    lines.append(f"({first.get('bonafide_calls', 0)} genuine and "
                 f"{first.get('spoof_calls', 0)} synthetic calls; 95 % intervals resampling "
                 "speakers (Wilson where a class has one)"
                 + ("" if eer is None else f"; EER of the calls' final running scores "
                    f"{100 * eer:.1f} %") + ")")
    return "\n".join(lines)
