"""``nes2net-stream eval``: ASVspoof metrics, plots and calibration."""

from __future__ import annotations

import json
from pathlib import Path

import click

from nes2net_stream.cli.common import (
    bootstrap_unit_option,
    channel_option,
    confidence_option,
    config_option,
    device_option,
    model_option,
    open_detector,
    parse_channel,
    settings_from,
)


@click.command("eval")
@click.option("--scores", "score_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Evaluate an existing score file (official layouts, "
              "higher = bona fide) instead of scoring with a model.")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Protocol/key file for --scores.")
@click.option("--database", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="ASVspoof 2019 LA layout database (or a demo corpus) to score with --model.")
@click.option("--split", default="eval", show_default=True,
              type=click.Choice(["train", "dev", "eval"]), help="Split of --database to score.")
@click.option("--calibrate-on", type=click.Choice(["none", "dev", "train"]), default="none",
              show_default=True, help="Fit the score calibration on this split first.")
@click.option("--save-calibration", is_flag=True,
              help="Store the fitted calibration in the model bundle (directory bundles).")
@click.option("--calibration-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the fitted calibration to this file, e.g. for one ingress's channel "
                   "([scoring] calibrations).")
@click.option("--mode", type=click.Choice(["4s", "windows"]), default="4s", show_default=True,
              help="4s: official 4-second crop per trial; windows: mean over speech windows.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for scores.txt, metrics.json, det.png and hist.png.")
@click.option("--layout", type=click.Choice(["2021", "asvspoof5"]), default="2021",
              show_default=True, help="Score file layout written to --out.")
@channel_option("trial")
@click.option("--packet-loss", type=click.FloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="Lose this share of 20 ms packets of every trial (after --channel), the "
                   "same packets in every run.")
@click.option("--loss-fill", type=click.Choice(["conceal", "silence"]), default="conceal",
              show_default=True, help="What replaces a lost packet: conceal (repeat the last "
              "one, fading, as the RTP gateways do) or silence.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000,
              show_default=True, help="Bootstrap resamples for confidence intervals (0: none).")
@bootstrap_unit_option
@confidence_option
@click.option("--compare", "compare_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Second score file on the same key (system B): paired "
              "bootstrap of B against the evaluated scores (A).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@model_option
@config_option
@device_option
def eval_cmd(score_file: Path | None, key_file: Path | None, database: Path | None, split: str,
             calibrate_on: str, save_calibration: bool, calibration_out: Path | None,
             mode: str, out_dir: Path | None,
             layout: str, channel: str | None, packet_loss: float, loss_fill: str,
             n_boot: int, bootstrap_unit: str,
             confidence: float, compare_file: Path | None, batch_size: int,
             model_path: str | None, config_file: Path | None, device: str | None) -> None:
    """Compute EER, minDCF, actDCF (ASVspoof 5 costs), Cllr and their confidence intervals."""
    from nes2net_stream.evaluation.report import format_report
    from nes2net_stream.evaluation.scorefiles import write_scores

    if score_file is not None:
        if key_file is None:
            raise click.UsageError("--scores needs --key")
        report = _evaluate(score_file, key_file, out_dir, n_boot, bootstrap_unit, confidence,
                           compare_file)
        if channel:  # the channel these scores were made through: a label in the report
            parse_channel(channel)
        report.update(_channel_labels(channel, packet_loss, loss_fill))
        _finish(report, out_dir)
        click.echo(format_report(report))
        return
    if database is None:
        raise click.UsageError("give --database (with --model) or --scores with --key")

    from nes2net_stream.bundle import CALIBRATION, resolve_model_path
    from nes2net_stream.data.protocols import database_split, read_protocol
    from nes2net_stream.evaluation.protocol_scoring import cm_scores, fit_calibration, score_trials

    transmit = parse_channel(channel) if channel else None
    label = channel or ""
    if packet_loss:
        from nes2net_stream.evaluation.protocol_scoring import loss_channel

        fill = "silence" if loss_fill == "silence" else "conceal"
        transmit = loss_channel(packet_loss, fill=fill, then=transmit)
        label = f"{label} + {packet_loss:.0%} packet loss ({loss_fill})".lstrip(" +")
    settings = settings_from(config_file, model__path=model_path, model__device=device)
    detector = open_detector(settings)
    kwargs = {"mode": mode, "vad": settings.vad.to_config(),
              "windows": settings.windows.to_config(), "batch_size": batch_size,
              "channel": transmit}
    if calibrate_on != "none":
        protocol, audio = database_split(database, calibrate_on)
        trials = read_protocol(protocol)
        raw = score_trials(detector, trials, audio, **kwargs)
        source = f"{database.name}/{calibrate_on} ({mode})"
        detector.calibration = fit_calibration(
            raw, trials, source=source + (f" through {label}" if label else ""))
        cal = detector.calibration
        click.echo(f"calibration fitted on {calibrate_on}: llr = {cal.scale:.4f} * raw "
                   f"{cal.offset:+.4f}", err=True)
        if save_calibration:
            bundle = resolve_model_path(settings.model.path)
            if not bundle.is_dir():
                raise click.UsageError("--save-calibration needs a directory bundle")
            cal.write(bundle / CALIBRATION)
            click.echo(f"calibration saved in {bundle / CALIBRATION}", err=True)
        if calibration_out is not None:
            cal.write(calibration_out)
            click.echo(f"calibration written to {calibration_out}", err=True)
    elif calibration_out is not None:
        raise click.UsageError("--calibration-out needs --calibrate-on dev or train")
    protocol, audio = database_split(database, split)
    trials = read_protocol(protocol)
    raw = score_trials(detector, trials, audio, **kwargs)
    out = out_dir or Path(".")
    out.mkdir(parents=True, exist_ok=True)
    scores_path = write_scores(out / "scores.txt", cm_scores(raw, detector.calibration), layout)
    report = _evaluate(scores_path, protocol, out_dir, n_boot, bootstrap_unit, confidence,
                       compare_file)
    report["model_id"] = detector.model_id
    report["calibrated"] = detector.calibration.fitted
    report["mode"] = mode
    report.update(_channel_labels(channel, packet_loss, loss_fill))
    _finish(report, out_dir)
    click.echo(format_report(report))


def _channel_labels(channel: str | None, packet_loss: float, fill: str) -> dict:
    """Report entries naming the channel and packet loss the trials were scored through."""
    labels: dict = {"channel": channel} if channel else {}
    if packet_loss:
        labels["packet_loss"] = {"rate": packet_loss, "packet_ms": 20, "fill": fill}
    return labels


def _evaluate(scores: Path, key: Path, out_dir: Path | None, n_boot: int, unit: str,
              level: float, compare: Path | None) -> dict:
    """Metrics and plots; intervals too, unless the scores are too few to resample."""
    from nes2net_stream.evaluation.report import evaluate_score_file

    if compare is not None and not n_boot:
        raise click.UsageError("--compare needs --bootstrap > 0")
    report = evaluate_score_file(scores, key, plots_dir=out_dir, bootstrap=n_boot,
                                 bootstrap_unit=unit, level=level, compare_path=compare,
                                 require_intervals=False)
    if "bootstrap_skipped" in report:
        click.echo(f"warning: no confidence intervals: {report['bootstrap_skipped']}", err=True)
    return report


def _finish(report: dict, out_dir: Path | None) -> None:
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n",
                                              encoding="utf-8")
