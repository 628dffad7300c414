"""``nes2net-stream score``: score audio files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nes2net_stream.cli.common import (
    config_option,
    device_option,
    model_option,
    open_detector,
    parse_audio_channel,
    settings_from,
)
from nes2net_stream.errors import AudioError

if TYPE_CHECKING:
    from nes2net_stream.scoring.files import FileScore


def _line(path: Path, result: FileScore) -> str:
    """One file's (or channel's) score as a line of text."""
    name = str(path) if result.channel is None else f"{path}[{result.channel}]"
    if result.llr is None:
        return f"{name}\tno score ({result.note})"
    return (f"{name}\tspoof_probability={result.spoof_probability:.4f}\t"
            f"llr={result.llr:+.3f}\twindows={len(result.windows)}\t"
            f"speech={result.speech_s:.1f}s")


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_option
@config_option
@device_option
@click.option("--window-s", type=float, default=None, help="Window length in seconds [4].")
@click.option("--hop-s", type=float, default=None, help="Hop between windows in seconds [1].")
@click.option("--mode", type=click.Choice(["windows", "4s", "full"]), default="windows",
              show_default=True,
              help="windows: speech-only sliding windows as in live calls; 4s / full: the "
                   "official scripts' fixed 4-second crop or whole-file input.")
@click.option("--no-vad", is_flag=True, help="Treat all audio as speech.")
@click.option("--channel", default="mix", show_default=True,
              help="'mix' averages channels; a number picks one channel (0-based); 'each' "
                   "scores every channel on its own (a stereo recording of both parties).")
@click.option("--batch-size", type=int, default=None, help="Windows per forward pass [16].")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per file and line (with per-window scores).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when scoring several files on a terminal).")
def score(files: tuple[Path, ...], model_path: str | None, config_file: Path | None,
          device: str | None, window_s: float | None, hop_s: float | None, mode: str,
          no_vad: bool, channel: str, batch_size: int | None, as_json: bool,
          progress: bool | None) -> None:
    """Score audio FILES (any common format and sample rate) for synthetic speech.

    Each file gets a spoof_probability in [0, 1] (higher = more likely synthetic) and a
    log-likelihood ratio (llr > 0 favours spoof), plus the same for every window.
    """
    from tqdm import tqdm

    from nes2net_stream.audio.io import channel_count
    from nes2net_stream.scoring.files import score_file

    settings = settings_from(
        config_file, model__path=model_path, model__device=device, windows__window_s=window_s,
        windows__hop_s=hop_s, vad__enabled=False if no_vad else None,
        scoring__batch_size=batch_size)
    ch = parse_audio_channel(channel, "--channel", each=True)
    detector = open_detector(settings)
    show = progress if progress is not None else (len(files) > 1 and sys.stderr.isatty())
    failures = 0
    for path in tqdm(files, desc="scoring", unit="file", disable=not show, file=sys.stderr):
        try:
            results = []
            for one in range(channel_count(path)) if ch == "each" else [ch]:
                result = score_file(detector, path, mode=mode, vad=settings.vad.to_config(),
                                    windows=settings.windows.to_config(), channel=one,
                                    aggregation=settings.scoring.aggregation,
                                    batch_size=settings.scoring.batch_size,
                                    allow_silence=ch == "each")
                if ch == "each":
                    result.channel = int(one)
                results.append(result)
        except AudioError as exc:
            failures += 1
            if as_json:
                click.echo(json.dumps({"file": str(path), "error": str(exc)}))
            else:
                click.echo(f"error: {exc}", err=True)
            continue
        for result in results:
            click.echo(json.dumps(result.to_dict()) if as_json else _line(path, result))
    if failures:
        raise SystemExit(1 if failures < len(files) else 2)
